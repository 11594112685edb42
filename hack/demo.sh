#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# svcproxy demo (`make demo`): a two-node lab cluster in network namespaces,
# a real kube-apiserver, svcproxy on every node invoked with kube-proxy's
# flags, the example manifests (manifests/examples) created through the API,
# then real requests and who answered them. Tears everything down on exit
# unless KEEP=1. Runs as root; every wait is bounded.
#
# Environment: PREFIX (lab prefix, default svpdemo), KEEP=1 (leave the lab
# up), SVCPROXY_BIN (use this binary instead of building bin/svcproxy),
# WAIT (seconds each readiness wait may take, default 60).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$(pwd)"
# shellcheck source=lab-common.sh
source "$root/hack/lab-common.sh"
lab_require_root
export PATH="$PATH:/usr/local/go/bin:/usr/sbin:/sbin"

PREFIX="${PREFIX:-svpdemo}"
KEEP="${KEEP:-0}"
WAIT="${WAIT:-60}"
state="${SVCPROXY_STATE_DIR:-${TMPDIR:-/tmp}/svcproxy-lab-${PREFIX}}"
nodes=2
pods=5 # pods 1-4 hold the examples' endpoints; pod 5 of each node is a client

say() { printf '\n== %s\n' "$*"; }
info() { printf '   %s\n' "$*"; }
die() {
	printf 'demo: %s\n' "$*" >&2
	exit 1
}
failures=0
fail() {
	printf '   FAIL: %s\n' "$*"
	failures=$((failures + 1))
}

# --- prerequisites --------------------------------------------------------
say "prerequisites"
if ! bash hack/install-deps.sh --check >/dev/null 2>&1; then
	bash hack/install-deps.sh
fi
# Cached after the first build (~7 min cold); its progress goes to stderr.
api="$(bash hack/build-kube-apiserver.sh 2> >(sed 's/^/   /' >&2) | tail -n1)"
[[ -x "$api" ]] || die "kube-apiserver not built"
info "kube-apiserver: $api"
if [[ -n "${SVCPROXY_BIN:-}" ]]; then
	svcproxy="$SVCPROXY_BIN"
else
	svcproxy="$root/bin/svcproxy"
	if ! go build -o "$svcproxy" ./cmd/svcproxy; then
		[[ -x "$svcproxy" ]] || die "cannot build bin/svcproxy"
		info "warning: go build failed; using the existing $svcproxy"
	fi
fi
[[ -x "$svcproxy" ]] || die "$svcproxy is not executable"
info "svcproxy: $svcproxy"
lab="$(lab_bin)"

labctl() { "$lab" "$1" --prefix "$PREFIX" "${@:2}"; }

