package explain

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/svcproxy/svcproxy/iptables"
	"github.com/svcproxy/svcproxy/iptables/trace"
	"github.com/svcproxy/svcproxy/proxier/explain/explaintest"
	"github.com/svcproxy/svcproxy/proxier/host"
	"github.com/svcproxy/svcproxy/proxier/model"
	"github.com/svcproxy/svcproxy/proxier/nodeconfig"
	"github.com/svcproxy/svcproxy/proxier/objfile"
	"github.com/svcproxy/svcproxy/proxier/rules"
	v1 "k8s.io/api/core/v1"
)

// TestExplainLiveFake runs the live path against fakes: rules from the
// renderer, a set, and a node without a default route.
func TestExplainLiveFake(t *testing.T) {
	objs, err := objfile.Load("../../manifests/examples", nil)
	if err != nil {
		t.Fatal(err)
	}
	settings := nodeconfig.Settings{MasqueradeBit: 14, DetectLocalMode: nodeconfig.LocalModeClusterCIDR,
		ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("10.0.0.0/8")}} // two CIDRs: a set
	cfg := (&nodeconfig.Builder{Settings: settings, Family: v1.IPv4Protocol, NodeName: "node1", RandomFully: true}).Build(nil)
	snap, err := model.BuildSnapshot(objs.Services, objs.EndpointSlices, v1.IPv4Protocol)
	if err != nil {
		t.Fatal(err)
	}
	saved := rules.WithJumps(rules.Render(snap, cfg, rules.RenderOptions{Full: true}).Data, rules.JumpsFor(cfg))
	fake := iptables.NewFake(iptables.IPv4)
	if err := fake.Restore(context.Background(), saved, iptables.RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	var listed []string
	l := LiveNode{
		IPTables: func(context.Context, iptables.Family) (iptables.Interface, error) { return fake, nil },
		SetMembers: func(name string) ([]netip.Prefix, error) {
			listed = append(listed, name)
			return cfg.IPSets[name], nil
		},
		Addrs: func() ([]host.IfaceAddr, error) {
			return []host.IfaceAddr{{Iface: "lo", Prefix: netip.MustParsePrefix("127.0.0.1/8")}, {Iface: "eth0", Prefix: netip.MustParsePrefix("192.0.2.11/24")}}, nil
		},
		Node: func() (Node, error) {
			return Node{Routes: routesOnly{"198.51.100.0/24": "cbr0", "192.0.2.0/24": "eth0"}, Sysctls: sysctls{"net.ipv4.ip_forward": "1"}, BridgesKnown: true}, nil
		},
	}
	p := trace.Packet{Dst: netip.MustParseAddr("203.0.113.10"), DstPort: 80, Protocol: "tcp", Origin: trace.Local}
	rep, err := Live(context.Background(), p, l)
	if err != nil {
		t.Fatal(err)
	}
	if len(listed) != 1 || listed[0] != "SVCPROXY-POD-CIDRS" {
		t.Errorf("sets listed: %v", listed)
	}
	if rep.Status != StatusFail || !strings.Contains(rep.Verdict, "FAIL: no route to 203.0.113.10") || rep.Packet.Src != "192.0.2.11" {
		t.Errorf("report:\n%s", rep.Text())
	}
	// From a pod: the incoming interface comes from the route back.
	p = trace.Packet{Src: netip.MustParseAddr("198.51.100.4"), Dst: netip.MustParseAddr("203.0.113.10"), DstPort: 80, Protocol: "tcp", Origin: trace.Incoming}
	rep, err = Live(context.Background(), p, l)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Status != StatusOK || rep.Packet.InIface != "cbr0" || len(rep.Endpoints()) != 3 {
		t.Errorf("report:\n%s", rep.Text())
	}
	// Live explain reads chain by chain, never a whole table (which takes
	// minutes, or crashes, on a node of 100,000 chains).
	if n := fake.Saves(); n != 0 {
		t.Errorf("live explain called the whole-table Save %d times", n)
	}
	if rep.Rules.Source != "live" || rep.Rules.ChainsRead == 0 {
		t.Errorf("rules info %+v", rep.Rules)
	}
}

type routesOnly map[string]string

func (r routesOnly) RouteGet(dst netip.Addr) (host.Route, error) {
	for p, dev := range r {
		if netip.MustParsePrefix(p).Contains(dst) {
			return host.Route{Iface: dev}, nil
		}
	}
	return host.Route{}, errors.New("network is unreachable")
}

type sysctls map[string]string

func (s sysctls) Sysctl(name string) (string, error) { return s[name], nil }

// failingChain is a live node whose iptables cannot read one chain.
type failingChain struct {
	*iptables.Fake
	chain string
}

func (f failingChain) SaveChain(ctx context.Context, table iptables.Table, chain string) ([]byte, error) {
	if chain == f.chain {
		return nil, errors.New("iptables-nft -t nat -S " + chain + ": exit status 4: Resource temporarily unavailable")
	}
	return f.Fake.SaveChain(ctx, table, chain)
}

