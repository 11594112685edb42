#!/usr/bin/env bash
# Install the lab's system dependencies (Debian/Ubuntu) if missing:
# iproute2 (ip, bridge), etcd (etcd-server), iptables, ipset, conntrack,
# openssl, procps (sysctl), kmod, nftables (nft: kube-proxy's nftables mode in
# the benchmark). Does nothing for tools already present.
set -euo pipefail

usage() {
	cat <<USAGE
Usage: $(basename "$0") [--check]

  --check   only report what is missing (exit 1 if anything is)
USAGE
}

check_only=0
case "${1:-}" in
"") ;;
--check) check_only=1 ;;
-h | --help) usage; exit 0 ;;
*) usage >&2; exit 2 ;;
esac

# tool:package pairs
pairs=(
	ip:iproute2
	bridge:iproute2
	etcd:etcd-server
	iptables:iptables
	ipset:ipset
	conntrack:conntrack
	openssl:openssl
	sysctl:procps
	nft:nftables
)
missing=()
for p in "${pairs[@]}"; do
	tool="${p%%:*}"
	pkg="${p#*:}"
	if ! command -v "$tool" >/dev/null 2>&1 && ! [[ -x "/usr/sbin/$tool" || -x "/sbin/$tool" ]]; then
		# de-duplicate
		if [[ " ${missing[*]} " != *" $pkg "* ]]; then
			missing+=("$pkg")
		fi
	fi
done
if ! command -v go >/dev/null 2>&1; then
	echo "warning: go not found in PATH (needed to build the lab tools and kube-apiserver)" >&2
fi

if [[ ${#missing[@]} -eq 0 ]]; then
	echo "all lab dependencies present"
	exit 0
fi
echo "missing packages: ${missing[*]}"
if [[ "$check_only" -eq 1 ]]; then
	exit 1
fi
if [[ "$(id -u)" -ne 0 ]]; then
	echo "run as root to install" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends "${missing[@]}"
# Debian's etcd-server package may start a system etcd; the lab runs its own
# inside a namespace, so stop it if it was just enabled.
if [[ " ${missing[*]} " == *" etcd-server "* ]] && command -v systemctl >/dev/null 2>&1; then
	systemctl disable --now etcd >/dev/null 2>&1 || true
fi
echo "installed: ${missing[*]}"
