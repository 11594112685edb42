#!/usr/bin/env bash
# Builds the svcproxy image without any container registry: a minimal Debian
# bookworm root filesystem made by debootstrap from Debian's packages (cached),
# the static svcproxy binary, and the Dockerfile's layout, entrypoint and
# labels. Writes an OCI archive under _output/, loads it into the local
# containers storage (podman/buildah) and prints its size and the versions of
# the tools inside.
#
# `kube-proxy` builds the lab's stand-in for registry.k8s.io/kube-proxy the
# same way, around the pinned upstream kube-proxy (hack/build-kube-proxy.sh):
# the migration test (hack/migration) runs both images.
set -euo pipefail

usage() {
	cat <<USAGE
Usage: $(basename "$0") [svcproxy|kube-proxy] [--tag REF] [--check]

  svcproxy     (default) the svcproxy image, tagged as manifests/daemonset.yaml
               names it ($SVCPROXY_REF); archive _output/svcproxy-image.oci.tar
  kube-proxy   the lab's kube-proxy image: the pinned upstream kube-proxy
               ($KUBE_VERSION) on the same root filesystem, with an
               iptables-wrapper as upstream's image has; tagged $KUBE_PROXY_REF
  --tag REF    tag the image REF instead
  --check      only check that podman can run containers here (exit 1 and
               say why if not); builds nothing

Installs buildah, podman, runc and debootstrap with apt-get if missing. The
root filesystem is cached in \${SVCPROXY_CACHE:-\$HOME/.cache/svcproxy}/image.
Environment: SVCPROXY_CACHE, DEBIAN_MIRROR (default $DEFAULT_MIRROR).
USAGE
}

readonly DEFAULT_MIRROR=http://deb.debian.org/debian
readonly SUITE=bookworm
readonly KUBE_VERSION=v1.36.3
readonly SVCPROXY_REF=ghcr.io/svcproxy/svcproxy:v0.1.0
readonly KUBE_PROXY_REF=localhost/svcproxy-lab/kube-proxy:${KUBE_VERSION}
# What the Dockerfile installs on debian:bookworm-slim. iptables brings both
# backends (iptables-nft*, iptables-legacy*) and both families.
readonly PACKAGES=iptables,ipset,conntrack,kmod,ca-certificates
# Bump when the trimming below changes, so cached root filesystems are rebuilt.
readonly ROOTFS_RECIPE=1
# podman flags this kind of machine needs: crun refuses its hybrid cgroups,
# and podman's default rlimits are refused.
readonly PODMAN_GLOBAL=(--runtime runc --cgroup-manager cgroupfs)
readonly PODMAN_RUN=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)

log() { echo ">> $*" >&2; }
die() { echo "image.sh: $*" >&2; exit 1; }

