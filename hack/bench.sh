#!/usr/bin/env bash
# `make bench`: svcproxy (compact layout, and --rule-layout=kube-proxy) side
# by side with the real kube-proxy v1.36.3 (iptables and nftables modes) in
# one lab (prefix svpbn): four nodes, one daemon each, same flags, same
# kube-apiserver. Creates N single-stack IPv6 Services × M endpoints,
# measures cold start, one-endpoint change latency, per-connection cost to
# the first and last Service in dispatch order, RSS and CPU, prints a table
# and writes it to _output/bench.txt. Root only; the lab is torn down on
# exit (also on failure / Ctrl-C).
#
# Environment: N (Services, default 1000), M (endpoints each, default 10),
# K (one-endpoint changes, default 20), CONNS (connections per target,
# default 2000), MIN_SYNC (--iptables-min-sync-period, default 1s), CAP
# (bound on one daemon's cold start, default 8m), TIMEOUT (whole run,
# default 40m), PREFIX (default svpbn), SVCPROXY_BIN, KUBE_PROXY (binaries
# to use).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$(pwd)"
# shellcheck source=lab-common.sh
source "$root/hack/lab-common.sh"
lab_require_root
command -v nft >/dev/null || [[ -x /usr/sbin/nft ]] || { echo "bench: nft not found (kube-proxy's nftables mode needs it; hack/install-deps.sh installs nftables)" >&2; exit 1; }
export PATH="$PATH:/usr/local/go/bin:/usr/sbin:/sbin"

PREFIX="${PREFIX:-svpbn}"
mkdir -p _output bin

svcproxy="${SVCPROXY_BIN:-$root/bin/svcproxy}"
if [[ -z "${SVCPROXY_BIN:-}" ]]; then
	go build -o "$svcproxy" ./cmd/svcproxy
fi
kp="${KUBE_PROXY:-$(bash hack/build-kube-proxy.sh | tail -n1)}"
[[ -x "$kp" ]] || { echo "bench: kube-proxy not built ($kp)" >&2; exit 1; }
bench_bin="$(mktemp -d)/bench"
go build -o "$bench_bin" ./hack/bench

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	# The bench tears its lab down itself; this is the safety net.
	"$(lab_bin)" down --prefix "$PREFIX" >/dev/null 2>&1 || true
	ip netns del "$PREFIX-scratch" >/dev/null 2>&1 || true
	rm -rf "$(dirname "$bench_bin")"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$bench_bin" -prefix "$PREFIX" -svcproxy "$svcproxy" -kube-proxy "$kp" \
	-n "${N:-1000}" -m "${M:-10}" -k "${K:-20}" -conns "${CONNS:-2000}" \
	-min-sync "${MIN_SYNC:-1s}" -cap "${CAP:-8m}" -out _output/bench.txt -timeout "${TIMEOUT:-40m}"
echo "table written to _output/bench.txt"
