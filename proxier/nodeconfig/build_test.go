package nodeconfig

import (
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/svcproxy/svcproxy/ipset"
	"github.com/svcproxy/svcproxy/proxier/model"
	"github.com/svcproxy/svcproxy/proxier/rules"
)

// Addresses are TEST-NET / documentation ranges only.

func pfx(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func addrs(ss ...string) []netip.Addr {
	out := []netip.Addr{}
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

// testNode is node1 with the given spec.podCIDRs, two InternalIPs (one per
// family), an ExternalIP and a zone.
func testNode(podCIDRs ...string) *v1.Node {
	return &v1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "node1", Labels: map[string]string{v1.LabelTopologyZone: "zone-a"}},
		Spec:       v1.NodeSpec{PodCIDRs: podCIDRs},
		Status: v1.NodeStatus{Addresses: []v1.NodeAddress{
			{Type: v1.NodeHostName, Address: "node1"},
			{Type: v1.NodeExternalIP, Address: "203.0.113.200"},
			{Type: v1.NodeInternalIP, Address: "2001:db8::11"},
			{Type: v1.NodeInternalIP, Address: "192.0.2.11"},
		}},
	}
}

// baseSettings are kube-proxy's defaults.
func baseSettings() Settings {
	return Settings{MasqueradeBit: 14, LocalhostNodePorts: true, DetectLocalMode: LocalModeClusterCIDR, BindAddress: "0.0.0.0"}
}

func build(cfg Settings, family v1.IPFamily, node *v1.Node) *rules.NodeConfig {
	b := &Builder{Settings: cfg, Family: family, NodeName: "node1", RandomFully: true}
	return b.Build(node)
}

// wantDetector checks the match arguments of the local-traffic detector.
func wantDetector(t *testing.T, got rules.LocalDetector, ifLocal, ifNotLocal string) {
	t.Helper()
	if g := strings.Join(got.IfLocal(), " "); g != ifLocal {
		t.Errorf("IfLocal = %q, want %q", g, ifLocal)
	}
	if g := strings.Join(got.IfNotLocal(), " "); g != ifNotLocal {
		t.Errorf("IfNotLocal = %q, want %q", g, ifNotLocal)
	}
}

func wantSets(t *testing.T, got map[string][]netip.Prefix, want map[string][]netip.Prefix) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("IPSets = %v, want %v", got, want)
	}
}

const (
	podSet   = ipset.PodCIDRsSet
	noMasq   = ipset.NoMasqSet
	bySetV4  = "-m set --match-set SVCPROXY-POD-CIDRS src"
	notSetV4 = "-m set ! --match-set SVCPROXY-POD-CIDRS src"
)

