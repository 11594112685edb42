package rules_test

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"

	"github.com/svcproxy/svcproxy/iptables"
	"github.com/svcproxy/svcproxy/iptables/trace"
	"github.com/svcproxy/svcproxy/proxier/model/testobj"
	"github.com/svcproxy/svcproxy/proxier/rules"
	"github.com/svcproxy/svcproxy/proxier/rules/rulestest"
)

// Addresses used by the flow tests (node1 is the node rendered for).
const (
	nodeIP      = "192.0.2.11"
	outsideIP   = "192.0.2.100"
	podOnNode1  = "198.51.100.5"
	podOnNode2  = "198.51.100.70"
	farAwayIP   = "203.0.113.100"
	internetish = "203.0.113.200"
)

// flow is one packet and what must happen to it.
type flow struct {
	name      string
	src, dst  string
	proto     string
	port      int
	origin    trace.Origin
	recentHit string // a -m recent list that already holds the source

	endpoints []string // distinct DNAT destinations of accepted outcomes
	// counted, when not nil, are the nfacct counters the packet is counted
	// into on any path (distinct, sorted).
	counted  []string
	verdicts []string // distinct verdicts, sorted
	// masq says, per endpoint, whether the packet is masqueraded; endpoints
	// not listed are not checked.
	masq map[string]bool
}

// layoutFakes holds one scenario applied in each layout.
type layoutFakes map[rules.Layout]*iptables.Fake

// applyToFake renders a scenario in every layout and applies each (with the
// jumps) to a fresh Fake, the way the daemon's first sync would.
func applyToFake(t *testing.T, sc scenario) layoutFakes {
	t.Helper()
	out := layoutFakes{}
	for _, layout := range layouts {
		out[layout] = applyLayout(t, sc, layout)
	}
	return out
}

func applyLayout(t *testing.T, sc scenario, layout rules.Layout) *iptables.Fake {
	t.Helper()
	snap, cfg := sc.input(t, layout)
	ipt := iptables.NewFake(iptables.IPv4)
	if cfg.Family == v1.IPv6Protocol {
		ipt = iptables.NewFake(iptables.IPv6)
	}
	ctx := context.Background()
	if err := ipt.Restore(ctx, rules.Render(snap, cfg, rules.RenderOptions{Full: true}).Data, iptables.RestoreOptions{NoFlush: true}); err != nil {
		t.Fatalf("restore: %v", err)
	}
	// As the daemon's full sync: each target chain ensured and each jump
	// prepended to its built-in chain.
	for _, j := range append(rules.JumpsFor(cfg), rules.KubeletJumps()...) {
		table := iptables.Table(j.Table)
		if err := ipt.EnsureChain(ctx, table, j.To); err != nil {
			t.Fatal(err)
		}
		if _, err := ipt.EnsureRule(ctx, iptables.Prepend, table, j.From, j.Args...); err != nil {
			t.Fatalf("jump %v: %v", j, err)
		}
	}
	return ipt
}

// runFlows traces every flow through the scenario's rules in every layout:
// both must give the same outcomes.
func runFlows(t *testing.T, fakes layoutFakes, ctx trace.Context, flows []flow) {
	t.Helper()
	for _, layout := range layouts {
		runLayoutFlows(t, layout, fakes[layout].Dump(), ctx, flows)
	}
}

func runLayoutFlows(t *testing.T, layout rules.Layout, dump *iptables.Dump, ctx trace.Context, flows []flow) {
	t.Helper()
	for _, f := range flows {
		t.Run(string(layout)+"/"+f.name, func(t *testing.T) {
			c := ctx
			if f.recentHit != "" {
				c.RecentHits = map[string]bool{f.recentHit: true}
			}
			proto := f.proto
			if proto == "" {
				proto = "tcp"
			}
			outcomes, err := trace.Trace(dump, c, trace.Packet{
				Src: netip.MustParseAddr(f.src), Dst: netip.MustParseAddr(f.dst),
				Protocol: proto, DstPort: f.port, SrcPort: 40000, Origin: f.origin,
			})
			if err != nil {
				t.Fatalf("trace: %v", err)
			}
			describe := func() string {
				var b strings.Builder
				for _, o := range outcomes {
					b.WriteString("\n  " + o.String())
				}
				return b.String()
			}
			if got := trace.Endpoints(outcomes); !slices.Equal(got, f.endpoints) {
				t.Errorf("endpoints = %v, want %v%s", got, f.endpoints, describe())
			}
			if f.verdicts != nil {
				if got := trace.Verdicts(outcomes); !slices.Equal(got, f.verdicts) {
					t.Errorf("verdicts = %v, want %v%s", got, f.verdicts, describe())
				}
			}
			if f.counted != nil {
				if got := countedInto(outcomes); !slices.Equal(got, f.counted) {
					t.Errorf("counted into %v, want %v%s", got, f.counted, describe())
				}
			}
			for ep, want := range f.masq {
				found := false
				for _, o := range outcomes {
					if o.Endpoint.String() == ep && o.Verdict == trace.Accept {
						found = true
						if o.Masquerade != want {
							t.Errorf("to %s: masquerade = %v, want %v%s", ep, o.Masquerade, want, describe())
						}
					}
				}
				if !found {
					t.Errorf("no accepted outcome reaches %s%s", ep, describe())
				}
			}
		})
	}
}

