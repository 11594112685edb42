# shellcheck shell=bash
# Shared helper for hack/lab.sh and hack/controlplane.sh: builds (cached by the
# go build cache) and locates the hack/lab/cmd/lab binary.
# Sourced, not executed.

lab_repo_root() {
	cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd
}

# lab_bin builds hack/lab/cmd/lab into the cache dir and prints its path.
lab_bin() {
	local root cache bin
	root="$(lab_repo_root)"
	cache="${SVCPROXY_CACHE:-$HOME/.cache/svcproxy}"
	bin="${cache}/bin/lab"
	mkdir -p "${cache}/bin"
	if [[ -n "${SVCPROXY_LAB_BIN:-}" ]]; then
		echo "$SVCPROXY_LAB_BIN"
		return
	fi
	command -v go >/dev/null || { echo "go not found in PATH" >&2; return 1; }
	(cd "$root" && CGO_ENABLED=0 go build -o "${bin}.tmp.$$" ./hack/lab/cmd/lab) >&2
	mv "${bin}.tmp.$$" "$bin"
	echo "$bin"
}

lab_require_root() {
	if [[ "$(id -u)" -ne 0 ]]; then
		echo "must run as root (network namespaces)" >&2
		exit 1
	fi
}