func TestDetectLocalClusterCIDR(t *testing.T) {
	for _, tc := range []struct {
		name                string
		mode                string
		family              v1.IPFamily
		cidrs               []netip.Prefix
		ifLocal, ifNotLocal string
		sets                map[string][]netip.Prefix
	}{
		{name: "no CIDR: detection off", mode: LocalModeClusterCIDR, family: v1.IPv4Protocol},
		{name: "one CIDR: kube-proxy's exact match", mode: LocalModeClusterCIDR, family: v1.IPv4Protocol,
			cidrs: pfx("198.51.100.0/24"), ifLocal: "-s 198.51.100.0/24", ifNotLocal: "! -s 198.51.100.0/24"},
		{name: "three CIDRs: one set", mode: LocalModeClusterCIDR, family: v1.IPv4Protocol,
			cidrs:   pfx("198.51.100.0/26", "198.51.100.192/26", "198.51.100.64/26"),
			ifLocal: bySetV4, ifNotLocal: notSetV4,
			sets: map[string][]netip.Prefix{podSet: pfx("198.51.100.0/26", "198.51.100.192/26", "198.51.100.64/26")}},
		{name: "empty mode means ClusterCIDR (kube-proxy's default)", mode: "", family: v1.IPv4Protocol,
			cidrs: pfx("198.51.100.0/24"), ifLocal: "-s 198.51.100.0/24", ifNotLocal: "! -s 198.51.100.0/24"},
		{name: "dual-stack pair: the IPv4 one", mode: LocalModeClusterCIDR, family: v1.IPv4Protocol,
			cidrs: pfx("2001:db8:1::/48", "198.51.100.0/24"), ifLocal: "-s 198.51.100.0/24", ifNotLocal: "! -s 198.51.100.0/24"},
		{name: "dual-stack pair: the IPv6 one", mode: LocalModeClusterCIDR, family: v1.IPv6Protocol,
			cidrs: pfx("198.51.100.0/24", "2001:db8:1::/48"), ifLocal: "-s 2001:db8:1::/48", ifNotLocal: "! -s 2001:db8:1::/48"},
		{name: "mixed families: only the IPv4 ones go into the set", mode: LocalModeClusterCIDR, family: v1.IPv4Protocol,
			cidrs:   pfx("198.51.100.0/26", "2001:db8:1::/48", "198.51.100.64/26", "2001:db8:2::/48"),
			ifLocal: bySetV4, ifNotLocal: notSetV4,
			sets: map[string][]netip.Prefix{podSet: pfx("198.51.100.0/26", "198.51.100.64/26")}},
		{name: "mixed families: the IPv6 set has its own name", mode: LocalModeClusterCIDR, family: v1.IPv6Protocol,
			cidrs:   pfx("198.51.100.0/26", "2001:db8:1::/48", "198.51.100.64/26", "2001:db8:2::/48"),
			ifLocal: "-m set --match-set SVCPROXY-POD-CIDRS6 src", ifNotLocal: "-m set ! --match-set SVCPROXY-POD-CIDRS6 src",
			sets: map[string][]netip.Prefix{ipset.PodCIDRsSet6: pfx("2001:db8:1::/48", "2001:db8:2::/48")}},
		{name: "only the other family: detection off", mode: LocalModeClusterCIDR, family: v1.IPv4Protocol,
			cidrs: pfx("2001:db8:1::/48", "2001:db8:2::/48")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := baseSettings()
			cfg.DetectLocalMode, cfg.ClusterCIDRs = tc.mode, tc.cidrs
			c := build(cfg, tc.family, testNode("198.51.100.0/26"))
			wantDetector(t, c.LocalDetector, tc.ifLocal, tc.ifNotLocal)
			wantSets(t, c.IPSets, tc.sets)
			if c.PodEgress != nil {
				t.Errorf("PodEgress = %+v without --masquerade-pod-egress", c.PodEgress)
			}
		})
	}
}

func TestDetectLocalNodeCIDR(t *testing.T) {
	for _, tc := range []struct {
		name                string
		family              v1.IPFamily
		node                *v1.Node
		ifLocal, ifNotLocal string
	}{
		{"one pod CIDR", v1.IPv4Protocol, testNode("198.51.100.64/26"), "-s 198.51.100.64/26", "! -s 198.51.100.64/26"},
		{"dual-stack pod CIDRs, IPv4", v1.IPv4Protocol, testNode("2001:db8:0:1::/64", "198.51.100.64/26"), "-s 198.51.100.64/26", "! -s 198.51.100.64/26"},
		{"dual-stack pod CIDRs, IPv6", v1.IPv6Protocol, testNode("198.51.100.64/26", "2001:db8:0:1::/64"), "-s 2001:db8:0:1::/64", "! -s 2001:db8:0:1::/64"},
		// The API allows one pod CIDR per family; kube-proxy takes the
		// first of the family, and so does svcproxy (no set in this mode).
		{"two of one family: the first, as kube-proxy", v1.IPv4Protocol, testNode("198.51.100.64/26", "198.51.100.192/26"), "-s 198.51.100.64/26", "! -s 198.51.100.64/26"},
		{"legacy spec.podCIDR", v1.IPv4Protocol, func() *v1.Node { n := testNode(); n.Spec.PodCIDR = "198.51.100.128/26"; return n }(), "-s 198.51.100.128/26", "! -s 198.51.100.128/26"},
		{"host bits are masked", v1.IPv4Protocol, testNode("198.51.100.65/26"), "-s 198.51.100.64/26", "! -s 198.51.100.64/26"},
		{"no Node object yet: detection off", v1.IPv4Protocol, nil, "", ""},
		{"Node without pod CIDR: detection off", v1.IPv4Protocol, testNode(), "", ""},
		{"Node with only the other family: detection off", v1.IPv4Protocol, testNode("2001:db8:0:1::/64"), "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := baseSettings()
			cfg.DetectLocalMode = LocalModeNodeCIDR
			// Cluster CIDRs are ignored for detection in this mode.
			cfg.ClusterCIDRs = pfx("198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
			c := build(cfg, tc.family, tc.node)
			wantDetector(t, c.LocalDetector, tc.ifLocal, tc.ifNotLocal)
			wantSets(t, c.IPSets, nil)
		})
	}
}

