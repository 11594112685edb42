package proxier

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"

	"github.com/svcproxy/svcproxy/iptables"
	"github.com/svcproxy/svcproxy/proxier/model/testobj"
	"github.com/svcproxy/svcproxy/proxier/rules"
	"github.com/svcproxy/svcproxy/proxier/rules/rulestest"
)

// recorder is a Handlers that lists the calls it gets.
type recorder struct{ calls []string }

func (r *recorder) add(s string) { r.calls = append(r.calls, s) }

func (r *recorder) OnServiceAdd(s *v1.Service)       { r.add("svc-add " + s.Name) }
func (r *recorder) OnServiceUpdate(_, s *v1.Service) { r.add("svc-update " + s.Name) }
func (r *recorder) OnServiceDelete(s *v1.Service)    { r.add("svc-delete " + s.Name) }
func (r *recorder) OnServicesSynced()                { r.add("svc-synced") }
func (r *recorder) OnEndpointSlicesSynced()          { r.add("slices-synced") }
func (r *recorder) OnEndpointSliceAdd(s *discovery.EndpointSlice) {
	r.add("slice-add " + s.Name)
}
func (r *recorder) OnEndpointSliceUpdate(_, s *discovery.EndpointSlice) {
	r.add("slice-update " + s.Name)
}
func (r *recorder) OnEndpointSliceDelete(s *discovery.EndpointSlice) {
	r.add("slice-delete " + s.Name)
}
func (r *recorder) OnNodeChange(n *v1.Node) {
	if n == nil {
		r.add("node nil")
		return
	}
	r.add("node " + n.Name)
}

func TestMultiHandlersRoutesSlicesByAddressType(t *testing.T) {
	v4, v6 := &recorder{}, &recorder{}
	m := MultiHandlers{v1.IPv4Protocol: v4, v1.IPv6Protocol: v6}

	svc := testobj.Service("demo", "web", "203.0.113.10")
	s4 := testobj.Slice("demo", "web", "web-v4", testobj.TCPPort("http", 8080), testobj.Endpoint("198.51.100.2"))
	s6 := testobj.Slice("demo", "web", "web-v6", testobj.TCPPort("http", 8080), testobj.Endpoint("2001:db8:1::2"))
	fqdn := testobj.Slice("demo", "web", "web-fqdn", testobj.TCPPort("http", 8080))
	fqdn.AddressType = discovery.AddressTypeFQDN
	node := &v1.Node{}
	node.Name = "node1"

	m.OnServiceAdd(svc)
	m.OnServiceUpdate(svc, svc)
	m.OnServiceDelete(svc)
	m.OnServicesSynced()
	for _, s := range []*discovery.EndpointSlice{s4, s6, fqdn} {
		m.OnEndpointSliceAdd(s)
		m.OnEndpointSliceUpdate(s, s)
		m.OnEndpointSliceDelete(s)
	}
	m.OnEndpointSlicesSynced()
	m.OnNodeChange(node)
	m.OnNodeChange(nil)

	common := []string{"svc-add web", "svc-update web", "svc-delete web", "svc-synced"}
	tail := []string{"slices-synced", "node node1", "node nil"}
	want4 := slices.Concat(common, []string{"slice-add web-v4", "slice-update web-v4", "slice-delete web-v4"}, tail)
	want6 := slices.Concat(common, []string{"slice-add web-v6", "slice-update web-v6", "slice-delete web-v6"}, tail)
	if !slices.Equal(v4.calls, want4) {
		t.Errorf("IPv4 handlers got\n  %q\nwant\n  %q", v4.calls, want4)
	}
	if !slices.Equal(v6.calls, want6) {
		t.Errorf("IPv6 handlers got\n  %q\nwant\n  %q", v6.calls, want6)
	}
}

// On a single-stack node the other family's slices go nowhere (and nothing
// panics on the missing entry).
func TestMultiHandlersSingleFamily(t *testing.T) {
	v4 := &recorder{}
	m := MultiHandlers{v1.IPv4Protocol: v4}
	m.OnServiceAdd(testobj.Service("demo", "web", "203.0.113.10"))
	m.OnEndpointSliceAdd(testobj.Slice("demo", "web", "web-v6", testobj.TCPPort("http", 8080), testobj.Endpoint("2001:db8:1::2")))
	m.OnEndpointSliceAdd(testobj.Slice("demo", "web", "web-v4", testobj.TCPPort("http", 8080), testobj.Endpoint("198.51.100.2")))
	if want := []string{"svc-add web", "slice-add web-v4"}; !slices.Equal(v4.calls, want) {
		t.Errorf("IPv4 handlers got %q, want %q", v4.calls, want)
	}
	MultiHandlers{}.OnEndpointSliceAdd(testobj.Slice("demo", "web", "web-v4", testobj.TCPPort("http", 8080), testobj.Endpoint("198.51.100.2")))
}