// countedInto lists the nfacct counters named by the rules the outcomes
// passed through (distinct, sorted): the kernel counts a packet into a
// counter when it reaches the rule's -m nfacct and every match before it held.
func countedInto(outcomes []trace.Outcome) []string {
	counted := []string{}
	for _, o := range outcomes {
		for _, step := range o.Path {
			f := strings.Fields(step.Raw)
			for i := 0; i+1 < len(f); i++ {
				if f[i] == "--nfacct-name" && !slices.Contains(counted, f[i+1]) {
					counted = append(counted, f[i+1])
				}
			}
		}
	}
	slices.Sort(counted)
	return counted
}

func defaultTraceContext() trace.Context {
	return trace.Context{LocalAddrs: []netip.Addr{netip.MustParseAddr(nodeIP)}}
}

var webEndpoints = []string{"198.51.100.2:8080", "198.51.100.3:8080", "198.51.100.66:8080"}

func TestFlowClusterIP(t *testing.T) {
	ipt := applyToFake(t, scenarioNamed(t, "clusterip"))
	runFlows(t, ipt, defaultTraceContext(), []flow{
		{name: "pod reaches every endpoint, source kept", src: podOnNode1, dst: "203.0.113.10", port: 80, origin: trace.Incoming,
			endpoints: webEndpoints, verdicts: []string{"ACCEPT"},
			masq: map[string]bool{"198.51.100.2:8080": false, "198.51.100.66:8080": false}},
		{name: "node process is masqueraded", src: nodeIP, dst: "203.0.113.10", port: 80, origin: trace.Local,
			endpoints: webEndpoints, masq: map[string]bool{"198.51.100.3:8080": true}},
		{name: "off-cluster source is masqueraded", src: outsideIP, dst: "203.0.113.10", port: 80, origin: trace.Incoming,
			endpoints: webEndpoints, masq: map[string]bool{"198.51.100.66:8080": true}},
		{name: "hairpin: endpoint reaching itself is masqueraded", src: "198.51.100.2", dst: "203.0.113.10", port: 80, origin: trace.Incoming,
			endpoints: webEndpoints, masq: map[string]bool{"198.51.100.2:8080": true, "198.51.100.3:8080": false}},
		{name: "other port is not a service", src: podOnNode1, dst: "203.0.113.10", port: 81, origin: trace.Incoming,
			endpoints: []string{}, verdicts: []string{"ACCEPT"}},
		{name: "udp to a tcp service is not captured", src: podOnNode1, dst: "203.0.113.10", port: 80, proto: "udp", origin: trace.Incoming,
			endpoints: []string{}},
	})
}

func TestFlowMasqueradeAll(t *testing.T) {
	ipt := applyToFake(t, scenarioNamed(t, "masquerade-all-bit5"))
	runFlows(t, ipt, defaultTraceContext(), []flow{
		{name: "pod traffic masqueraded too", src: podOnNode1, dst: "203.0.113.10", port: 80, origin: trace.Incoming,
			endpoints: webEndpoints, masq: map[string]bool{"198.51.100.3:8080": true}},
	})
}

func TestFlowNoLocalDetector(t *testing.T) {
	ipt := applyToFake(t, scenarioNamed(t, "clusterip-no-local-detector"))
	runFlows(t, ipt, defaultTraceContext(), []flow{
		{name: "without --cluster-cidr off-cluster sources keep their address", src: outsideIP, dst: "203.0.113.10", port: 80, origin: trace.Incoming,
			endpoints: webEndpoints, masq: map[string]bool{"198.51.100.66:8080": false}},
	})
}

