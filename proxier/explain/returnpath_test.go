package explain

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"

	"github.com/svcproxy/svcproxy/iptables"
	"github.com/svcproxy/svcproxy/iptables/trace"
	"github.com/svcproxy/svcproxy/proxier/host"
	"github.com/svcproxy/svcproxy/proxier/model"
	"github.com/svcproxy/svcproxy/proxier/model/testobj"
	"github.com/svcproxy/svcproxy/proxier/nodeconfig"
	"github.com/svcproxy/svcproxy/proxier/rules"
)

// The node: its default route (and so the route to the service
// CIDR) goes out of eth0, the other node's pods are reached over eth1 (an
// overlay or a second NIC).
var (
	twoLinkAddrs = []host.IfaceAddr{
		{Iface: "lo", Prefix: netip.MustParsePrefix("127.0.0.1/8")},
		{Iface: "eth0", Prefix: netip.MustParsePrefix("192.0.2.11/24")},
		{Iface: "eth1", Prefix: netip.MustParsePrefix("198.51.100.1/26")},
	}
	twoLinkRoutes = routeTable(`default via 192.0.2.12 dev eth0
192.0.2.0/24 dev eth0 proto kernel scope link src 192.0.2.11
198.51.100.0/26 dev eth1 proto kernel scope link src 198.51.100.1
198.51.100.64/26 via 198.51.100.65 dev eth1 onlink
`)
	strict = fakeSysctls{"net.ipv4.ip_forward": "1", "net/ipv4/conf/all/rp_filter": "1", "net/ipv4/conf/eth0/rp_filter": "1", "net/ipv4/conf/eth1/rp_filter": "1"}
)

func routeTable(text string) *host.RouteTable {
	rt, err := host.ParseIPRoute([]byte(text))
	if err != nil {
		panic(err)
	}
	rt.Addrs = twoLinkAddrs
	return rt
}