# quiet CMD...: runs CMD with its stderr (progress logs) in a file, shown
# only if CMD fails; stdout is indented.
quiet_log="$(mktemp)"
quiet() {
	if ! "$@" 2>"$quiet_log" | sed 's/^/   /'; then
		sed 's/^/   | /' "$quiet_log" >&2
		die "failed: $*"
	fi
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if [[ "$KEEP" == "1" ]]; then
		say "KEEP=1: the lab stays up"
		info "kubeconfig (use from inside a lab namespace): $state/cp/admin.kubeconfig"
		info "svcproxy logs: $state/logs/svcproxy-node*.log"
		info "tear down:     hack/lab.sh down --prefix $PREFIX"
	else
		say "teardown"
		"$lab" down --prefix "$PREFIX" 2>&1 | sed 's/^/   /' || true
	fi
	rm -f "$quiet_log"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- lab and control plane ------------------------------------------------
say "lab $PREFIX: $nodes nodes x $pods pods, outside client, control plane"
quiet labctl up --nodes "$nodes" --pods "$pods"
KUBE_APISERVER="$api" quiet "$lab" controlplane up --prefix "$PREFIX"
kubeconfig="$state/cp/admin.kubeconfig"
[[ -f "$kubeconfig" ]] || die "no kubeconfig at $kubeconfig"

node_ns() { echo "${PREFIX}-node$1"; }
node_ip() { echo "192.0.2.1$1"; }
pod_ns() { echo "${PREFIX}-n$1-p$2"; }
pod_ip() { echo "198.51.100.$((64 * ($1 - 1) + 1 + $2))"; }
client_ns="${PREFIX}-client"

# --- the deployment manifests, checked by the real API server -------------
say "manifests/ (the DaemonSet deployment): server-side dry run against kube-apiserver"
mapfile -t deploy < <(sed -n 's/^- \([^ ]*\.yaml\)$/manifests\/\1/p' manifests/kustomization.yaml)
((${#deploy[@]} > 0)) || die "no resources in manifests/kustomization.yaml"
deploy_args=()
for f in "${deploy[@]}"; do deploy_args+=(-f "$f"); done
quiet labctl apply --dry-run "${deploy_args[@]}"

# --- Node objects (kubelet would register them) ---------------------------
say "Node objects"
nodes_yaml="$state/demo-nodes.yaml"
{
	cat manifests/examples/00-node.yaml
	for i in $(seq 2 "$nodes"); do
		cat <<YAML
---
apiVersion: v1
kind: Node
metadata:
  name: node$i
  labels:
    topology.kubernetes.io/zone: zone-a
spec:
  podCIDR: 198.51.100.$((64 * (i - 1)))/26
  podCIDRs: [198.51.100.$((64 * (i - 1)))/26]
status:
  addresses:
  - type: InternalIP
    address: $(node_ip "$i")
  - type: Hostname
    address: node$i
YAML
	done
} >"$nodes_yaml"
quiet labctl apply -f "$nodes_yaml"

# --- echo backends (the examples' endpoints) ------------------------------
say "backends (echoserver: replies '<name> <client-ip>:<port>')"
start_echo() { # node pod name port
	labctl echo --ns "$(pod_ns "$1" "$2")" --name "$3" --port "$4" >/dev/null
	info "$(printf '%-7s in pod n%s-p%s (%s:%s)' "$3" "$1" "$2" "$(pod_ip "$1" "$2")" "$4")"
}
start_echo 1 1 web-a 8080
start_echo 1 2 web-b 8080
start_echo 2 1 web-c 8080
start_echo 1 3 shop-a 8080
start_echo 2 2 shop-b 8080
start_echo 1 4 dns-a 5353
start_echo 2 3 dns-b 5353

# --- svcproxy on every node, kube-proxy's flags ---------------------------
say "svcproxy on every node (kube-proxy flags)"
mkdir -p "$state/logs"
pids=()
for i in $(seq 1 "$nodes"); do
	args=(--kubeconfig "$kubeconfig" --hostname-override "node$i"
		--cluster-cidr 198.51.100.0/24 --healthz-bind-address "$(node_ip "$i"):10256"
		--conntrack-max-per-core=0 --v=2)
	log="$state/logs/svcproxy-node$i.log"
	info "node$i: svcproxy ${args[*]}"
	ip netns exec "$(node_ns "$i")" setsid "$svcproxy" "${args[@]}" >"$log" 2>&1 </dev/null &
	pids[i]=$!
done

# healthz NS IP PATH: prints "CODE BODY" (HTTP/1.0 over bash's /dev/tcp).
healthz() {
	# shellcheck disable=SC2016 # expanded by the inner bash
	ip netns exec "$1" timeout 3 bash -c '
		exec 3<>"/dev/tcp/$0/10256" || exit 1
		printf "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n" "$1" "$0" >&3
		resp=$(cat <&3)
		code=$(printf "%s" "$resp" | head -n1 | cut -d" " -f2)
		body=$(printf "%s" "$resp" | tail -n1)
		echo "$code $body"' "$2" "$3" 2>/dev/null
}
for i in $(seq 1 "$nodes"); do
	ok=0
	for ((t = 0; t < WAIT * 4; t++)); do
		out="$(healthz "$(node_ns "$i")" "$(node_ip "$i")" /healthz || true)"
		if [[ "$out" == 200\ * ]]; then
			ok=1
			break
		fi
		kill -0 "${pids[i]}" 2>/dev/null || die "node$i: svcproxy exited; log: $(tail -n 20 "$state/logs/svcproxy-node$i.log")"
		sleep 0.25
	done
	((ok)) || die "node$i: /healthz not 200 within ${WAIT}s (last: ${out:-no answer}); log: $(tail -n 20 "$state/logs/svcproxy-node$i.log")"
	info "node$i http://$(node_ip "$i"):10256/healthz -> ${out%% *} $(grep -o '"nodeEligible":[a-z]*,"healthy":[a-z]*' <<<"$out" || true)"
done
backend="$(sed -n 's/.*iptablesBackend="\([a-z]*\)".*/\1/p' "$state/logs/svcproxy-node1.log" | head -n1)"
info "iptables backend chosen by --iptables-backend=auto on node1: ${backend:-?}"

# --- the example Services and EndpointSlices, through the API --------------
say "manifests/examples through the API (server-side apply)"
examples=()
for f in manifests/examples/*.yaml; do
	[[ "$(basename "$f")" == 00-node.yaml ]] && continue # Nodes created above
	examples+=(-f "$f")
done
quiet labctl apply "${examples[@]}"

# probe NS PROTO ADDR PORT: sets P_BACKEND, P_CLIENT (ip) or P_ERR (refused,
# timeout, ...); returns non-zero on failure.
probe() {
	local out
	P_BACKEND="" P_CLIENT="" P_ERR=""
	if out="$("$lab" probe --ns "$1" --proto "$2" --addr "$3" --port "$4" --timeout 2s 2>/dev/null)"; then
		P_BACKEND="${out%% *}"
		local rest="${out#* }"
		rest="${rest%% *}"
		P_CLIENT="${rest%:*}"
		return 0
	fi
	P_ERR="${out:-error}"
	return 1
}

# wait_for DESC CMD...: retries CMD every 0.25s for at most WAIT seconds.
wait_for() {
	local desc="$1"
	shift
	for ((t = 0; t < WAIT * 4; t++)); do
		if "$@"; then
			return 0
		fi
		sleep 0.25
	done
	die "$desc: not ready within ${WAIT}s (last: ${P_ERR:-?}); svcproxy log tail: $(tail -n 20 "$state/logs/svcproxy-node1.log")"
}
c1="$(pod_ns 1 5)"
c2="$(pod_ns 2 5)"
refused() { ! probe "$1" tcp "$2" "$3" && [[ "$P_ERR" == refused ]]; }
say "waiting (at most ${WAIT}s each) for the rules on both nodes"
for c in "$c1" "$c2"; do
	wait_for "web from $c" probe "$c" tcp 203.0.113.10 80
	wait_for "dns/udp from $c" probe "$c" udp 203.0.113.53 53
	wait_for "empty (refused) from $c" refused "$c" 203.0.113.30 80
done
for i in $(seq 1 "$nodes"); do
	wait_for "shop NodePort on node$i" probe "$client_ns" tcp "$(node_ip "$i")" 30080
done
nat="$(ip netns exec "$(node_ns 1)" "iptables-${backend:-nft}-save" -t nat 2>/dev/null || true)"
info "node1 nat table: $(grep -c '^:KUBE-SVC-' <<<"$nat") KUBE-SVC-* chains, $(grep -c '^:KUBE-SEP-' <<<"$nat") KUBE-SEP-* chains, e.g.:"
grep -E '^-A KUBE-(SERVICES|NODEPORTS) .*demo/(web|shop)' <<<"$nat" | sed 's/^/     /' || true

# --- requests --------------------------------------------------------------
say "requests"
# request LABEL NS PROTO ADDR PORT SERVICE WANT_BACKENDS WANT_CLIENT
#   WANT_BACKENDS: space-separated names; WANT_CLIENT: an IP, "masq" (any
#   address but the source's own) or "" (anything).
request() {
	local label="$1" ns="$2" proto="$3" addr="$4" port="$5" svc="$6" want="$7" wantc="$8" src="$9"
	local line="$label -> $addr:$port/$proto ($svc)"
	if ! probe "$ns" "$proto" "$addr" "$port"; then
		printf '   %s: %s\n' "$line" "$P_ERR"
		fail "$line: $P_ERR"
		return
	fi
	printf '   %s: answered by %s, saw client %s\n' "$line" "$P_BACKEND" "$P_CLIENT"
	[[ " $want " == *" $P_BACKEND "* ]] || fail "$line: answered by $P_BACKEND, want one of: $want"
	case "$wantc" in
	"") ;;
	masq) [[ "$P_CLIENT" != "$src" ]] || fail "$line: client $src not masqueraded" ;;
	*) [[ "$P_CLIENT" == "$wantc" ]] || fail "$line: saw client $P_CLIENT, want $wantc" ;;
	esac
}
seen=""
printf '   ClusterIP, pod to service (pod sources are not masqueraded):\n'
for c in 1 2; do
	for _ in 1 2 3 4; do
		request "pod n$c-p5 ($(pod_ip "$c" 5))" "$(pod_ns "$c" 5)" tcp 203.0.113.10 80 demo/web \
			"web-a web-b web-c" "$(pod_ip "$c" 5)" "$(pod_ip "$c" 5)"
		seen="$seen $P_BACKEND"
	done
done
distinct="$(tr ' ' '\n' <<<"$seen" | sed '/^$/d' | sort -u | paste -sd' ')"
info "(8 requests reached: $distinct)"
printf '   NodePort from outside the cluster (masqueraded, externalTrafficPolicy: Cluster):\n'
for i in $(seq 1 "$nodes"); do
	for _ in 1 2; do
		request "client (192.0.2.100)" "$client_ns" tcp "$(node_ip "$i")" 30080 "demo/shop NodePort, node$i" \
			"shop-a shop-b" masq 192.0.2.100
	done
done
printf '   DNS-like, UDP and TCP port 53 -> 5353:\n'
for _ in 1 2 3; do
	request "pod n1-p5 ($(pod_ip 1 5))" "$c1" udp 203.0.113.53 53 kube-system/dns "dns-a dns-b" "$(pod_ip 1 5)" "$(pod_ip 1 5)"
done
request "pod n2-p5 ($(pod_ip 2 5))" "$c2" tcp 203.0.113.53 53 kube-system/dns "dns-a dns-b" "$(pod_ip 2 5)" "$(pod_ip 2 5)"
printf '   A service without endpoints is rejected at once:\n'
for c in 1 2; do
	line="pod n$c-p5 ($(pod_ip "$c" 5)) -> 203.0.113.30:80/tcp (demo/empty)"
	start=$(date +%s%N)
	if probe "$(pod_ns "$c" 5)" tcp 203.0.113.30 80; then
		printf '   %s: answered by %s\n' "$line" "$P_BACKEND"
		fail "$line: answered, want refused"
	else
		ms=$((($(date +%s%N) - start) / 1000000))
		printf '   %s: %s (in %d ms)\n' "$line" "$P_ERR" "$ms"
		[[ "$P_ERR" == refused ]] || fail "$line: $P_ERR, want refused"
	fi
done

if ((failures > 0)); then
	say "demo FAILED: $failures unexpected result(s); logs in $state/logs (rerun with KEEP=1 to inspect)"
	exit 1
fi
say "demo OK: every request answered as kube-proxy would"