func TestFlowMultipleClusterCIDRsThroughSet(t *testing.T) {
	ipt := applyToFake(t, scenarioNamed(t, "multiple-cluster-cidrs"))
	ctx := defaultTraceContext()
	ctx.Sets = map[string][]netip.Prefix{rulestest.PodSet: {netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("192.0.2.128/25")}}
	runFlows(t, ipt, ctx, []flow{
		{name: "pod in second CIDR is local", src: "192.0.2.130", dst: "203.0.113.10", port: 80, origin: trace.Incoming,
			endpoints: webEndpoints, masq: map[string]bool{"198.51.100.3:8080": false}},
		{name: "outside both CIDRs is masqueraded", src: outsideIP, dst: "203.0.113.10", port: 80, origin: trace.Incoming,
			endpoints: webEndpoints, masq: map[string]bool{"198.51.100.3:8080": true}},
	})
}

func TestFlowNodePort(t *testing.T) {
	ipt := applyToFake(t, scenarioNamed(t, "nodeport"))
	shop := []string{"198.51.100.4:8080", "198.51.100.67:8080"}
	runFlows(t, ipt, defaultTraceContext(), []flow{
		{name: "outside client on node IP, masqueraded", src: outsideIP, dst: nodeIP, port: 30080, origin: trace.Incoming,
			endpoints: shop, masq: map[string]bool{"198.51.100.4:8080": true, "198.51.100.67:8080": true}},
		{name: "node to its own NodePort on localhost", src: "127.0.0.1", dst: "127.0.0.1", port: 30080, origin: trace.Local,
			endpoints: shop},
		{name: "cluster IP of the NodePort service", src: podOnNode1, dst: "203.0.113.20", port: 80, origin: trace.Incoming,
			endpoints: shop, masq: map[string]bool{"198.51.100.4:8080": false}},
		{name: "NodePort on an address that is not the node's", src: outsideIP, dst: "192.0.2.12", port: 30080, origin: trace.Incoming,
			endpoints: []string{}},
	})
}

func TestFlowNodePortAddresses(t *testing.T) {
	ipt := applyToFake(t, scenarioNamed(t, "nodeport-addresses"))
	runFlows(t, ipt, defaultTraceContext(), []flow{
		{name: "listed node IP accepts", src: outsideIP, dst: nodeIP, port: 30080, origin: trace.Incoming,
			endpoints: []string{"198.51.100.4:8080"}},
		{name: "localhost does not (localhost NodePorts off)", src: "127.0.0.1", dst: "127.0.0.1", port: 30080, origin: trace.Local,
			endpoints: []string{}},
	})
}

func TestFlowUDPAndSCTP(t *testing.T) {
	ipt := applyToFake(t, scenarioNamed(t, "udp-sctp"))
	runFlows(t, ipt, defaultTraceContext(), []flow{
		{name: "udp dns", src: podOnNode1, dst: "203.0.113.53", port: 53, proto: "udp", origin: trace.Incoming,
			endpoints: []string{"198.51.100.5:5353", "198.51.100.68:5353"}},
		{name: "tcp dns", src: podOnNode1, dst: "203.0.113.53", port: 53, proto: "tcp", origin: trace.Incoming,
			endpoints: []string{"198.51.100.5:5353", "198.51.100.68:5353"}},
		{name: "sctp", src: podOnNode1, dst: "203.0.113.53", port: 3868, proto: "sctp", origin: trace.Incoming,
			endpoints: []string{"198.51.100.5:3868", "198.51.100.68:3868"}},
	})
}

func TestFlowNoEndpoints(t *testing.T) {
	ipt := applyToFake(t, scenarioNamed(t, "no-endpoints"))
	runFlows(t, ipt, defaultTraceContext(), []flow{
		{name: "cluster IP rejected from a pod", src: podOnNode1, dst: "203.0.113.30", port: 80, origin: trace.Incoming,
			endpoints: []string{}, verdicts: []string{"REJECT"}},
		{name: "cluster IP rejected from the node", src: nodeIP, dst: "203.0.113.30", port: 80, origin: trace.Local,
			endpoints: []string{}, verdicts: []string{"REJECT"}},
		{name: "node port rejected", src: outsideIP, dst: nodeIP, port: 30031, origin: trace.Incoming,
			endpoints: []string{}, verdicts: []string{"REJECT"}},
		{name: "external IP rejected", src: outsideIP, dst: "203.0.113.131", port: 80, origin: trace.Incoming,
			endpoints: []string{}, verdicts: []string{"REJECT"}},
	})
	ipt = applyToFake(t, scenarioNamed(t, "not-ready-only"))
	runFlows(t, ipt, defaultTraceContext(), []flow{
		{name: "only not-ready endpoints: rejected", src: podOnNode1, dst: "203.0.113.10", port: 80, origin: trace.Incoming,
			endpoints: []string{}, verdicts: []string{"REJECT"}},
	})
}

