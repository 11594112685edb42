# svcproxy — the README's commands. `make demo` and `make test` set up
# everything they need on a fresh Debian machine (run as root).
GO       ?= go
BIN      := bin/svcproxy
EXAMPLES := manifests/examples
# Bound the whole suite: CI has 90 minutes, we aim for well under 30.
TEST_TIMEOUT ?= 25m

.PHONY: all build deps kube-apiserver kube-proxy image test-migration bench bignode dump demo test test-unit test-e2e soak vet fmt-check clean

all: build

# The version svcproxy reports (--version, svcproxy version): git describe,
# or v0.0.0-dev outside a git checkout.
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo v0.0.0-dev)
LDFLAGS  := -X github.com/svcproxy/svcproxy/cmd/svcproxy/app.version=$(VERSION)

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/svcproxy

# System packages: iptables, ipset, conntrack, etcd-server, iproute2, openssl.
deps:
	bash hack/install-deps.sh

# The pinned kube-apiserver the end-to-end tier and the demo run (built from
# the Go module proxy once, ~7 minutes cold, then cached in ~/.cache/svcproxy).
kube-apiserver:
	bash hack/build-kube-apiserver.sh >/dev/null

# The real kube-proxy the benchmark compares against (same pinned version,
# same build script; cached in ~/.cache/svcproxy).
kube-proxy:
	bash hack/build-kube-proxy.sh >/dev/null

# The svcproxy image without a registry (hack/image.sh): a Debian bookworm root
# from Debian's packages (debootstrap, cached in ~/.cache/svcproxy/image), the
# static binary, the Dockerfile's layout. Writes _output/svcproxy-image.oci.tar,
# loads it into podman's storage, prints its size and the tools' versions.
image:
	bash hack/image.sh

# The kubeadm migration, end to end (hack/migration): kubeadm's kube-proxy
# DaemonSet with the real kube-proxy image, then manifests/ with the svcproxy
# image, then back; podman runs the pods in lab nodes' network namespaces.
test-migration: deps image kube-apiserver kube-proxy
	bash hack/image.sh kube-proxy
	$(GO) vet -tags migration ./hack/migration/
	$(GO) test -tags migration -count=1 -timeout 15m -v ./hack/migration/

# svcproxy (both layouts) vs the real kube-proxy (iptables and nftables
# modes) in one lab (hack/bench.sh); knobs: N, M,
# K, CONNS, MIN_SYNC, CAP, TIMEOUT. Table in _output/bench.txt.
bench: deps build kube-apiserver kube-proxy
	bash hack/bench.sh

# Start and restart over a big table (hack/bignode): kube-proxy nftables and
# svcproxy (both layouts, over its own and kube-proxy's tables) restarted over
# N single-stack IPv6 Services; time until a change made at the start is
# served. N=10000 by default (about an hour on 2 CPUs), N=1000 for a quick
# check. Table in _output/bignode.txt.
bignode: deps build kube-apiserver kube-proxy
	mkdir -p _output
	$(GO) build -o _output/bignode ./hack/bignode
	_output/bignode -svcproxy $(BIN) -n $${N:-10000} -out _output/bignode.txt

# Offline: the rules node1 would get for the example manifests.
dump: build
	$(BIN) dump -f $(EXAMPLES) --node-name node1 --cluster-cidr 198.51.100.0/24

# The embedded lab: API server, two nodes running svcproxy, real requests.
demo: deps build kube-apiserver
	bash hack/demo.sh

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# All three tiers (hack/test.sh). Root-only tests skip with a reason where
# they cannot run; SVCPROXY_REQUIRE_ALL=1 turns any skip into a failure, so a
# green `make test` (and CI) proves every tier ran.
test: deps fmt-check vet kube-apiserver
	SVCPROXY_REQUIRE_ALL=1 TEST_TIMEOUT=$(TEST_TIMEOUT) bash hack/test.sh

test-unit:
	$(GO) test -short ./...

test-e2e: deps build kube-apiserver
	SVCPROXY_E2E=1 $(GO) test -count=1 -timeout $(TEST_TIMEOUT) -v ./hack/e2e/...

# The soak (hack/soak): svcproxy on every lab node under steady API churn
# and scheduled faults (table flushes, API server and daemon kills, failing
# restores, destroyed ipsets, SIGSTOP), probes checked against the API, and
# the final rules compared with svcproxy dump. SOAK=3m by default; SOAK=30m
# for a long run. Exits non-zero naming every missed target.
SOAK ?= 3m
soak: deps build kube-apiserver
	$(GO) build -o bin/soak ./hack/soak
	SOAK=$(SOAK) bin/soak -svcproxy $(BIN)

clean:
	rm -rf bin _output
