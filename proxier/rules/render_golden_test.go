package rules_test

import (
	"bytes"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/svcproxy/svcproxy/iptables"
	"github.com/svcproxy/svcproxy/proxier/model"
	"github.com/svcproxy/svcproxy/proxier/model/testobj"
	"github.com/svcproxy/svcproxy/proxier/rules"
	"github.com/svcproxy/svcproxy/proxier/rules/rulestest"
	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/golden")

// layouts are the rule layouts every scenario is rendered in; goldens of the
// default (compact) layout are testdata/golden/<name>.golden, those of
// kube-proxy's testdata/golden/kube-proxy/<name>.golden.
var layouts = []rules.Layout{rules.LayoutCompact, rules.LayoutKubeProxy}

func goldenPath(layout rules.Layout, name string) string {
	if layout == rules.LayoutKubeProxy {
		return filepath.Join("testdata", "golden", "kube-proxy", name+".golden")
	}
	return filepath.Join("testdata", "golden", name+".golden")
}

// scenario is one renderer input.
type scenario struct {
	name     string
	services []*v1.Service
	slices   []*discovery.EndpointSlice
	config   func(*rules.NodeConfig)
	opts     rules.RenderOptions
}

// input is the scenario's snapshot and node configuration in layout.
func (s scenario) input(t *testing.T, layout rules.Layout) (*model.Snapshot, *rules.NodeConfig) {
	t.Helper()
	cfg := rulestest.NodeConfig()
	cfg.Layout = layout
	if s.config != nil {
		s.config(cfg)
	}
	snap, err := model.BuildSnapshot(s.services, s.slices, cfg.Family)
	if err != nil {
		t.Fatalf("BuildSnapshot: %v", err)
	}
	return snap, cfg
}

// render renders the scenario in layout. A partial scenario (Changed set)
// renders over the Index of a full render of the same objects.
func (s scenario) render(t *testing.T, layout rules.Layout) *rules.Rendered {
	t.Helper()
	snap, cfg := s.input(t, layout)
	opts := s.opts
	if opts.Changed == nil {
		opts.Full = true
	} else if !opts.Full && opts.Previous == nil {
		opts.Previous = rules.Render(snap, cfg, rules.RenderOptions{Full: true}).Index
	}
	return rules.Render(snap, cfg, opts)
}

var (
	webService = testobj.WebService()
	webSlice   = testobj.WebSlice()
)

func scenarios() []scenario {
	return []scenario{
		{name: "clusterip", services: []*v1.Service{webService}, slices: []*discovery.EndpointSlice{webSlice}},
		{name: "clusterip-no-local-detector", services: []*v1.Service{webService}, slices: []*discovery.EndpointSlice{webSlice},
			config: func(c *rules.NodeConfig) { c.LocalDetector = rules.NoLocalDetector() }},
		{name: "masquerade-all-bit5", services: []*v1.Service{webService}, slices: []*discovery.EndpointSlice{webSlice},
			config: func(c *rules.NodeConfig) { c.MasqueradeAll = true; c.MasqueradeBit = 5; c.RandomFully = false }},
		{name: "multiple-cluster-cidrs", services: []*v1.Service{webService}, slices: []*discovery.EndpointSlice{webSlice},
			config: func(c *rules.NodeConfig) {
				c.LocalDetector = rules.DetectBySet(rulestest.PodSet)
			}},
		{name: "nodeport", services: []*v1.Service{testobj.Service("demo", "shop", "203.0.113.20", testobj.NodePort("http", v1.ProtocolTCP, 80, 30080))},
			slices: []*discovery.EndpointSlice{testobj.Slice("demo", "shop", "shop-1", testobj.TCPPort("http", 8080), testobj.Endpoint("198.51.100.4", testobj.OnNode("node1")), testobj.Endpoint("198.51.100.67", testobj.OnNode("node2")))}},
		{name: "nodeport-addresses", services: []*v1.Service{testobj.Service("demo", "shop", "203.0.113.20", testobj.NodePort("http", v1.ProtocolTCP, 80, 30080))},
			slices: []*discovery.EndpointSlice{testobj.Slice("demo", "shop", "shop-1", testobj.TCPPort("http", 8080), testobj.Endpoint("198.51.100.4", testobj.OnNode("node1")))},
			config: func(c *rules.NodeConfig) {
				c.NodePortAddresses = []netip.Addr{netip.MustParseAddr("192.0.2.11"), netip.MustParseAddr("127.0.0.1")}
				c.LocalhostNodePorts = false
			}},
		{name: "udp-sctp", services: []*v1.Service{testobj.Service("kube-system", "dns", "203.0.113.53", testobj.Port("dns", v1.ProtocolUDP, 53), testobj.Port("dns-tcp", v1.ProtocolTCP, 53), testobj.Port("sig", v1.ProtocolSCTP, 3868))},
			slices: []*discovery.EndpointSlice{testobj.Slice("kube-system", "dns", "dns-1",
				[]testobj.SlicePort{{Name: "dns", Proto: v1.ProtocolUDP, Port: 5353}, {Name: "dns-tcp", Proto: v1.ProtocolTCP, Port: 5353}, {Name: "sig", Proto: v1.ProtocolSCTP, Port: 3868}},
				testobj.Endpoint("198.51.100.5", testobj.OnNode("node1")), testobj.Endpoint("198.51.100.68", testobj.OnNode("node2")))}},
		{name: "no-endpoints", services: []*v1.Service{
			testobj.Service("demo", "empty", "203.0.113.30", testobj.Port("http", v1.ProtocolTCP, 80)),
			testobj.Service("demo", "empty-np", "203.0.113.31", testobj.NodePort("http", v1.ProtocolTCP, 80, 30031), testobj.ExternalIPs("203.0.113.131")),
		}, slices: []*discovery.EndpointSlice{testobj.Slice("demo", "empty", "empty-1", testobj.TCPPort("http", 8080))}},
		{name: "not-ready-only", services: []*v1.Service{webService},
			slices: []*discovery.EndpointSlice{testobj.Slice("demo", "web", "web-1", testobj.TCPPort("http", 8080), testobj.Endpoint("198.51.100.2", testobj.NotReady()))}},
		{name: "terminating-fallback", services: []*v1.Service{webService},
			slices: []*discovery.EndpointSlice{testobj.Slice("demo", "web", "web-1", testobj.TCPPort("http", 8080),
				testobj.Endpoint("198.51.100.2", testobj.Terminating(true)), testobj.Endpoint("198.51.100.3", testobj.Terminating(false)))}},
		{name: "external-local", services: []*v1.Service{testobj.Service("demo", "lb", "203.0.113.40",
			testobj.NodePort("http", v1.ProtocolTCP, 80, 30040), testobj.LoadBalancer("203.0.113.140"), testobj.ExternalLocal(31040))},
			slices: []*discovery.EndpointSlice{testobj.Slice("demo", "lb", "lb-1", testobj.TCPPort("http", 8080),
				testobj.Endpoint("198.51.100.6", testobj.OnNode("node1")), testobj.Endpoint("198.51.100.70", testobj.OnNode("node2")))}},
		{name: "external-local-none-here", services: []*v1.Service{testobj.Service("demo", "lb", "203.0.113.40",
			testobj.NodePort("http", v1.ProtocolTCP, 80, 30040), testobj.LoadBalancer("203.0.113.140"), testobj.ExternalLocal(31040))},
			slices: []*discovery.EndpointSlice{testobj.Slice("demo", "lb", "lb-1", testobj.TCPPort("http", 8080), testobj.Endpoint("198.51.100.70", testobj.OnNode("node2")))}},
		{name: "internal-local", services: []*v1.Service{testobj.Service("demo", "web", "203.0.113.10", testobj.Port("http", v1.ProtocolTCP, 80), testobj.InternalLocal())},
			slices: []*discovery.EndpointSlice{webSlice}},
		{name: "internal-local-none-here", services: []*v1.Service{testobj.Service("demo", "web", "203.0.113.10", testobj.Port("http", v1.ProtocolTCP, 80), testobj.InternalLocal())},
			slices: []*discovery.EndpointSlice{testobj.Slice("demo", "web", "web-1", testobj.TCPPort("http", 8080), testobj.Endpoint("198.51.100.66", testobj.OnNode("node2")))}},
		{name: "loadbalancer-source-ranges", services: []*v1.Service{testobj.Service("demo", "lb", "203.0.113.40",
			testobj.NodePort("http", v1.ProtocolTCP, 80, 30040), testobj.LoadBalancer("203.0.113.140"), testobj.SourceRanges("192.0.2.0/24", "203.0.113.192/26"))},
			slices: []*discovery.EndpointSlice{testobj.Slice("demo", "lb", "lb-1", testobj.TCPPort("http", 8080), testobj.Endpoint("198.51.100.6", testobj.OnNode("node1")))}},
		{name: "external-ips", services: []*v1.Service{testobj.Service("demo", "web", "203.0.113.10", testobj.Port("http", v1.ProtocolTCP, 80), testobj.ExternalIPs("203.0.113.130"))},
			slices: []*discovery.EndpointSlice{webSlice}},
		// externalTrafficPolicy Local counts for a ClusterIP Service with
		// externalIPs too (issue 8): KUBE-EXT-* and KUBE-SVL-*, as kube-proxy.
		{name: "external-ips-local", services: []*v1.Service{testobj.Service("demo", "web", "203.0.113.10", testobj.Port("http", v1.ProtocolTCP, 80),
			testobj.ExternalIPs("203.0.113.130"), testobj.ExternalLocal(0))},
			slices: []*discovery.EndpointSlice{webSlice}},
		{name: "external-ips-local-none-here", services: []*v1.Service{testobj.Service("demo", "web", "203.0.113.10", testobj.Port("http", v1.ProtocolTCP, 80),
			testobj.ExternalIPs("203.0.113.130"), testobj.ExternalLocal(0))},
			slices: []*discovery.EndpointSlice{testobj.Slice("demo", "web", "web-1", testobj.TCPPort("http", 8080), testobj.Endpoint("198.51.100.66", testobj.OnNode("node2")))}},
		// NodePorts only on a non-loopback address: no localhost NodePort can
		// exist, so no KUBE-FIREWALL chain (kube-proxy writes none either).
		{name: "nodeport-addresses-no-loopback", services: []*v1.Service{testobj.Service("demo", "shop", "203.0.113.20", testobj.NodePort("http", v1.ProtocolTCP, 80, 30080))},
			slices: []*discovery.EndpointSlice{testobj.Slice("demo", "shop", "shop-1", testobj.TCPPort("http", 8080), testobj.Endpoint("198.51.100.4", testobj.OnNode("node1")))},
			config: func(c *rules.NodeConfig) { c.NodePortAddresses = []netip.Addr{netip.MustParseAddr("192.0.2.11")} }},
		// A node whose kernel has kube-proxy's nfacct counters: KUBE-FORWARD
		// counts the INVALID packets it drops, and each NodePort gets a
		// 127.0.0.0/8 jump first that counts localhost NodePort packets.
		{name: "nfacct-counters", services: []*v1.Service{testobj.Service("demo", "shop", "203.0.113.20", testobj.NodePort("http", v1.ProtocolTCP, 80, 30080))},
			slices: []*discovery.EndpointSlice{testobj.Slice("demo", "shop", "shop-1", testobj.TCPPort("http", 8080), testobj.Endpoint("198.51.100.4", testobj.OnNode("node1")))},
			config: func(c *rules.NodeConfig) {
				c.NFAcct = []string{iptables.NFAcctInvalidDropped, iptables.NFAcctLocalhostNodePorts}
			}},
		{name: "session-affinity", services: []*v1.Service{testobj.Service("demo", "web", "203.0.113.10", testobj.Port("http", v1.ProtocolTCP, 80), testobj.ClientIPAffinity(600))},
			slices: []*discovery.EndpointSlice{webSlice}},
		{name: "topology-zone-hints", services: []*v1.Service{webService},
			slices: []*discovery.EndpointSlice{testobj.Slice("demo", "web", "web-1", testobj.TCPPort("http", 8080),
				testobj.Endpoint("198.51.100.2", testobj.OnNode("node1"), testobj.ZoneHints("zone-a")), testobj.Endpoint("198.51.100.66", testobj.OnNode("node2"), testobj.ZoneHints("zone-b")))}},
		{name: "skipped-services", services: []*v1.Service{
			testobj.Service("demo", "headless", "None", testobj.Port("http", v1.ProtocolTCP, 80)),
			testobj.Service("demo", "other-proxy", "203.0.113.50", testobj.Port("http", v1.ProtocolTCP, 80), testobj.Labels(model.LabelServiceProxyName, "someone-else")),
			func() *v1.Service {
				s := testobj.Service("demo", "extname", "", testobj.Port("http", v1.ProtocolTCP, 80))
				s.Spec.Type = v1.ServiceTypeExternalName
				return s
			}(),
		}},
		{name: "partial-sync", services: []*v1.Service{webService, testobj.Service("demo", "shop", "203.0.113.20", testobj.Port("http", v1.ProtocolTCP, 80))},
			slices: []*discovery.EndpointSlice{webSlice, testobj.Slice("demo", "shop", "shop-1", testobj.TCPPort("http", 8080), testobj.Endpoint("198.51.100.4"))},
			opts:   rules.RenderOptions{Changed: map[types.NamespacedName]bool{{Namespace: "demo", Name: "shop"}: true}}},
		{name: "pod-egress", services: []*v1.Service{webService}, slices: []*discovery.EndpointSlice{webSlice},
			config: func(c *rules.NodeConfig) {
				c.PodEgress = &rules.PodEgressMasquerade{PodSet: rulestest.PodSet, NoMasqSet: "SVCPROXY-NO-MASQ"}
			}},
		{name: "ipv6", services: []*v1.Service{testobj.Service("demo", "web6", "2001:db8:5::10", testobj.NodePort("http", v1.ProtocolTCP, 80, 30080), testobj.NodePort("alt", v1.ProtocolTCP, 8080, 30081))},
			slices: []*discovery.EndpointSlice{testobj.Slice("demo", "web6", "web6-1", []testobj.SlicePort{{Name: "http", Proto: v1.ProtocolTCP, Port: 8080}, {Name: "alt", Proto: v1.ProtocolTCP, Port: 8081}},
				testobj.Endpoint("2001:db8:1::2", testobj.OnNode("node1")), testobj.Endpoint("2001:db8:1::3", testobj.OnNode("node2")))},
			config: func(c *rules.NodeConfig) {
				c.Family = v1.IPv6Protocol
				c.NodeIPs = []netip.Addr{netip.MustParseAddr("2001:db8::11")}
				c.LocalDetector = rules.DetectByCIDR(netip.MustParsePrefix("2001:db8:1::/64"))
			}},
	}
}

func TestRenderGolden(t *testing.T) {
	for _, layout := range layouts {
		for _, sc := range scenarios() {
			t.Run(string(layout)+"/"+sc.name, func(t *testing.T) {
				checkGolden(t, goldenPath(layout, sc.name), sc.render(t, layout).Data)
			})
		}
	}
}

// checkGolden compares got with the golden file at path (with -update,
// writes it instead).
func checkGolden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./proxier/rules -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("output differs from %s (re-run with -update after checking):\n%s", path, lineDiff(want, got))
	}
}

// TestRenderDeterministic renders every scenario twice with freshly built
// inputs (fresh maps, so a fresh iteration order) and demands identical bytes.
func TestRenderDeterministic(t *testing.T) {
	for _, layout := range layouts {
		for _, sc := range scenarios() {
			first := sc.render(t, layout).Data
			for i := 0; i < 5; i++ {
				if again := sc.render(t, layout).Data; !bytes.Equal(first, again) {
					t.Fatalf("%s/%s: output changed between runs:\n%s", layout, sc.name, lineDiff(first, again))
				}
			}
		}
	}
}

// lineDiff shows the lines only in want (-) and only in got (+).
func lineDiff(want, got []byte) string {
	w := map[string]int{}
	for _, l := range bytes.Split(want, []byte("\n")) {
		w[string(l)]++
	}
	var out bytes.Buffer
	for _, l := range bytes.Split(got, []byte("\n")) {
		if w[string(l)] > 0 {
			w[string(l)]--
			continue
		}
		out.WriteString("+ " + string(l) + "\n")
	}
	for l, n := range w {
		for ; n > 0; n-- {
			out.WriteString("- " + l + "\n")
		}
	}
	return out.String()
}