func TestFlowTerminatingFallback(t *testing.T) {
	ipt := applyToFake(t, scenarioNamed(t, "terminating-fallback"))
	runFlows(t, ipt, defaultTraceContext(), []flow{
		{name: "serving terminating endpoint used when none is ready", src: podOnNode1, dst: "203.0.113.10", port: 80, origin: trace.Incoming,
			endpoints: []string{"198.51.100.2:8080"}},
	})
}

func TestFlowExternalTrafficPolicyLocal(t *testing.T) {
	ipt := applyToFake(t, scenarioNamed(t, "external-local"))
	runFlows(t, ipt, defaultTraceContext(), []flow{
		{name: "outside to node port: local endpoint only, source kept", src: outsideIP, dst: nodeIP, port: 30040, origin: trace.Incoming,
			endpoints: []string{"198.51.100.6:8080"}, masq: map[string]bool{"198.51.100.6:8080": false}},
		{name: "outside to LB IP: local endpoint only", src: outsideIP, dst: "203.0.113.140", port: 80, origin: trace.Incoming,
			endpoints: []string{"198.51.100.6:8080"}},
		{name: "pod to LB IP short-circuits to all endpoints", src: podOnNode1, dst: "203.0.113.140", port: 80, origin: trace.Incoming,
			endpoints: []string{"198.51.100.6:8080", "198.51.100.70:8080"}},
		{name: "node to its node port: all endpoints, masqueraded", src: nodeIP, dst: nodeIP, port: 30040, origin: trace.Local,
			endpoints: []string{"198.51.100.6:8080", "198.51.100.70:8080"}, masq: map[string]bool{"198.51.100.70:8080": true}},
		{name: "health check node port accepted", src: outsideIP, dst: nodeIP, port: 31040, origin: trace.Incoming,
			endpoints: []string{}, verdicts: []string{"ACCEPT"}},
	})
	ipt = applyToFake(t, scenarioNamed(t, "external-local-none-here"))
	runFlows(t, ipt, defaultTraceContext(), []flow{
		{name: "outside to node port with no local endpoint: dropped", src: outsideIP, dst: nodeIP, port: 30040, origin: trace.Incoming,
			endpoints: []string{}, verdicts: []string{"DROP"}},
		{name: "outside to LB IP with no local endpoint: dropped", src: outsideIP, dst: "203.0.113.140", port: 80, origin: trace.Incoming,
			endpoints: []string{}, verdicts: []string{"DROP"}},
		{name: "pod to LB IP still works", src: podOnNode1, dst: "203.0.113.140", port: 80, origin: trace.Incoming,
			endpoints: []string{"198.51.100.70:8080"}},
		{name: "cluster IP unaffected", src: podOnNode1, dst: "203.0.113.40", port: 80, origin: trace.Incoming,
			endpoints: []string{"198.51.100.70:8080"}},
	})
}

func TestFlowInternalTrafficPolicyLocal(t *testing.T) {
	ipt := applyToFake(t, scenarioNamed(t, "internal-local"))
	runFlows(t, ipt, defaultTraceContext(), []flow{
		{name: "only this node's endpoints", src: podOnNode1, dst: "203.0.113.10", port: 80, origin: trace.Incoming,
			endpoints: []string{"198.51.100.2:8080", "198.51.100.3:8080"}},
	})
	ipt = applyToFake(t, scenarioNamed(t, "internal-local-none-here"))
	runFlows(t, ipt, defaultTraceContext(), []flow{
		{name: "no local endpoint: dropped", src: podOnNode1, dst: "203.0.113.10", port: 80, origin: trace.Incoming,
			endpoints: []string{}, verdicts: []string{"DROP"}},
	})
}