func TestDetectLocalInterfaces(t *testing.T) {
	for _, tc := range []struct {
		name                string
		mode                string
		bridge, prefix      string
		ifLocal, ifNotLocal string
	}{
		{"BridgeInterface", LocalModeBridgeInterface, "cbr0", "", "-i cbr0", "! -i cbr0"},
		{"InterfaceNamePrefix", LocalModeInterfaceNamePrefix, "", "veth", "-i veth+", "! -i veth+"},
	} {
		for _, family := range []v1.IPFamily{v1.IPv4Protocol, v1.IPv6Protocol} {
			t.Run(tc.name+"/"+string(family), func(t *testing.T) {
				cfg := baseSettings()
				cfg.DetectLocalMode, cfg.BridgeInterface, cfg.InterfaceNamePrefix = tc.mode, tc.bridge, tc.prefix
				// Cluster CIDRs (several) don't turn the set on in these modes.
				cfg.ClusterCIDRs = pfx("198.51.100.0/26", "198.51.100.64/26", "2001:db8:1::/48", "2001:db8:2::/48")
				c := build(cfg, family, testNode("198.51.100.0/26"))
				wantDetector(t, c.LocalDetector, tc.ifLocal, tc.ifNotLocal)
				wantSets(t, c.IPSets, nil)
			})
		}
	}
}

