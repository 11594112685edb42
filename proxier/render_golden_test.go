package proxier

import (
	"bytes"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/golden")

// scenario is one renderer input; its golden file is testdata/golden/<name>.golden.
type scenario struct {
	name     string
	services []*v1.Service
	slices   []*discovery.EndpointSlice
	config   func(*NodeConfig)
	opts     RenderOptions
}

func (s scenario) render(t *testing.T) *Rendered {
	t.Helper()
	cfg := testNodeConfig()
	if s.config != nil {
		s.config(cfg)
	}
	snap, err := BuildSnapshot(s.services, s.slices, cfg.Family)
	if err != nil {
		t.Fatalf("BuildSnapshot: %v", err)
	}
	opts := s.opts
	if !opts.Full && opts.Changed == nil {
		opts.Full = true
	}
	return Render(snap, cfg, opts)
}

var (
	webService = service("demo", "web", "203.0.113.10", port("http", v1.ProtocolTCP, 80))
	webSlice   = slice("demo", "web", "web-1", tcpPort("http", 8080),
		endpoint("198.51.100.2", onNode("node1")), endpoint("198.51.100.3", onNode("node1")), endpoint("198.51.100.66", onNode("node2")))
)

func scenarios() []scenario {
	return []scenario{
		{name: "clusterip", services: []*v1.Service{webService}, slices: []*discovery.EndpointSlice{webSlice}},
		{name: "clusterip-no-local-detector", services: []*v1.Service{webService}, slices: []*discovery.EndpointSlice{webSlice},
			config: func(c *NodeConfig) { c.LocalDetector = NoLocalDetector() }},
		{name: "masquerade-all-bit5", services: []*v1.Service{webService}, slices: []*discovery.EndpointSlice{webSlice},
			config: func(c *NodeConfig) { c.MasqueradeAll = true; c.MasqueradeBit = 5; c.RandomFully = false }},
		{name: "multiple-cluster-cidrs", services: []*v1.Service{webService}, slices: []*discovery.EndpointSlice{webSlice},
			config: func(c *NodeConfig) {
				c.LocalDetector = DetectByClusterCIDRs([]netip.Prefix{netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("192.0.2.128/25")})
			}},
		{name: "nodeport", services: []*v1.Service{service("demo", "shop", "203.0.113.20", nodePort("http", v1.ProtocolTCP, 80, 30080))},
			slices: []*discovery.EndpointSlice{slice("demo", "shop", "shop-1", tcpPort("http", 8080), endpoint("198.51.100.4", onNode("node1")), endpoint("198.51.100.67", onNode("node2")))}},
		{name: "nodeport-addresses", services: []*v1.Service{service("demo", "shop", "203.0.113.20", nodePort("http", v1.ProtocolTCP, 80, 30080))},
			slices: []*discovery.EndpointSlice{slice("demo", "shop", "shop-1", tcpPort("http", 8080), endpoint("198.51.100.4", onNode("node1")))},
			config: func(c *NodeConfig) {
				c.NodePortAddresses = []netip.Addr{netip.MustParseAddr("192.0.2.11"), netip.MustParseAddr("127.0.0.1")}
				c.LocalhostNodePorts = false
			}},
		{name: "udp-sctp", services: []*v1.Service{service("kube-system", "dns", "203.0.113.53", port("dns", v1.ProtocolUDP, 53), port("dns-tcp", v1.ProtocolTCP, 53), port("sig", v1.ProtocolSCTP, 3868))},
			slices: []*discovery.EndpointSlice{slice("kube-system", "dns", "dns-1",
				[]slicePort{{"dns", v1.ProtocolUDP, 5353}, {"dns-tcp", v1.ProtocolTCP, 5353}, {"sig", v1.ProtocolSCTP, 3868}},
				endpoint("198.51.100.5", onNode("node1")), endpoint("198.51.100.68", onNode("node2")))}},
		{name: "no-endpoints", services: []*v1.Service{
			service("demo", "empty", "203.0.113.30", port("http", v1.ProtocolTCP, 80)),
			service("demo", "empty-np", "203.0.113.31", nodePort("http", v1.ProtocolTCP, 80, 30031), externalIPs("203.0.113.131")),
		}, slices: []*discovery.EndpointSlice{slice("demo", "empty", "empty-1", tcpPort("http", 8080))}},
		{name: "not-ready-only", services: []*v1.Service{webService},
			slices: []*discovery.EndpointSlice{slice("demo", "web", "web-1", tcpPort("http", 8080), endpoint("198.51.100.2", notReady()))}},
		{name: "terminating-fallback", services: []*v1.Service{webService},
			slices: []*discovery.EndpointSlice{slice("demo", "web", "web-1", tcpPort("http", 8080),
				endpoint("198.51.100.2", terminating(true)), endpoint("198.51.100.3", terminating(false)))}},
		{name: "external-local", services: []*v1.Service{service("demo", "lb", "203.0.113.40",
			nodePort("http", v1.ProtocolTCP, 80, 30040), loadBalancer("203.0.113.140"), externalLocal(31040))},
			slices: []*discovery.EndpointSlice{slice("demo", "lb", "lb-1", tcpPort("http", 8080),
				endpoint("198.51.100.6", onNode("node1")), endpoint("198.51.100.70", onNode("node2")))}},
		{name: "external-local-none-here", services: []*v1.Service{service("demo", "lb", "203.0.113.40",
			nodePort("http", v1.ProtocolTCP, 80, 30040), loadBalancer("203.0.113.140"), externalLocal(31040))},
			slices: []*discovery.EndpointSlice{slice("demo", "lb", "lb-1", tcpPort("http", 8080), endpoint("198.51.100.70", onNode("node2")))}},
		{name: "internal-local", services: []*v1.Service{service("demo", "web", "203.0.113.10", port("http", v1.ProtocolTCP, 80), internalLocal())},
			slices: []*discovery.EndpointSlice{webSlice}},
		{name: "internal-local-none-here", services: []*v1.Service{service("demo", "web", "203.0.113.10", port("http", v1.ProtocolTCP, 80), internalLocal())},
			slices: []*discovery.EndpointSlice{slice("demo", "web", "web-1", tcpPort("http", 8080), endpoint("198.51.100.66", onNode("node2")))}},
		{name: "loadbalancer-source-ranges", services: []*v1.Service{service("demo", "lb", "203.0.113.40",
			nodePort("http", v1.ProtocolTCP, 80, 30040), loadBalancer("203.0.113.140"), sourceRangesOpt("192.0.2.0/24", "203.0.113.192/26"))},
			slices: []*discovery.EndpointSlice{slice("demo", "lb", "lb-1", tcpPort("http", 8080), endpoint("198.51.100.6", onNode("node1")))}},
		{name: "external-ips", services: []*v1.Service{service("demo", "web", "203.0.113.10", port("http", v1.ProtocolTCP, 80), externalIPs("203.0.113.130"))},
			slices: []*discovery.EndpointSlice{webSlice}},
		{name: "session-affinity", services: []*v1.Service{service("demo", "web", "203.0.113.10", port("http", v1.ProtocolTCP, 80), clientIPAffinity(600))},
			slices: []*discovery.EndpointSlice{webSlice}},
		{name: "topology-zone-hints", services: []*v1.Service{webService},
			slices: []*discovery.EndpointSlice{slice("demo", "web", "web-1", tcpPort("http", 8080),
				endpoint("198.51.100.2", onNode("node1"), zoneHints("zone-a")), endpoint("198.51.100.66", onNode("node2"), zoneHints("zone-b")))}},
		{name: "skipped-services", services: []*v1.Service{
			service("demo", "headless", "None", port("http", v1.ProtocolTCP, 80)),
			service("demo", "other-proxy", "203.0.113.50", port("http", v1.ProtocolTCP, 80), labels(LabelServiceProxyName, "someone-else")),
			func() *v1.Service {
				s := service("demo", "extname", "", port("http", v1.ProtocolTCP, 80))
				s.Spec.Type = v1.ServiceTypeExternalName
				return s
			}(),
		}},
		{name: "partial-sync", services: []*v1.Service{webService, service("demo", "shop", "203.0.113.20", port("http", v1.ProtocolTCP, 80))},
			slices: []*discovery.EndpointSlice{webSlice, slice("demo", "shop", "shop-1", tcpPort("http", 8080), endpoint("198.51.100.4"))},
			opts:   RenderOptions{Changed: map[types.NamespacedName]bool{{Namespace: "demo", Name: "shop"}: true}}},
		{name: "stale-chains", services: []*v1.Service{webService}, slices: []*discovery.EndpointSlice{webSlice},
			opts: RenderOptions{Full: true, ExistingNATChains: []string{"KUBE-SERVICES", "KUBE-SVC-GONEGONEGONEGONE", "KUBE-SEP-GONEGONEGONEGONE", "CNI-OTHER", ClusterPolicyChain(webPortName)}}},
		{name: "pod-egress", services: []*v1.Service{webService}, slices: []*discovery.EndpointSlice{webSlice},
			config: func(c *NodeConfig) {
				c.PodEgress = &PodEgressMasquerade{PodSet: SetPodCIDRs, NoMasqSet: "SVCPROXY-NO-MASQ"}
			}},
		{name: "ipv6", services: []*v1.Service{service("demo", "web6", "2001:db8:5::10", nodePort("http", v1.ProtocolTCP, 80, 30080), nodePort("alt", v1.ProtocolTCP, 8080, 30081))},
			slices: []*discovery.EndpointSlice{slice("demo", "web6", "web6-1", []slicePort{{"http", v1.ProtocolTCP, 8080}, {"alt", v1.ProtocolTCP, 8081}},
				endpoint("2001:db8:1::2", onNode("node1")), endpoint("2001:db8:1::3", onNode("node2")))},
			config: func(c *NodeConfig) {
				c.Family = v1.IPv6Protocol
				c.NodeIPs = []netip.Addr{netip.MustParseAddr("2001:db8::11")}
				c.LocalDetector = DetectByCIDR(netip.MustParsePrefix("2001:db8:1::/64"))
			}},
	}
}

var webPortName = ServicePortName{NamespacedName: types.NamespacedName{Namespace: "demo", Name: "web"}, Port: "http", Protocol: v1.ProtocolTCP}

func TestRenderGolden(t *testing.T) {
	for _, sc := range scenarios() {
		t.Run(sc.name, func(t *testing.T) {
			got := sc.render(t).Data
			path := filepath.Join("testdata", "golden", sc.name+".golden")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./proxier -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("output differs from %s (re-run with -update after checking):\n%s", path, lineDiff(want, got))
			}
		})
	}
}

// TestRenderDeterministic renders every scenario twice with freshly built
// inputs (fresh maps, so a fresh iteration order) and demands identical bytes.
func TestRenderDeterministic(t *testing.T) {
	for _, sc := range scenarios() {
		first := sc.render(t).Data
		for i := 0; i < 5; i++ {
			if again := sc.render(t).Data; !bytes.Equal(first, again) {
				t.Fatalf("%s: output changed between runs:\n%s", sc.name, lineDiff(first, again))
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