func TestFlowLoadBalancerSourceRanges(t *testing.T) {
	ipt := applyToFake(t, scenarioNamed(t, "loadbalancer-source-ranges"))
	runFlows(t, ipt, defaultTraceContext(), []flow{
		{name: "allowed range", src: outsideIP, dst: "203.0.113.140", port: 80, origin: trace.Incoming,
			endpoints: []string{"198.51.100.6:8080"}, masq: map[string]bool{"198.51.100.6:8080": true}},
		{name: "other source dropped", src: farAwayIP, dst: "203.0.113.140", port: 80, origin: trace.Incoming,
			endpoints: []string{}, verdicts: []string{"DROP"}},
		{name: "node port is not filtered", src: farAwayIP, dst: nodeIP, port: 30040, origin: trace.Incoming,
			endpoints: []string{"198.51.100.6:8080"}},
	})
}

func TestFlowExternalIPs(t *testing.T) {
	ipt := applyToFake(t, scenarioNamed(t, "external-ips"))
	runFlows(t, ipt, defaultTraceContext(), []flow{
		{name: "external IP reaches every endpoint, masqueraded", src: outsideIP, dst: "203.0.113.130", port: 80, origin: trace.Incoming,
			endpoints: webEndpoints, masq: map[string]bool{"198.51.100.2:8080": true}},
	})
}

// externalTrafficPolicy Local on a ClusterIP Service with externalIPs, as
// kube-proxy: outside traffic to the external IP goes only to this node's
// endpoints with its source kept, and is dropped when there is none here;
// pods and the node itself still reach every endpoint.
func TestFlowExternalIPsLocalPolicy(t *testing.T) {
	local := []string{"198.51.100.2:8080", "198.51.100.3:8080"}
	ipt := applyToFake(t, scenarioNamed(t, "external-ips-local"))
	runFlows(t, ipt, defaultTraceContext(), []flow{
		{name: "outside client: local endpoints only, source kept", src: outsideIP, dst: "203.0.113.130", port: 80, origin: trace.Incoming,
			endpoints: local, masq: map[string]bool{"198.51.100.2:8080": false, "198.51.100.3:8080": false}},
		{name: "pod: every endpoint (short-circuit)", src: podOnNode1, dst: "203.0.113.130", port: 80, origin: trace.Incoming,
			endpoints: webEndpoints, masq: map[string]bool{"198.51.100.66:8080": false}},
		{name: "node: every endpoint, masqueraded", src: nodeIP, dst: "203.0.113.130", port: 80, origin: trace.Local,
			endpoints: webEndpoints, masq: map[string]bool{"198.51.100.66:8080": true}},
		{name: "cluster IP keeps the cluster policy", src: outsideIP, dst: "203.0.113.10", port: 80, origin: trace.Incoming,
			endpoints: webEndpoints},
	})
	ipt = applyToFake(t, scenarioNamed(t, "external-ips-local-none-here"))
	runFlows(t, ipt, defaultTraceContext(), []flow{
		{name: "outside client, no local endpoint: dropped", src: outsideIP, dst: "203.0.113.130", port: 80, origin: trace.Incoming,
			endpoints: []string{}, verdicts: []string{"DROP"}},
		{name: "pod still reaches the remote endpoint", src: podOnNode1, dst: "203.0.113.130", port: 80, origin: trace.Incoming,
			endpoints: []string{"198.51.100.66:8080"}},
	})
}

// With NodePorts only on a non-loopback address no localhost NodePort can
// exist: 127.0.0.1:NODEPORT is not a service, and no KUBE-FIREWALL chain
// is written.
func TestFlowNodePortAddressesWithoutLoopback(t *testing.T) {
	ipt := applyToFake(t, scenarioNamed(t, "nodeport-addresses-no-loopback"))
	runFlows(t, ipt, defaultTraceContext(), []flow{
		{name: "node IP NodePort works", src: outsideIP, dst: nodeIP, port: 30080, origin: trace.Incoming,
			endpoints: []string{"198.51.100.4:8080"}},
		{name: "localhost NodePort does not exist", src: "127.0.0.1", dst: "127.0.0.1", port: 30080, origin: trace.Local,
			endpoints: []string{}},
	})
	for layout, fake := range ipt {
		if c := fake.Dump().Chain(iptables.TableFilter, rules.ChainKubeletFirewall); c != nil && len(c.Rules) > 0 {
			t.Errorf("%s: KUBE-FIREWALL has rules although no localhost NodePort can exist: %v", layout, c.Rules)
		}
	}
}

