#!/usr/bin/env bash
# Build (or reuse the cached) pinned kube-apiserver; prints its path.
# See hack/build-k8s.sh for details. Usage: build-kube-apiserver.sh [--force]
set -euo pipefail
exec "$(dirname "${BASH_SOURCE[0]}")/build-k8s.sh" kube-apiserver "$@"