// Two real Proxiers behind one fan-out, as the daemon runs them on a
// dual-stack node: a dual-stack Service is programmed in each family's
// tables with that family's cluster IP and endpoints only.
func TestMultiHandlersDualStackProxiers(t *testing.T) {
	newProxier := func(family v1.IPFamily, ipt *iptables.Fake, nc *rules.NodeConfig) *Proxier {
		t.Helper()
		p, err := New(Config{
			IPTables:      ipt,
			NodeConfig:    func(*v1.Node) *rules.NodeConfig { return nc },
			SyncPeriod:    30e9,
			MinSyncPeriod: 1e9,
		})
		if err != nil {
			t.Fatal(err)
		}
		if p.family != family {
			t.Fatalf("proxier family %s, want %s", p.family, family)
		}
		return p
	}
	nc6 := rulestest.NodeConfig()
	nc6.Family = v1.IPv6Protocol
	nc6.NodeIPs = []netip.Addr{netip.MustParseAddr("2001:db8::11")}
	nc6.LocalDetector = rules.DetectByCIDR(netip.MustParsePrefix("2001:db8:1::/64"))
	nc6.LocalhostNodePorts = false
	ipt4, ipt6 := iptables.NewFake(iptables.IPv4), iptables.NewFake(iptables.IPv6)
	p4 := newProxier(v1.IPv4Protocol, ipt4, rulestest.NodeConfig())
	p6 := newProxier(v1.IPv6Protocol, ipt6, nc6)
	m := MultiHandlers{v1.IPv4Protocol: p4, v1.IPv6Protocol: p6}

	dual := testobj.Service("demo", "web", "203.0.113.10", testobj.NodePort("http", v1.ProtocolTCP, 80, 30080))
	dual.Spec.ClusterIPs = []string{"203.0.113.10", "2001:db8:5::10"}
	dual.Spec.IPFamilies = []v1.IPFamily{v1.IPv4Protocol, v1.IPv6Protocol}
	only4 := testobj.Service("demo", "legacy", "203.0.113.20", testobj.Port("http", v1.ProtocolTCP, 80))
	m.OnServicesSynced()
	m.OnEndpointSlicesSynced()
	m.OnServiceAdd(dual)
	m.OnServiceAdd(only4)
	m.OnEndpointSliceAdd(testobj.Slice("demo", "web", "web-v4", testobj.TCPPort("http", 8080), testobj.Endpoint("198.51.100.2")))
	m.OnEndpointSliceAdd(testobj.Slice("demo", "web", "web-v6", testobj.TCPPort("http", 8080), testobj.Endpoint("2001:db8:1::2"), testobj.Endpoint("2001:db8:1::3")))
	m.OnEndpointSliceAdd(testobj.Slice("demo", "legacy", "legacy-v4", testobj.TCPPort("http", 8080), testobj.Endpoint("198.51.100.3")))
	mustSync(t, p4)
	mustSync(t, p6)

	rules4, rules6 := ipt4.Dump().String(), ipt6.Dump().String()
	for _, want := range []string{"-d 203.0.113.10", "198.51.100.2:8080", "-d 203.0.113.20", "--dport 30080"} {
		if !strings.Contains(rules4, want) {
			t.Errorf("IPv4 rules lack %q:\n%s", want, rules4)
		}
	}
	for _, want := range []string{"-d 2001:db8:5::10", "[2001:db8:1::2]:8080", "[2001:db8:1::3]:8080", "--dport 30080"} {
		if !strings.Contains(rules6, want) {
			t.Errorf("IPv6 rules lack %q:\n%s", want, rules6)
		}
	}
	if strings.Contains(rules4, "2001:db8") {
		t.Errorf("IPv4 rules mention IPv6 addresses:\n%s", rules4)
	}
	for _, bad := range []string{"203.0.113.", "198.51.100.", "demo/legacy"} {
		if strings.Contains(rules6, bad) {
			t.Errorf("IPv6 rules mention %q (an IPv4 address or an IPv4-only service):\n%s", bad, rules6)
		}
	}
	// Each family's tracker saw only its own slices.
	if total, _ := p4.tracker.Counts(); total.EndpointChanges != 2 {
		t.Errorf("IPv4 proxier saw %d endpoint changes, want 2 (its two slices)", total.EndpointChanges)
	}
	if total, _ := p6.tracker.Counts(); total.EndpointChanges != 1 {
		t.Errorf("IPv6 proxier saw %d endpoint changes, want 1 (its one slice)", total.EndpointChanges)
	}
}
