#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Create / destroy / inspect the svcproxy network lab (namespaces, bridges,
# pods). Thin wrapper around hack/lab/cmd/lab (the Go package hack/lab is the
# single source of truth for the topology).
set -euo pipefail

usage() {
	cat <<USAGE
Usage: $(basename "$0") up|down|status [--nodes N] [--pods M] [--prefix P] [--state-dir D]
       $(basename "$0") probe --ns NS [--proto tcp|udp] --addr IP --port N [--timeout 2s]
       $(basename "$0") echo --ns NS --name NAME --port N [--prefix P]

  up      create the lab (tears down an existing lab with the same prefix first)
  down    stop its control plane, kill processes in its namespaces, delete them (idempotent);
          down --stale STEM removes the test labs STEM<pid> whose test process is gone
  status  show the topology, missing namespaces, control plane state

Defaults: --prefix svp --nodes 2 --pods 2, state dir /tmp/svcproxy-lab-<prefix>.
Address plan: node net 192.0.2.0/24 (sink .1, cp .10, node<i> .1<i>, client .100),
pods 198.51.100.(64*(i-1))/26 per node, services 203.0.113.0/25; dual-stack unless
--ipv4-only: 2001:db8::/64 (::1, ::10, ::1<i>, ::100), pods 2001:db8:1:<i>::/64,
services 2001:db8:5::/108.
USAGE
}

if [[ $# -lt 1 ]]; then
	usage >&2
	exit 2
fi
cmd="$1"
shift
case "$cmd" in
-h | --help | help) usage; exit 0 ;;
up | down | status | probe | echo) ;;
*) echo "unknown command: $cmd" >&2; usage >&2; exit 2 ;;
esac

# shellcheck source=lab-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lab-common.sh"
lab_require_root
bin="$(lab_bin)"

if [[ "$cmd" == "up" ]]; then
	# If interrupted while building, remove what was created.
	prefix="svp"
	args=("$@")
	for ((i = 0; i < ${#args[@]}; i++)); do
		if [[ "${args[$i]}" == "--prefix" && $((i + 1)) -lt ${#args[@]} ]]; then
			prefix="${args[$((i + 1))]}"
		elif [[ "${args[$i]}" == --prefix=* ]]; then
			prefix="${args[$i]#--prefix=}"
		fi
	done
	trap '"$bin" down --prefix "$prefix" >&2 || true; exit 130' INT TERM
	"$bin" up "$@"
	trap - INT TERM
	exit 0
fi
exec "$bin" "$cmd" "$@"