func TestPodEgress(t *testing.T) {
	for _, tc := range []struct {
		name         string
		mode         string
		family       v1.IPFamily
		cidrs        []netip.Prefix
		noMasqCIDRs  []netip.Prefix
		wantEgress   *rules.PodEgressMasquerade
		wantIfLocal  string
		wantSets     map[string][]netip.Prefix
		bridge       string
		disableEgres bool
	}{
		{name: "one CIDR: exact detector, set for the egress rule", family: v1.IPv4Protocol,
			cidrs:       pfx("198.51.100.0/24"),
			wantEgress:  &rules.PodEgressMasquerade{PodSet: podSet},
			wantIfLocal: "-s 198.51.100.0/24",
			wantSets:    map[string][]netip.Prefix{podSet: pfx("198.51.100.0/24")}},
		{name: "three CIDRs: one set serves both", family: v1.IPv4Protocol,
			cidrs:       pfx("198.51.100.0/26", "198.51.100.192/26", "198.51.100.64/26"),
			wantEgress:  &rules.PodEgressMasquerade{PodSet: podSet},
			wantIfLocal: bySetV4,
			wantSets:    map[string][]netip.Prefix{podSet: pfx("198.51.100.0/26", "198.51.100.192/26", "198.51.100.64/26")}},
		{name: "with no-masquerade CIDRs", family: v1.IPv4Protocol,
			cidrs: pfx("198.51.100.0/26", "198.51.100.64/26"), noMasqCIDRs: pfx("192.0.2.128/25", "203.0.113.0/24"),
			wantEgress:  &rules.PodEgressMasquerade{PodSet: podSet, NoMasqSet: noMasq},
			wantIfLocal: bySetV4,
			wantSets: map[string][]netip.Prefix{podSet: pfx("198.51.100.0/26", "198.51.100.64/26"),
				noMasq: pfx("192.0.2.128/25", "203.0.113.0/24")}},
		{name: "mixed families: IPv4 only in both sets", family: v1.IPv4Protocol,
			cidrs: pfx("198.51.100.0/26", "2001:db8:1::/48"), noMasqCIDRs: pfx("2001:db8:ff::/48", "192.0.2.128/25"),
			wantEgress:  &rules.PodEgressMasquerade{PodSet: podSet, NoMasqSet: noMasq},
			wantIfLocal: "-s 198.51.100.0/26",
			wantSets:    map[string][]netip.Prefix{podSet: pfx("198.51.100.0/26"), noMasq: pfx("192.0.2.128/25")}},
		{name: "mixed families: IPv6 sets carry the 6", family: v1.IPv6Protocol,
			cidrs: pfx("198.51.100.0/26", "2001:db8:1::/48"), noMasqCIDRs: pfx("2001:db8:ff::/48", "192.0.2.128/25"),
			wantEgress:  &rules.PodEgressMasquerade{PodSet: ipset.PodCIDRsSet6, NoMasqSet: ipset.NoMasqSet6},
			wantIfLocal: "-s 2001:db8:1::/48",
			wantSets:    map[string][]netip.Prefix{ipset.PodCIDRsSet6: pfx("2001:db8:1::/48"), ipset.NoMasqSet6: pfx("2001:db8:ff::/48")}},
		{name: "no-masquerade CIDRs of the other family only: no such set", family: v1.IPv4Protocol,
			cidrs: pfx("198.51.100.0/24"), noMasqCIDRs: pfx("2001:db8:ff::/48"),
			wantEgress:  &rules.PodEgressMasquerade{PodSet: podSet},
			wantIfLocal: "-s 198.51.100.0/24",
			wantSets:    map[string][]netip.Prefix{podSet: pfx("198.51.100.0/24")}},
		{name: "no cluster CIDR of the family: no egress rule", family: v1.IPv4Protocol,
			cidrs: pfx("2001:db8:1::/48"), noMasqCIDRs: pfx("192.0.2.128/25")},
		{name: "no cluster CIDR at all: no egress rule (Validate rejects it)", family: v1.IPv4Protocol,
			noMasqCIDRs: pfx("192.0.2.128/25")},
		{name: "egress off: no-masquerade CIDRs alone make nothing", family: v1.IPv4Protocol, disableEgres: true,
			cidrs: pfx("198.51.100.0/24"), noMasqCIDRs: pfx("192.0.2.128/25"), wantIfLocal: "-s 198.51.100.0/24"},
		// Bug fixed: NodeCIDR mode used the node's own pod CIDR as the
		// egress set, so traffic to pods on other nodes was masqueraded.
		{name: "NodeCIDR: detector from the Node, egress set from the cluster CIDRs", mode: LocalModeNodeCIDR, family: v1.IPv4Protocol,
			cidrs:       pfx("198.51.100.0/24"),
			wantEgress:  &rules.PodEgressMasquerade{PodSet: podSet},
			wantIfLocal: "-s 198.51.100.0/26",
			wantSets:    map[string][]netip.Prefix{podSet: pfx("198.51.100.0/24")}},
		// Bug fixed: the interface modes silently dropped pod egress.
		{name: "BridgeInterface: egress still uses the cluster CIDRs", mode: LocalModeBridgeInterface, bridge: "cbr0", family: v1.IPv4Protocol,
			cidrs:       pfx("198.51.100.0/26", "198.51.100.64/26"),
			wantEgress:  &rules.PodEgressMasquerade{PodSet: podSet},
			wantIfLocal: "-i cbr0",
			wantSets:    map[string][]netip.Prefix{podSet: pfx("198.51.100.0/26", "198.51.100.64/26")}},
		// Bug fixed: a hash:net set cannot hold a /0, so every ipset sync
		// (and so every rule write) failed.
		{name: "a /0 is stored as its two halves", family: v1.IPv4Protocol,
			cidrs: pfx("198.51.100.0/24"), noMasqCIDRs: pfx("0.0.0.0/0"),
			wantEgress:  &rules.PodEgressMasquerade{PodSet: podSet, NoMasqSet: noMasq},
			wantIfLocal: "-s 198.51.100.0/24",
			wantSets:    map[string][]netip.Prefix{podSet: pfx("198.51.100.0/24"), noMasq: pfx("0.0.0.0/1", "128.0.0.0/1")}},
		{name: "a /0 is stored as its two halves (IPv6)", family: v1.IPv6Protocol,
			cidrs:       pfx("::/0", "2001:db8:1::/48"),
			wantEgress:  &rules.PodEgressMasquerade{PodSet: ipset.PodCIDRsSet6},
			wantIfLocal: "-m set --match-set SVCPROXY-POD-CIDRS6 src",
			wantSets:    map[string][]netip.Prefix{ipset.PodCIDRsSet6: pfx("::/1", "8000::/1", "2001:db8:1::/48")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := baseSettings()
			if tc.mode != "" {
				cfg.DetectLocalMode = tc.mode
			}
			cfg.BridgeInterface = tc.bridge
			cfg.MasqueradePodEgress = !tc.disableEgres
			cfg.ClusterCIDRs, cfg.NoMasqueradeCIDRs = tc.cidrs, tc.noMasqCIDRs
			c := build(cfg, tc.family, testNode("198.51.100.0/26", "2001:db8:0:1::/64"))
			if !reflect.DeepEqual(c.PodEgress, tc.wantEgress) {
				t.Errorf("PodEgress = %+v, want %+v", c.PodEgress, tc.wantEgress)
			}
			if g := strings.Join(c.LocalDetector.IfLocal(), " "); g != tc.wantIfLocal {
				t.Errorf("IfLocal = %q, want %q", g, tc.wantIfLocal)
			}
			wantSets(t, c.IPSets, tc.wantSets)
			// Every set a rule names has its members in IPSets, so the sync
			// loop creates it before the restore.
			text := string(rules.Render(emptySnapshot(t, tc.family), c, rules.RenderOptions{Full: true}).Data)
			for _, name := range []string{ipset.PodCIDRsSet, ipset.PodCIDRsSet6, ipset.NoMasqSet, ipset.NoMasqSet6} {
				if strings.Contains(text, "--match-set "+name+" ") && len(c.IPSets[name]) == 0 {
					t.Errorf("rules use set %s but IPSets has no members for it:\n%s", name, text)
				}
			}
			if hasEgress := strings.Contains(text, ":"+rules.ChainPodEgress+" "); hasEgress != (tc.wantEgress != nil) {
				t.Errorf("chain %s rendered = %v, want %v", rules.ChainPodEgress, hasEgress, tc.wantEgress != nil)
			}
		})
	}
}

