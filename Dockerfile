# syntax=docker/dockerfile:1
#
# svcproxy image: a drop-in for the kube-proxy image (iptables mode).
#
#   docker build -t ghcr.io/svcproxy/svcproxy:v0.1.0 .
#   docker buildx build --platform linux/amd64,linux/arm64 -t ghcr.io/svcproxy/svcproxy:v0.1.0 --push .
#
# Without a registry (Debian packages only): make image (hack/image.sh).
#
# /usr/local/bin/kube-proxy is a symlink to svcproxy, so kubeadm's DaemonSet
# command (/usr/local/bin/kube-proxy --config=... --hostname-override=...)
# runs svcproxy unchanged: `kubectl -n kube-system set image
# daemonset/kube-proxy kube-proxy=<this image>` is the whole migration
# (docs/kubeadm-migration.md).

# The Go toolchain go.mod asks for ("go 1.26.8").
ARG GO_VERSION=1.26.8

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION}-bookworm AS build
ARG TARGETOS=linux
ARG TARGETARCH
# What --version reports; e.g. --build-arg VERSION=$(git describe --tags --always --dirty).
ARG VERSION=v0.0.0-dev
WORKDIR /src
# Modules first, so source edits do not re-download them.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
# A static binary: no libc needed, runs on any base.
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags "-s -w -X github.com/svcproxy/svcproxy/cmd/svcproxy/app.version=${VERSION}" -o /out/svcproxy ./cmd/svcproxy

FROM debian:bookworm-slim
# iptables ships both backends: iptables-nft* / ip6tables-nft* (nf_tables)
# and iptables-legacy* / ip6tables-legacy* (x_tables). ipset and conntrack
# are for debugging from inside the pod (svcproxy manages sets over netlink);
# kmod gives modprobe for modules not yet loaded.
#
# Backend selection: the kube-proxy image uses iptables-wrapper to join
# whichever backend the node (kubelet) already uses. svcproxy does that
# itself: --iptables-backend=auto (the default) asks each backend single
# chains, never whole tables: kubelet's hint chains first
# (`iptables-nft -t mangle -S KUBE-IPTABLES-HINT 1`, then
# KUBE-KUBELET-CANARY), then kube-proxy's (`-t nat -S KUBE-SERVICES 1`,
# mangle KUBE-PROXY-CANARY), then the rule counts of the built-in nat and
# filter chains (`-S PREROUTING`, ...), nft on a tie. It only ever runs the
# backend-suffixed binaries (iptables-nft-restore, iptables-legacy, ...);
# force one with --iptables-backend=nft|legacy. The plain `iptables`
# alternative in the image is never used by svcproxy.
#
# hack/image.sh (make image) builds the same image without a registry:
# debootstrap of these packages, the same layout, entrypoint and labels.
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables ipset conntrack kmod ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && for b in iptables ip6tables; do \
      for be in nft legacy; do \
        for s in "" -save -restore; do \
          command -v "$b-$be$s" >/dev/null || { echo "missing $b-$be$s" >&2; exit 1; }; \
        done; \
      done; \
    done
COPY --from=build /out/svcproxy /usr/local/bin/svcproxy
RUN ln -s svcproxy /usr/local/bin/kube-proxy \
 && /usr/local/bin/kube-proxy --help >/dev/null
# kubeadm's DaemonSet sets `command:`; this is for `docker run IMAGE --help`.
ENTRYPOINT ["/usr/local/bin/kube-proxy"]
ARG REVISION=unknown
LABEL org.opencontainers.image.title="svcproxy" \
      org.opencontainers.image.description="drop-in replacement for kube-proxy (iptables mode)" \
      org.opencontainers.image.source="https://github.com/svcproxy/svcproxy" \
      org.opencontainers.image.revision="${REVISION}"