// A chain that cannot be read is never taken as empty: live explain fails
// with the read's error, naming the chain. A set that cannot be read makes
// the answer uncertain, naming the set and the error.
func TestExplainLiveReadErrors(t *testing.T) {
	fake := iptables.NewFake(iptables.IPv4)
	if err := fake.Restore(context.Background(), []byte(sampleRules), iptables.RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	node := func(ipt iptables.Interface) LiveNode {
		return LiveNode{
			IPTables:   func(context.Context, iptables.Family) (iptables.Interface, error) { return ipt, nil },
			SetMembers: func(string) ([]netip.Prefix, error) { return nil, errors.New("netlink: operation not permitted") },
			Addrs: func() ([]host.IfaceAddr, error) {
				return []host.IfaceAddr{{Iface: "eth0", Prefix: netip.MustParsePrefix("192.0.2.11/24")}}, nil
			},
			Node: func() (Node, error) { return Node{Routes: goodNode, Sysctls: goodSysctls, BridgesKnown: true}, nil },
		}
	}
	p := trace.Packet{Src: netip.MustParseAddr("198.51.100.3"), Dst: netip.MustParseAddr("203.0.113.10"), DstPort: 80, Protocol: "tcp", Origin: trace.Incoming}
	_, err := Live(context.Background(), p, node(failingChain{fake, "KUBE-SVC-X"}))
	if err == nil || !strings.Contains(err.Error(), "reading chain nat/KUBE-SVC-X: iptables-nft -t nat -S KUBE-SVC-X: exit status 4") {
		t.Errorf("unreadable chain: %v", err)
	}

	if err := fake.Restore(context.Background(), []byte("*filter\n-A FORWARD -m set --match-set BLOCKED src -j DROP\nCOMMIT\n"), iptables.RestoreOptions{NoFlush: true}); err != nil {
		t.Fatal(err)
	}
	rep, err := Live(context.Background(), p, node(fake))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Status != StatusUncertain || !strings.Contains(rep.Verdict, "set BLOCKED: reading it failed: netlink: operation not permitted") {
		t.Errorf("unreadable set: %s %q", rep.Status, rep.Verdict)
	}
}

// Live explain on a node of many Services, in both layouts: svcproxy's
// compact one (KUBE-SERVICES dispatches to KUBE-DISPATCH-* buckets by address
// mask) and kube-proxy's (one KUBE-SERVICES rule per destination, a
// KUBE-SEP chain per endpoint). It reads a handful of chains either way,
// never a whole table.
func TestExplainLiveLayouts(t *testing.T) {
	svcs, slices := explaintest.Services(600)
	snap, err := model.BuildSnapshot(svcs, slices, v1.IPv4Protocol)
	if err != nil {
		t.Fatal(err)
	}
	for _, layout := range []string{"compact", "kube-proxy"} {
		t.Run(layout, func(t *testing.T) {
			cfg := (&nodeconfig.Builder{Settings: nodeconfig.Settings{MasqueradeBit: 14, DetectLocalMode: nodeconfig.LocalModeClusterCIDR, RuleLayout: layout},
				Family: v1.IPv4Protocol, NodeName: "node1", RandomFully: true}).Build(nil)
			fake := iptables.NewFake(iptables.IPv4)
			if err := fake.Restore(context.Background(), rules.WithJumps(rules.Render(snap, cfg, rules.RenderOptions{Full: true}).Data, rules.JumpsFor(cfg)), iptables.RestoreOptions{}); err != nil {
				t.Fatal(err)
			}
			l := LiveNode{
				IPTables:   func(context.Context, iptables.Family) (iptables.Interface, error) { return fake, nil },
				SetMembers: func(string) ([]netip.Prefix, error) { return nil, nil },
				Addrs: func() ([]host.IfaceAddr, error) {
					return []host.IfaceAddr{{Iface: "eth0", Prefix: netip.MustParsePrefix("192.0.2.11/24")}}, nil
				},
				Node: func() (Node, error) { return Node{Routes: goodNode, Sysctls: goodSysctls, BridgesKnown: true}, nil },
			}
			dst := explaintest.ServiceIP(14)
			rep, err := Live(context.Background(), trace.Packet{Dst: dst, DstPort: 1005, Protocol: "tcp", SrcPort: 40000, Origin: trace.Local}, l)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Status != StatusOK || rep.Service != "bench/svc-14:p5" || len(rep.Endpoints()) != 2 {
				t.Errorf("report:\n%s", rep.Text())
			}
			chains, _ := fake.ListChains(context.Background(), iptables.TableNAT)
			if fake.Saves() != 0 || rep.Rules.ChainsRead > 30 {
				t.Errorf("read %d chains of %d in nat, %d whole-table saves", rep.Rules.ChainsRead, len(chains), fake.Saves())
			}
		})
	}
}