// remoteWeb renders demo/web with its one endpoint on the other node;
// clusterCIDR "" renders without --cluster-cidr.
func remoteWeb(t *testing.T, clusterCIDR string) trace.Chains {
	t.Helper()
	settings := nodeconfig.Settings{MasqueradeBit: 14, DetectLocalMode: nodeconfig.LocalModeClusterCIDR}
	if clusterCIDR != "" {
		settings.ClusterCIDRs = []netip.Prefix{netip.MustParsePrefix(clusterCIDR)}
	}
	cfg := (&nodeconfig.Builder{Settings: settings, Family: v1.IPv4Protocol, NodeName: "node1", RandomFully: true}).Build(nil)
	slice := testobj.Slice("demo", "web", "web-1", testobj.TCPPort("http", 8080), testobj.Endpoint("198.51.100.66", testobj.OnNode("node2")))
	snap, err := model.BuildSnapshot([]*v1.Service{testobj.WebService()}, []*discovery.EndpointSlice{slice}, v1.IPv4Protocol)
	if err != nil {
		t.Fatal(err)
	}
	d, err := iptables.ParseDump(rules.WithJumps(rules.Render(snap, cfg, rules.RenderOptions{Full: true}).Data, rules.JumpsFor(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	return trace.DumpChains{Dump: d}
}

// explainNode explains p on the two-link node.
func explainNode(t *testing.T, rules trace.Chains, p trace.Packet, n Node) *Report {
	t.Helper()
	local := host.AddrsOf(n.Addrs)
	if err := sourceAndInterface(&p, local, n.Routes); err != nil {
		t.Fatal(err)
	}
	ctx := trace.Context{LocalAddrs: local, IfaceAddrs: host.ByIface(n.Addrs), Route: routeIface(n.Routes), BridgesKnown: true}
	r, err := Explain(rules, ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	Check(r, ctx, p, n)
	return r
}

func fromNode(dst string, port int) trace.Packet {
	return trace.Packet{Dst: netip.MustParseAddr(dst), DstPort: port, Protocol: "tcp", SrcPort: 40000, Origin: trace.Local}
}

func TestReturnPathFromTheNode(t *testing.T) {
	node := Node{Routes: twoLinkRoutes, Sysctls: strict, Addrs: twoLinkAddrs, BridgesKnown: true}

	// The case: source from eth0's route, out by eth1, not
	// masqueraded, the reply comes back on eth0 where strict rp_filter
	// drops it.
	r := explainNode(t, remoteWeb(t, ""), fromNode("203.0.113.10", 80), node)
	if r.Status != StatusFail {
		t.Fatalf("status %s, want fail:\n%s", r.Status, r.Text())
	}
	for _, want := range []string{"eth0", "eth1", "192.0.2.11", "198.51.100.66", "net.ipv4.conf.eth0.rp_filter", "--cluster-cidr", "rp_filter=2", "route 203.0.113.10 via eth1"} {
		if !strings.Contains(r.Verdict, want) {
			t.Errorf("verdict lacks %q:\n%s", want, r.Verdict)
		}
	}
	if strings.Contains(r.Verdict, "\n") {
		t.Errorf("verdict is more than one line: %q", r.Verdict)
	}
	if len(r.ReturnPaths) != 1 {
		t.Fatalf("return paths %+v", r.ReturnPaths)
	}
	rp := r.ReturnPaths[0]
	if rp.Source != "192.0.2.11" || rp.SourceIface != "eth0" || rp.Out.Iface != "eth1" || rp.ReplyIface != "eth0" || rp.Masquerade ||
		rp.RPFilter == nil || rp.RPFilter.Value != 1 || rp.Drop == "" {
		t.Errorf("return path %+v", rp)
	}
	if !strings.Contains(r.Text(), "return path:\n  198.51.100.66:8080: from 192.0.2.11 (on eth0, chosen by the route to 203.0.113.10), out by eth1 via 198.51.100.65, not masqueraded; the reply to 192.0.2.11 comes back on eth0 (rp_filter 1 = max(net.ipv4.conf.all.rp_filter=1, net.ipv4.conf.eth0.rp_filter=1), strict): DROPPED") {
		t.Errorf("text:\n%s", r.Text())
	}

	// Fixes: loose rp_filter on the interface the reply arrives on ...
	loose := Node{Routes: twoLinkRoutes, Sysctls: with(strict, "net/ipv4/conf/eth0/rp_filter", "2"), Addrs: twoLinkAddrs, BridgesKnown: true}
	if r := explainNode(t, remoteWeb(t, ""), fromNode("203.0.113.10", 80), loose); r.Status != StatusOK {
		t.Errorf("loose rp_filter: %s\n%s", r.Status, r.Text())
	}
	// ... or --cluster-cidr, which masquerades the node's traffic: the
	// reply then comes back over eth1.
	r = explainNode(t, remoteWeb(t, "198.51.100.0/24"), fromNode("203.0.113.10", 80), node)
	if r.Status != StatusOK || len(r.ReturnPaths) != 1 || !r.ReturnPaths[0].Masquerade || r.ReturnPaths[0].ReplyIface != "eth1" || r.ReturnPaths[0].ReplyTo != "198.51.100.1" {
		t.Errorf("with --cluster-cidr: %+v\n%s", r.ReturnPaths, r.Text())
	}
	// ... or a route to the service CIDR over eth1 (the source is then
	// eth1's address).
	viaEth1 := routeTable(`default via 192.0.2.12 dev eth0
203.0.113.0/25 dev eth1 scope link
198.51.100.64/26 via 198.51.100.65 dev eth1 onlink
`)
	fixed := Node{Routes: viaEth1, Sysctls: strict, Addrs: twoLinkAddrs, BridgesKnown: true}
	if r := explainNode(t, remoteWeb(t, ""), fromNode("203.0.113.10", 80), fixed); r.Status != StatusOK || r.Packet.Src != "198.51.100.1" {
		t.Errorf("service CIDR via eth1: %s from %s\n%s", r.Status, r.Packet.Src, r.Text())
	}
}

// A reverse-path filter that cannot be read is reported with its error
// and makes the answer uncertain; without the node's addresses the way
// back cannot be followed, and the report says so.
func TestReturnPathUnknowns(t *testing.T) {
	unreadable := failingSysctls{strict, "net/ipv4/conf/eth0/rp_filter"}
	r := explainNode(t, remoteWeb(t, ""), fromNode("203.0.113.10", 80), Node{Routes: twoLinkRoutes, Sysctls: unreadable, Addrs: twoLinkAddrs, BridgesKnown: true})
	if r.Status != StatusUncertain || !strings.Contains(r.Verdict, "net.ipv4.conf.eth0.rp_filter (could not be read: permission denied)") {
		t.Errorf("unreadable rp_filter: %s %q", r.Status, r.Verdict)
	}
	r = explainNode(t, remoteWeb(t, ""), fromNode("203.0.113.10", 80), Node{Routes: twoLinkRoutes, Sysctls: strict, BridgesKnown: true})
	if !strings.Contains(strings.Join(r.Skipped, "\n"), "the way back of replies to 192.0.2.11: the interface holding it is unknown (give --addrs)") {
		t.Errorf("no addresses: skipped %q", r.Skipped)
	}
}

// Forwarded traffic: a packet arriving on an interface its source is not
// routed back by is dropped by strict rp_filter.
func TestReturnPathArrival(t *testing.T) {
	node := Node{Routes: twoLinkRoutes, Sysctls: strict, Addrs: twoLinkAddrs, BridgesKnown: true}
	p := trace.Packet{Src: netip.MustParseAddr("198.51.100.70"), Dst: netip.MustParseAddr("203.0.113.10"), DstPort: 80, Protocol: "tcp", SrcPort: 40000, Origin: trace.Incoming, InIface: "eth0"}
	r := explainNode(t, remoteWeb(t, ""), p, node)
	if r.Status != StatusFail || !strings.Contains(r.Verdict, "packets from 198.51.100.70 arriving on eth0 are dropped by reverse-path filtering (rp_filter 1 = max(net.ipv4.conf.all.rp_filter=1, net.ipv4.conf.eth0.rp_filter=1), strict)") ||
		!strings.Contains(r.Verdict, "the route back to 198.51.100.70 leaves by eth1") {
		t.Errorf("%s %q", r.Status, r.Verdict)
	}
	p.InIface = "" // arrives where the route back leaves: fine
	if r := explainNode(t, remoteWeb(t, ""), p, node); r.Status != StatusOK {
		t.Errorf("symmetric arrival: %s\n%s", r.Status, r.Text())
	}
}

type failingSysctls struct {
	fakeSysctls
	bad string
}

func (f failingSysctls) Sysctl(name string) (string, error) {
	if name == f.bad {
		return "", errors.New("permission denied")
	}
	return f.fakeSysctls.Sysctl(name)
}
