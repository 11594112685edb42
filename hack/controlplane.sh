#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Start / stop the lab control plane (etcd + kube-apiserver inside
# <prefix>-cp). Needs a lab (hack/lab.sh up) and a built kube-apiserver
# (hack/build-kube-apiserver.sh). Thin wrapper around hack/lab/cmd/lab.
set -euo pipefail

usage() {
	cat <<USAGE
Usage: $(basename "$0") up|down|status|restart-apiserver|stop-apiserver|start-apiserver [--prefix P] [--state-dir D] [-- extra kube-apiserver flags]

  up                 start etcd (127.0.0.1:2379 in <prefix>-cp) and kube-apiserver
                     (https://192.0.2.10:6443), wait for /readyz, write the admin
                     kubeconfig to <state-dir>/cp/admin.kubeconfig
  down               stop both, delete etcd data (idempotent)
  status             pids and /readyz
  restart-apiserver  kill and restart only kube-apiserver (etcd keeps the data)
  stop-apiserver / start-apiserver

Use the kubeconfig from inside a lab namespace, e.g.
  ip netns exec svp-client kubectl --kubeconfig /tmp/svcproxy-lab-svp/cp/admin.kubeconfig get svc
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
up | down | status | restart-apiserver | stop-apiserver | start-apiserver) ;;
*) echo "unknown command: $cmd" >&2; usage >&2; exit 2 ;;
esac

# shellcheck source=lab-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lab-common.sh"
lab_require_root
bin="$(lab_bin)"

if [[ "$cmd" == "up" ]]; then
	api="${KUBE_APISERVER:-${SVCPROXY_CACHE:-$HOME/.cache/svcproxy}/kube-apiserver-v1.36.3/kube-apiserver}"
	if [[ ! -x "$api" ]]; then
		echo "kube-apiserver not built at $api; run hack/build-kube-apiserver.sh" >&2
		exit 1
	fi
fi
exec "$bin" controlplane "$cmd" "$@"
