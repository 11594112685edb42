package explain

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/svcproxy/svcproxy/iptables"
	"github.com/svcproxy/svcproxy/iptables/trace"
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
	var listed []string
	l := LiveNode{
		Save: func(context.Context, iptables.Family) ([]byte, error) { return saved, nil },
		SetMembers: func(name string) ([]netip.Prefix, error) {
			listed = append(listed, name)
			return cfg.IPSets[name], nil
		},
		LocalAddrs: func() ([]netip.Addr, error) {
			return []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("192.0.2.11")}, nil
		},
		Node: func() (Node, error) {
			return Node{Routes: routesOnly{"198.51.100.0/24": "cbr0", "192.0.2.0/24": "eth0"}, Sysctls: sysctls{"net.ipv4.ip_forward": "1"}}, nil
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
