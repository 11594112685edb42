package rules_test

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"

	"github.com/svcproxy/svcproxy/iptables/trace"
	"github.com/svcproxy/svcproxy/proxier/model"
	"github.com/svcproxy/svcproxy/proxier/rules"
	"github.com/svcproxy/svcproxy/proxier/rules/rulestest"
)

// Both layouts must do the same thing to every packet (issue 9): for every
// scenario, a packet from each kind of source (pods on both nodes, each
// endpoint of this node itself, the node, an outside client) to each
// service address
// (cluster IPs, external and load-balancer IPs, node ports on the node IP
// and on localhost), with and without each endpoint's affinity entry, has
// the same outcomes — endpoints reached, masquerade, verdicts — through
// the compact rules as through kube-proxy's.
func TestLayoutsAgreeOnEveryScenario(t *testing.T) {
	defer rules.SetDispatchThreshold(2)() // dispatch through buckets too
	for _, sc := range append(scenarios(), dispatchScenario()) {
		if len(sc.opts.Changed) > 0 {
			continue // a partial render of a scenario is not a node state
		}
		t.Run(sc.name, func(t *testing.T) {
			fakes := applyToFake(t, sc)
			snap, cfg := sc.input(t, rules.LayoutCompact)
			ctx := layoutsTraceContext(cfg)
			compared := 0
			for _, p := range packetsFor(snap, cfg) {
				for _, hit := range append([]string{""}, affinityLists(snap)...) {
					c := ctx
					if hit != "" {
						c.RecentHits = map[string]bool{hit: true}
					}
					got := map[rules.Layout]string{}
					for _, layout := range layouts {
						out, err := trace.Trace(fakes[layout].Dump(), c, p)
						if err != nil {
							t.Fatalf("%s: %v: %v", layout, p, err)
						}
						got[layout] = outcomeSummary(out)
					}
					if got[rules.LayoutCompact] != got[rules.LayoutKubeProxy] {
						t.Errorf("%v (affinity %q): compact %s, kube-proxy %s", p, hit, got[rules.LayoutCompact], got[rules.LayoutKubeProxy])
					}
					compared++
				}
			}
			if compared == 0 && len(snap.Services) > 0 {
				t.Fatal("no packet compared")
			}
			t.Logf("%d packets agree", compared)
		})
	}
}

func layoutsTraceContext(cfg *rules.NodeConfig) trace.Context {
	ctx := trace.Context{LocalAddrs: append([]netip.Addr{netip.MustParseAddr("127.0.0.1")}, cfg.NodeIPs...), Sets: map[string][]netip.Prefix{}}
	for _, set := range []string{rulestest.PodSet, "SVCPROXY-NO-MASQ"} {
		ctx.Sets[set] = []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}
	}
	if cfg.Family == v1.IPv6Protocol {
		ctx.LocalAddrs = append(ctx.LocalAddrs, netip.MustParseAddr("::1"))
	}
	return ctx
}

// packetsFor lists the packets compared for a snapshot.
func packetsFor(snap *model.Snapshot, cfg *rules.NodeConfig) []trace.Packet {
	type dst struct {
		ip    netip.Addr
		port  int
		proto string
	}
	var dsts []dst
	var endpoints []netip.Addr
	for name, sp := range snap.Services {
		proto := strings.ToLower(string(sp.Protocol))
		for _, ip := range append(append([]netip.Addr{sp.ClusterIP}, sp.ExternalIPs...), sp.LoadBalancerVIPs...) {
			dsts = append(dsts, dst{ip, sp.Port, proto})
		}
		if sp.NodePort != 0 {
			for _, ip := range cfg.NodeIPs {
				dsts = append(dsts, dst{ip, sp.NodePort, proto})
			}
			if cfg.Family == v1.IPv4Protocol {
				dsts = append(dsts, dst{netip.MustParseAddr("127.0.0.1"), sp.NodePort, proto})
			}
		}
		for _, ep := range snap.Endpoints[name] {
			// A pod reaches a Service through its own node's rules, so only
			// this node's endpoints can be the client of their own
			// connection here (which is why the compact layout keeps
			// KUBE-SEP hairpin chains for them alone).
			if ep.NodeName == cfg.Topology.NodeName || ep.NodeName == "" {
				endpoints = append(endpoints, ep.Addr.Addr())
			}
		}
	}
	type src struct {
		ip     netip.Addr
		origin trace.Origin
	}
	var srcs []src
	if cfg.Family == v1.IPv6Protocol {
		srcs = []src{{netip.MustParseAddr("2001:db8:1::5"), trace.Incoming}, {netip.MustParseAddr("2001:db8:2::5"), trace.Incoming}, {netip.MustParseAddr("2001:db8::100"), trace.Incoming}}
	} else {
		// 198.51.100.90: a pod of node2 that is no endpoint (node2's pods
		// reach Services through node2's rules; see above).
		srcs = []src{{netip.MustParseAddr(podOnNode1), trace.Incoming}, {netip.MustParseAddr("198.51.100.90"), trace.Incoming},
			{netip.MustParseAddr(outsideIP), trace.Incoming}, {netip.MustParseAddr(farAwayIP), trace.Incoming}}
	}
	for _, ip := range cfg.NodeIPs {
		srcs = append(srcs, src{ip, trace.Local})
	}
	for _, ip := range endpoints {
		srcs = append(srcs, src{ip, trace.Incoming})
	}
	var out []trace.Packet
	for _, d := range dsts {
		for _, s := range srcs {
			if d.ip.IsLoopback() {
				s = src{d.ip, trace.Local}
			}
			out = append(out, trace.Packet{Src: s.ip, Dst: d.ip, DstPort: d.port, Protocol: d.proto, SrcPort: 40000, Origin: s.origin})
		}
	}
	return out
}

// affinityLists are the recent lists a client may already be in: one per
// endpoint (named after its KUBE-SEP chain in both layouts).
func affinityLists(snap *model.Snapshot) []string {
	var out []string
	for name, sp := range snap.Services {
		if sp.StickySeconds == 0 {
			continue
		}
		for _, ep := range snap.Endpoints[name] {
			out = append(out, rules.EndpointChain(name, ep.String()))
		}
	}
	slices.Sort(out)
	return out
}

// outcomeSummary is the outcomes without their paths, in a stable order.
func outcomeSummary(outcomes []trace.Outcome) string {
	var parts []string
	for _, o := range outcomes {
		parts = append(parts, fmt.Sprintf("%s %s masq=%v", o.Verdict, o.Endpoint, o.Masquerade))
	}
	slices.Sort(parts)
	return strings.Join(slices.Compact(parts), "; ")
}