# ensure_tools installs what is missing of buildah, podman, runc, debootstrap
# (idempotent, as hack/install-deps.sh).
ensure_tools() {
	local missing=() t
	for t in buildah podman runc debootstrap; do
		command -v "$t" >/dev/null 2>&1 || [[ -x /usr/sbin/$t ]] || missing+=("$t")
	done
	[[ ${#missing[@]} -eq 0 ]] && return
	[[ "$(id -u)" -eq 0 ]] || die "missing ${missing[*]}; run as root to install them"
	log "apt-get install ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update >&2
	apt-get install -y --no-install-recommends "${missing[@]}" >&2
}

podman_() { podman "${PODMAN_GLOBAL[@]}" "$@"; }

# podman_check runs a throwaway container from the image given (or, with no
# image, only asks podman for its host facts) and says why it cannot.
podman_check() {
	local out
	if ! out=$(podman_ info --format '{{.Host.OCIRuntime.Name}} {{.Store.GraphDriverName}}' 2>&1); then
		echo "podman does not work here: podman info: $out" >&2
		return 1
	fi
	if [[ $# -eq 0 ]]; then
		echo "podman works here (runtime, storage driver: $out)"
		return 0
	fi
	if ! out=$(podman_ run --rm "${PODMAN_RUN[@]}" --network none --entrypoint /bin/true "$1" 2>&1); then
		echo "podman cannot run containers here: podman run $1: $out" >&2
		return 1
	fi
}

# rootfs_tar prints the path of the cached root filesystem tarball, building
# it with debootstrap first if needed.
rootfs_tar() {
	local arch key dir tar tmp
	arch=$(dpkg --print-architecture)
	key=$(printf '%s %s %s %s' "$SUITE" "$arch" "$PACKAGES" "$ROOTFS_RECIPE" | sha256sum | cut -c1-12)
	dir="${SVCPROXY_CACHE:-$HOME/.cache/svcproxy}/image"
	tar="$dir/rootfs-$SUITE-$arch-$key.tar"
	if [[ -s "$tar" ]]; then
		log "cached root filesystem $tar"
		echo "$tar"
		return
	fi
	mkdir -p "$dir/debs"
	tmp=$(mktemp -d "$dir/rootfs.XXXXXX")
	# rootfs_tar runs in a subshell ($(...)): EXIT also covers die.
	# shellcheck disable=SC2064 # expand now: tmp is local
	trap "rm -rf '$tmp'" EXIT
	# debootstrap checks the Release file's signature against the host's
	# debian-archive-keyring, so a plain-HTTP mirror is fine.
	log "debootstrap --variant=minbase $SUITE ($PACKAGES) from ${DEBIAN_MIRROR:-$DEFAULT_MIRROR}"
	local start=$SECONDS
	debootstrap --variant=minbase --arch="$arch" --include="$PACKAGES" \
		--cache-dir="$dir/debs" "$SUITE" "$tmp/root" "${DEBIAN_MIRROR:-$DEFAULT_MIRROR}" >"$tmp/debootstrap.log" 2>&1 ||
		{ tail -20 "$tmp/debootstrap.log" >&2; die "debootstrap failed (log above)"; }
	trim_rootfs "$tmp/root"
	# /dev, /proc, /sys stay empty: the container runtime fills them.
	tar --numeric-owner --xattrs -C "$tmp/root" -cf "$tmp/rootfs.tar" \
		--exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' .
	mv "$tmp/rootfs.tar" "$tar"
	log "root filesystem built in $((SECONDS - start))s: $tar"
	echo "$tar"
}

# trim_rootfs drops what a container never needs, as debian:*-slim does
# (documentation but its copyright files, manuals, translations, apt lists
# and caches, logs).
trim_rootfs() {
	local root=$1
	find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
	find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
	rm -rf "$root"/usr/share/{man,info,groff,lintian,linda}/* "$root"/usr/share/locale/*
	rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old
	rm -rf "$root"/var/log/* "$root"/tmp/* "$root"/root/.bash_history
	# The container's resolver and hostname come from the runtime.
	: >"$root/etc/hostname"
	rm -f "$root/etc/resolv.conf"
}

# build_binary builds the static svcproxy binary the Dockerfile builds.
build_binary() {
	local out=$1
	command -v go >/dev/null || die "go not found in PATH"
	local version=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo v0.0.0-dev)}
	log "go build ./cmd/svcproxy (static, version $version)"
	CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X github.com/svcproxy/svcproxy/cmd/svcproxy/app.version=$version" -o "$out" ./cmd/svcproxy
}

# check_backends fails unless both backends of both families are in root:
# svcproxy runs the suffixed binaries only.
check_backends() {
	local root=$1 b be s
	for b in iptables ip6tables; do
		for be in nft legacy; do
			for s in "" -save -restore; do
				[[ -x "$root/usr/sbin/$b-$be$s" ]] || die "image lacks /usr/sbin/$b-$be$s"
			done
		done
	done
}

# install_wrapper puts an iptables-wrapper into the kube-proxy image, as
# upstream's image has: the plain iptables* names first run a detection of
# the node's backend (kubelet's hint chains in mangle, else more rules wins),
# point the alternatives at it and exec the real tool.
install_wrapper() {
	local root=$1 b s
	cat >"$root/usr/sbin/iptables-wrapper" <<'WRAPPER'
#!/bin/sh
# Lab stand-in for kube-proxy's image iptables-wrapper (hack/image.sh).
set -eu
hint() { "$1" -t mangle -S "$2" 1 >/dev/null 2>&1; }
mode=""
for m in legacy nft; do
	for c in KUBE-IPTABLES-HINT KUBE-KUBELET-CANARY; do
		if [ -z "$mode" ] && { hint "iptables-$m" "$c" || hint "ip6tables-$m" "$c"; }; then mode=$m; fi
	done
done
if [ -z "$mode" ]; then
	count() { ( "iptables-$1-save" || true; "ip6tables-$1-save" || true ) 2>/dev/null | grep -c '^-' || true; }
	if [ "$(count legacy)" -gt "$(count nft)" ]; then mode=legacy; else mode=nft; fi
fi
for t in iptables ip6tables; do
	update-alternatives --set "$t" "/usr/sbin/$t-$mode" >/dev/null 2>&1
done
exec "$0" "$@"
WRAPPER
	chmod 0755 "$root/usr/sbin/iptables-wrapper"
	for b in iptables ip6tables; do
		for s in "" -save -restore; do
			ln -sf iptables-wrapper "$root/usr/sbin/$b$s"
		done
	done
}

# versions prints the versions of the tools in root.
versions() {
	local root=$1 t
	for t in iptables-nft iptables-legacy ip6tables-nft ip6tables-legacy; do
		printf '  %-18s %s\n' "$t" "$(chroot "$root" "$t" --version)"
	done
	printf '  %-18s %s\n' ipset "$(chroot "$root" ipset --version | head -1)"
	printf '  %-18s %s\n' conntrack "$(chroot "$root" conntrack --version 2>&1 | head -1)"
	printf '  %-18s %s\n' kmod "$(chroot "$root" kmod --version | head -1)"
	printf '  %-18s %s\n' debian "$(cat "$root/etc/debian_version")"
}

human() { numfmt --to=iec-i --suffix=B --format='%.1f' "$1"; }

main() {
	local what=svcproxy ref="" check=0
	while [[ $# -gt 0 ]]; do
		case "$1" in
		svcproxy | kube-proxy) what=$1 ;;
		--tag) [[ $# -ge 2 ]] || die "--tag needs a value"; ref=$2; shift ;;
		--check) check=1 ;;
		-h | --help) usage; exit 0 ;;
		*) usage >&2; exit 2 ;;
		esac
		shift
	done
	cd "$(dirname "${BASH_SOURCE[0]}")/.."
	[[ "$(id -u)" -eq 0 ]] || die "must run as root (buildah mounts, debootstrap)"
	ensure_tools
	if [[ $check -eq 1 ]]; then
		podman_check
		exit
	fi
	build "$what" "${ref:-$([[ $what == svcproxy ]] && echo "$SVCPROXY_REF" || echo "$KUBE_PROXY_REF")}"
}

# build assembles, commits, archives and loads the image.
build() {
	local what=$1 ref=$2 start=$SECONDS tar bin ctr mnt archive
	mkdir -p _output
	tar=$(rootfs_tar)
	if [[ $what == svcproxy ]]; then
		bin=_output/image-svcproxy
		build_binary "$bin"
	else
		bin=$(bash hack/build-kube-proxy.sh)
	fi
	ctr=$(buildah from scratch)
	# shellcheck disable=SC2064 # expand now
	trap "buildah rm '$ctr' >/dev/null 2>&1 || true" EXIT
	mnt=$(buildah mount "$ctr")
	tar --numeric-owner --xattrs -xpf "$tar" -C "$mnt"
	check_backends "$mnt"
	if [[ $what == svcproxy ]]; then
		install -m 0755 "$bin" "$mnt/usr/local/bin/svcproxy"
		ln -s svcproxy "$mnt/usr/local/bin/kube-proxy"
	else
		install -m 0755 "$bin" "$mnt/usr/local/bin/kube-proxy"
		install_wrapper "$mnt"
	fi
	chroot "$mnt" /usr/local/bin/kube-proxy --help >/dev/null || die "$what does not run in the image"
	echo "tools in $ref:"
	versions "$mnt"
	buildah umount "$ctr" >/dev/null
	configure "$ctr" "$what"
	archive=_output/${what}-image.oci.tar
	log "commit $ref -> $archive"
	rm -f "$archive"
	buildah commit --quiet --format oci "$ctr" "oci-archive:$archive:$ref" >/dev/null
	podman_ load --quiet --input "$archive" >/dev/null
	podman_check "$ref" || die "the image does not run under podman"
	report "$ref" "$archive" "$start"
}

# configure sets the Dockerfile's entrypoint and labels.
configure() {
	local ctr=$1 what=$2 rev desc
	rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
	desc="drop-in replacement for kube-proxy (iptables mode)"
	[[ $what == kube-proxy ]] && desc="lab stand-in for registry.k8s.io/kube-proxy:$KUBE_VERSION (upstream binary, Debian $SUITE root)"
	buildah config \
		--os linux --arch "$(go env GOARCH)" \
		--env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		--entrypoint '["/usr/local/bin/kube-proxy"]' --cmd '' \
		--label org.opencontainers.image.title="$what" \
		--label org.opencontainers.image.description="$desc" \
		--label org.opencontainers.image.source=https://github.com/svcproxy/svcproxy \
		--label org.opencontainers.image.revision="$rev" \
		"$ctr"
}

# report prints the image's size, uncompressed (as `podman images` shows it)
# and as gzip-compressed layers (as a registry stores and nodes pull it).
report() {
	local ref=$1 archive=$2 start=$3 size gz
	size=$(podman_ image inspect --format '{{.Size}}' "$ref")
	gz=$(gzip -c "$archive" | wc -c)
	echo "image $ref: $(human "$size") uncompressed, $(human "$gz") compressed (archive $archive)"
	echo "built in $((SECONDS - start))s"
}

main "$@"