// With kube-proxy's nfacct counters on the node, a localhost NodePort
// packet is counted (and reaches the same endpoints); a NodePort packet to
// the node's address and a cluster IP packet are not.
func TestFlowNFAcctCounters(t *testing.T) {
	ipt := applyToFake(t, scenarioNamed(t, "nfacct-counters"))
	shop := []string{"198.51.100.4:8080"}
	runFlows(t, ipt, defaultTraceContext(), []flow{
		{name: "localhost NodePort is counted", src: "127.0.0.1", dst: "127.0.0.1", port: 30080, origin: trace.Local,
			endpoints: shop, masq: map[string]bool{shop[0]: true}, counted: []string{iptables.NFAcctLocalhostNodePorts}},
		{name: "node IP NodePort is not", src: outsideIP, dst: nodeIP, port: 30080, origin: trace.Incoming,
			endpoints: shop, counted: []string{}},
		{name: "cluster IP is not", src: podOnNode1, dst: "203.0.113.20", port: 80, origin: trace.Incoming,
			endpoints: shop, counted: []string{}},
	})
	// Without the counters the same packet takes the plain NodePort rule.
	ipt = applyToFake(t, scenarioNamed(t, "nodeport"))
	runFlows(t, ipt, defaultTraceContext(), []flow{
		{name: "no counters: localhost NodePort still served", src: "127.0.0.1", dst: "127.0.0.1", port: 30080, origin: trace.Local,
			endpoints: []string{"198.51.100.4:8080", "198.51.100.67:8080"}, counted: []string{}},
	})
}

func TestFlowSessionAffinity(t *testing.T) {
	ipt := applyToFake(t, scenarioNamed(t, "session-affinity"))
	sticky := rules.EndpointChain(testobj.WebPortName, "198.51.100.3:8080")
	runFlows(t, ipt, defaultTraceContext(), []flow{
		{name: "new client: any endpoint", src: podOnNode1, dst: "203.0.113.10", port: 80, origin: trace.Incoming,
			endpoints: webEndpoints},
		{name: "returning client: its endpoint only", src: podOnNode1, dst: "203.0.113.10", port: 80, origin: trace.Incoming,
			recentHit: sticky, endpoints: []string{"198.51.100.3:8080"}},
	})
}

func TestFlowTopologyHints(t *testing.T) {
	ipt := applyToFake(t, scenarioNamed(t, "topology-zone-hints"))
	runFlows(t, ipt, defaultTraceContext(), []flow{
		{name: "same-zone endpoint only", src: podOnNode1, dst: "203.0.113.10", port: 80, origin: trace.Incoming,
			endpoints: []string{"198.51.100.2:8080"}},
	})
}

func TestFlowPodEgress(t *testing.T) {
	ipt := applyToFake(t, scenarioNamed(t, "pod-egress"))
	ctx := defaultTraceContext()
	ctx.Sets = map[string][]netip.Prefix{
		rulestest.PodSet:   {netip.MustParsePrefix("198.51.100.0/24")},
		"SVCPROXY-NO-MASQ": {netip.MustParsePrefix("192.0.2.0/25")},
	}
	runFlows(t, ipt, ctx, []flow{
		{name: "pod to outside world is masqueraded", src: podOnNode1, dst: internetish, port: 443, origin: trace.Incoming,
			endpoints: []string{}, verdicts: []string{"ACCEPT"}},
	})
	// Masquerade of non-DNATed traffic is in the outcome itself.
	check := func(name, dst string, want bool) {
		for layout, fake := range ipt {
			out, err := trace.Trace(fake.Dump(), ctx, trace.Packet{Src: netip.MustParseAddr(podOnNode1), Dst: netip.MustParseAddr(dst), Protocol: "tcp", DstPort: 443, Origin: trace.Incoming})
			if err != nil || len(out) != 1 {
				t.Fatalf("%s: %s: %v %v", layout, name, out, err)
			}
			if out[0].Masquerade != want {
				t.Errorf("%s: %s: masquerade = %v, want %v", layout, name, out[0].Masquerade, want)
			}
		}
	}
	check("pod to outside", internetish, true)
	check("pod to pod on another node", podOnNode2, false)
	check("pod to no-masquerade destination", outsideIP, false)
}

func scenarioNamed(t *testing.T, name string) scenario {
	t.Helper()
	for _, sc := range scenarios() {
		if sc.name == name {
			return sc
		}
	}
	t.Fatalf("no scenario %q", name)
	return scenario{}
}

var _ = v1.ProtocolTCP
var _ = discovery.AddressTypeIPv4