func emptySnapshot(t *testing.T, family v1.IPFamily) *model.Snapshot {
	t.Helper()
	snap, err := model.BuildSnapshot(nil, nil, family)
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

func TestPodEgressRuleText(t *testing.T) {
	cfg := baseSettings()
	cfg.ClusterCIDRs = pfx("198.51.100.0/26", "198.51.100.192/26", "198.51.100.64/26")
	cfg.MasqueradePodEgress, cfg.NoMasqueradeCIDRs = true, pfx("192.0.2.128/25")
	text := string(rules.Render(emptySnapshot(t, v1.IPv4Protocol), build(cfg, v1.IPv4Protocol, nil), rules.RenderOptions{Full: true}).Data)
	want := `-A SVCPROXY-POD-EGRESS -m comment --comment "pod egress leaves the pod network through the node address" ` +
		`-m set --match-set SVCPROXY-POD-CIDRS src -m set ! --match-set SVCPROXY-POD-CIDRS dst ` +
		`-m set ! --match-set SVCPROXY-NO-MASQ dst -j MASQUERADE --random-fully`
	if !strings.Contains(text, want+"\n") {
		t.Errorf("rules lack\n%s\ngot:\n%s", want, text)
	}
}

func TestNodeIPsAndTopology(t *testing.T) {
	cfg := baseSettings()
	c := build(cfg, v1.IPv4Protocol, testNode())
	if want := addrs("192.0.2.11", "203.0.113.200"); !slices.Equal(c.NodeIPs, want) {
		t.Errorf("NodeIPs = %v, want %v (InternalIPs, then ExternalIPs, of the family)", c.NodeIPs, want)
	}
	if c.Topology != (model.Topology{NodeName: "node1", Zone: "zone-a"}) {
		t.Errorf("Topology = %+v", c.Topology)
	}
	if want := addrs("2001:db8::11"); !slices.Equal(build(cfg, v1.IPv6Protocol, testNode()).NodeIPs, want) {
		t.Errorf("IPv6 NodeIPs = %v, want %v", build(cfg, v1.IPv6Protocol, testNode()).NodeIPs, want)
	}

	cfg.BindAddress = "203.0.113.200" // --bind-address overrides the primary IP
	if got, want := build(cfg, v1.IPv4Protocol, testNode()).NodeIPs, addrs("203.0.113.200", "192.0.2.11"); !slices.Equal(got, want) {
		t.Errorf("with --bind-address: NodeIPs = %v, want %v", got, want)
	}
	cfg.BindAddress = "2001:db8::99" // other family: ignored
	if got, want := build(cfg, v1.IPv4Protocol, testNode()).NodeIPs, addrs("192.0.2.11", "203.0.113.200"); !slices.Equal(got, want) {
		t.Errorf("IPv6 --bind-address on IPv4: NodeIPs = %v, want %v", got, want)
	}
	if c := build(baseSettings(), v1.IPv4Protocol, nil); c.NodeIPs != nil || c.Topology != (model.Topology{NodeName: "node1"}) {
		t.Errorf("no Node: NodeIPs %v, Topology %+v", c.NodeIPs, c.Topology)
	}
}

func TestNodePortAddresses(t *testing.T) {
	local := addrs("127.0.0.1", "192.0.2.11", "198.51.100.1", "198.51.100.193", "2001:db8::11", "192.0.2.11")
	for _, tc := range []struct {
		name   string
		family v1.IPFamily
		values []string
		node   *v1.Node
		bind   string
		want   []netip.Addr // nil: every local address
	}{
		{name: "unset: every local address", family: v1.IPv4Protocol, node: testNode(), want: nil},
		{name: "primary: the node's primary IP", family: v1.IPv4Protocol, values: []string{"primary"}, node: testNode(), want: addrs("192.0.2.11")},
		{name: "primary, IPv6", family: v1.IPv6Protocol, values: []string{"primary"}, node: testNode(), want: addrs("2001:db8::11")},
		{name: "primary follows --bind-address", family: v1.IPv4Protocol, values: []string{"primary"}, node: testNode(), bind: "198.51.100.1", want: addrs("198.51.100.1")},
		{name: "primary without a node IP: every local address (kube-proxy)", family: v1.IPv4Protocol, values: []string{"primary"}, node: nil, want: nil},
		{name: "primary with a loopback bind address: every local address (kube-proxy)", family: v1.IPv4Protocol, values: []string{"primary"}, node: nil, bind: "127.0.0.1", want: nil},
		{name: "one CIDR", family: v1.IPv4Protocol, values: []string{"192.0.2.0/24"}, node: testNode(), want: addrs("192.0.2.11")},
		{name: "two CIDRs, duplicates once", family: v1.IPv4Protocol, values: []string{"198.51.100.0/24", "192.0.2.0/24", "192.0.2.11/32"}, node: testNode(),
			want: addrs("192.0.2.11", "198.51.100.1", "198.51.100.193")},
		{name: "loopback CIDR", family: v1.IPv4Protocol, values: []string{"127.0.0.0/8"}, node: testNode(), want: addrs("127.0.0.1")},
		{name: "IPv6 CIDR on IPv6", family: v1.IPv6Protocol, values: []string{"192.0.2.0/24", "2001:db8::/64"}, node: testNode(), want: addrs("2001:db8::11")},
		{name: "no local address matches: none (closed, not all)", family: v1.IPv4Protocol, values: []string{"203.0.113.0/24"}, node: testNode(), want: []netip.Addr{}},
		{name: "only other-family CIDRs: every local address (kube-proxy)", family: v1.IPv4Protocol, values: []string{"2001:db8::/64"}, node: testNode(), want: nil},
		{name: "a /0: every local address (kube-proxy)", family: v1.IPv4Protocol, values: []string{"192.0.2.0/24", "0.0.0.0/0"}, node: testNode(), want: nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := baseSettings()
			cfg.NodePortAddresses = tc.values
			if tc.bind != "" {
				cfg.BindAddress = tc.bind
			}
			b := &Builder{Settings: cfg, Family: tc.family, NodeName: "node1", LocalAddrs: func() ([]netip.Addr, error) { return local, nil }}
			got := b.Build(tc.node).NodePortAddresses
			if (got == nil) != (tc.want == nil) || !slices.Equal(got, tc.want) {
				t.Errorf("NodePortAddresses = %#v, want %#v", got, tc.want)
			}
		})
	}
}

func TestForHost(t *testing.T) {
	cfg := baseSettings()
	cfg.ClusterCIDRs = pfx("198.51.100.0/26", "198.51.100.192/26", "198.51.100.64/26")
	cfg.MasqueradePodEgress, cfg.NoMasqueradeCIDRs = true, pfx("192.0.2.128/25")
	got := ForHost(cfg, v1.IPv4Protocol, "node1", false).Build(testNode("198.51.100.0/26"))
	want := build(cfg, v1.IPv4Protocol, testNode("198.51.100.0/26"))
	want.RandomFully = false
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ForHost(...).Build = %+v\nwant %+v", got, want)
	}
}
