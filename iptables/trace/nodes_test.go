package trace

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// calicoNode is node1 of the saved Calico rules (testdata/nodes): pods on
// cali* interfaces, other nodes' pods over IP-in-IP (tunl0).
func calicoNode() Context {
	pfx := netip.MustParsePrefix
	return Context{
		LocalAddrs: []netip.Addr{a("192.0.2.11"), a("198.51.100.1")},
		IfaceAddrs: map[string][]netip.Prefix{"eth0": {pfx("192.0.2.11/24")}, "tunl0": {pfx("198.51.100.1/32")}},
		Route: routesOf(map[string]string{
			"198.51.100.2/32": "cali5678efab901", "198.51.100.3/32": "cali1234abcd567",
			"198.51.100.64/26": "tunl0", "0.0.0.0/0": "eth0", "192.0.2.11/32": "lo", "198.51.100.1/32": "lo",
		}),
		Sets: map[string][]netip.Prefix{
			"cali40masq-ipam-pools": {pfx("198.51.100.0/24")}, "cali40all-ipam-pools": {pfx("198.51.100.0/24")},
			"cali40all-hosts-net": {pfx("192.0.2.0/24")},
		},
		BridgesKnown: true,
	}
}

// routesOf routes by longest prefix.
func routesOf(table map[string]string) func(netip.Addr) (string, bool) {
	return func(dst netip.Addr) (string, bool) {
		best, iface := -1, ""
		for p, dev := range table {
			if pfx := netip.MustParsePrefix(p); pfx.Contains(dst) && pfx.Bits() > best {
				best, iface = pfx.Bits(), dev
			}
		}
		return iface, best >= 0
	}
}

// flannelNode is node1 of the saved Flannel + Docker rules: pods on the
// cni0 bridge, other nodes' pods over flannel.1, Docker on docker0.
func flannelNode() Context {
	pfx := netip.MustParsePrefix
	return Context{
		LocalAddrs: []netip.Addr{a("192.0.2.11"), a("198.51.100.0"), a("198.51.100.1"), a("203.0.113.193")},
		IfaceAddrs: map[string][]netip.Prefix{"eth0": {pfx("192.0.2.11/24")}, "flannel.1": {pfx("198.51.100.0/32")},
			"cni0": {pfx("198.51.100.1/26")}, "docker0": {pfx("203.0.113.193/26")}},
		Route: routesOf(map[string]string{"198.51.100.0/26": "cni0", "198.51.100.64/26": "flannel.1",
			"203.0.113.192/26": "docker0", "0.0.0.0/0": "eth0", "192.0.2.11/32": "lo"}),
		Bridges: []string{"cni0", "docker0"}, BridgesKnown: true,
	}
}

// plainNode is a node with one interface and pods on cni0.
func plainNode(v6 bool) Context {
	if v6 {
		return Context{LocalAddrs: []netip.Addr{a("2001:db8::11")},
			Route: routesOf(map[string]string{"2001:db8:1:1::/64": "cni0", "::/0": "eth0"}), BridgesKnown: true}
	}
	return Context{LocalAddrs: []netip.Addr{a("192.0.2.11")},
		Route:   routesOf(map[string]string{"198.51.100.0/26": "cni0", "198.51.100.64/26": "flannel.1", "0.0.0.0/0": "eth0", "192.0.2.11/32": "lo"}),
		Bridges: []string{"cni0"}, BridgesKnown: true}
}

// The saved rules of real nodes' other software (testdata/nodes, written
// for these tests) are traced, not stopped on: what can be decided is, and
// only what depends on the unknown is uncertain.
func TestTraceOtherSoftware(t *testing.T) {
	in := func(src, dst string, port int, iface string) Packet {
		return Packet{Src: a(src), Dst: a(dst), Protocol: "tcp", SrcPort: 40000, DstPort: port, Origin: Incoming, InIface: iface}
	}
	local := func(src, dst string, port int) Packet {
		return Packet{Src: a(src), Dst: a(dst), Protocol: "tcp", SrcPort: 40000, DstPort: port, Origin: Local}
	}
	tests := []struct {
		name, file string
		ctx        Context
		pkt        Packet
		want       []string
		uncertain  []string // for each uncertain outcome in order: the rule it depends on
	}{{
		name: "calico: pod to a cluster IP; the network policy's set is unknown",
		file: "calico-nft.txt", ctx: calicoNode(), pkt: in("198.51.100.3", "203.0.113.10", 80, "cali1234abcd567"),
		want:      []string{"ACCEPT endpoint=198.51.100.2:8080 mark=0x10000 uncertain", "ACCEPT endpoint=198.51.100.3:8080 masquerade mark=0x10000", "ACCEPT endpoint=198.51.100.66:8080 mark=0x10000", "DROP endpoint=198.51.100.2:8080 mark=0x0 uncertain"},
		uncertain: []string{"filter/cali-pi-_kVjeIb9nZmHQEdV[0]", "filter/cali-pi-_kVjeIb9nZmHQEdV[0]"},
	}, {
		name: "calico: a spoofed source fails -m rpfilter in raw",
		file: "calico-nft.txt", ctx: calicoNode(), pkt: in("198.51.100.2", "203.0.113.10", 80, "cali1234abcd567"),
		want:      []string{"DROP mark=0x40000"},
		uncertain: nil,
	}, {
		name: "calico: the node to a cluster IP",
		file: "calico-nft.txt", ctx: calicoNode(), pkt: local("192.0.2.11", "203.0.113.10", 80),
		want:      []string{"ACCEPT endpoint=198.51.100.2:8080 masquerade mark=0x0", "ACCEPT endpoint=198.51.100.3:8080 masquerade mark=0x0", "ACCEPT endpoint=198.51.100.66:8080 masquerade mark=0x4000"},
		uncertain: nil,
	}, {
		name: "flannel and docker (iptables 1.4.21): the node to a cluster IP",
		file: "flannel-docker-legacy-1.4.21.txt", ctx: flannelNode(), pkt: local("192.0.2.11", "203.0.113.10", 80),
		want:      []string{"ACCEPT endpoint=198.51.100.2:8080 masquerade mark=0x4000", "ACCEPT endpoint=198.51.100.3:8080 masquerade mark=0x4000", "ACCEPT endpoint=198.51.100.66:8080 masquerade mark=0x4000"},
		uncertain: nil,
	}, {
		name: "flannel and docker: a pod on the cni0 bridge to a cluster IP",
		file: "flannel-docker-legacy-1.4.21.txt", ctx: flannelNode(), pkt: in("198.51.100.4", "203.0.113.10", 80, "cni0"),
		want:      []string{"ACCEPT endpoint=198.51.100.2:8080 mark=0x0", "ACCEPT endpoint=198.51.100.3:8080 mark=0x0", "ACCEPT endpoint=198.51.100.66:8080 mark=0x0"},
		uncertain: nil,
	}, {
		name: "flannel and docker: a container on docker0 to a pod elsewhere is masqueraded by docker",
		file: "flannel-docker-legacy-1.4.21.txt", ctx: flannelNode(), pkt: in("203.0.113.194", "198.51.100.66", 8080, "docker0"),
		want:      []string{"ACCEPT masquerade mark=0x0"},
		uncertain: nil,
	}, {
		name: "cilium chaining: a pod to a cluster IP; -m socket is undecidable",
		file: "cilium-chaining-nft.txt", ctx: plainNode(false), pkt: in("198.51.100.4", "203.0.113.10", 80, "lxc1234"),
		want:      []string{"ACCEPT endpoint=198.51.100.2:8080 mark=0x0 uncertain", "ACCEPT endpoint=198.51.100.2:8080 mark=0x200 uncertain", "ACCEPT endpoint=198.51.100.3:8080 mark=0x0 uncertain", "ACCEPT endpoint=198.51.100.3:8080 mark=0x200 uncertain", "ACCEPT endpoint=198.51.100.66:8080 mark=0x0 uncertain", "ACCEPT endpoint=198.51.100.66:8080 mark=0x200 uncertain"},
		uncertain: slices.Repeat([]string{"mangle/CILIUM_PRE_mangle[0]"}, 6),
	}, {
		name: "cilium chaining: DNS proxy traffic goes to TPROXY",
		file: "cilium-chaining-nft.txt", ctx: plainNode(false),
		pkt:       Packet{Src: a("198.51.100.4"), Dst: a("203.0.113.53"), Protocol: "udp", SrcPort: 40000, DstPort: 53, Origin: Incoming, InIface: "lxc1234", Mark: 0xdbba0200},
		want:      []string{"ACCEPT endpoint=127.0.0.1:47803 mark=0x200 uncertain", "ACCEPT mark=0x200 uncertain", "DROP mark=0xdbba0200 uncertain"},
		uncertain: []string{"mangle/CILIUM_PRE_mangle[0]", "mangle/CILIUM_PRE_mangle[0]", "mangle/CILIUM_PRE_mangle[2]", "mangle/CILIUM_PRE_mangle[0]", "mangle/CILIUM_PRE_mangle[2]"},
	}, {
		name: "firewalld: ssh to the node from outside",
		file: "firewalld-legacy.txt", ctx: plainNode(false), pkt: in("203.0.113.200", "192.0.2.11", 22, "eth0"),
		want:      []string{"ACCEPT mark=0x0"},
		uncertain: nil,
	}, {
		name: "firewalld: a port the zone does not open is rejected",
		file: "firewalld-legacy.txt", ctx: plainNode(false), pkt: in("203.0.113.200", "192.0.2.11", 8080, "eth0"),
		want:      []string{"REJECT mark=0x0"},
		uncertain: nil,
	}, {
		name: "firewalld: a pod to a cluster IP; the source zone's set is unknown but both ways accept",
		file: "firewalld-legacy.txt", ctx: plainNode(false), pkt: in("198.51.100.4", "203.0.113.10", 80, "cni0"),
		want:      []string{"ACCEPT endpoint=198.51.100.66:8080 mark=0x0"},
		uncertain: nil,
	}, {
		name: "ufw: a NodePort from outside, FORWARD policy DROP",
		file: "ufw-legacy.txt", ctx: plainNode(false), pkt: in("203.0.113.200", "192.0.2.11", 30080, "eth0"),
		want:      []string{"ACCEPT endpoint=198.51.100.4:8080 masquerade mark=0x0", "ACCEPT endpoint=198.51.100.67:8080 masquerade mark=0x0"},
		uncertain: nil,
	}, {
		name: "ufw: a rate-limited port is accepted without history",
		file: "ufw-legacy.txt", ctx: plainNode(false), pkt: in("203.0.113.200", "192.0.2.11", 6443, "eth0"),
		want:      []string{"ACCEPT mark=0x0"},
		uncertain: nil,
	}, {
		name: "ufw: a closed port reaches the INPUT policy, logged or not",
		file: "ufw-legacy.txt", ctx: plainNode(false), pkt: in("203.0.113.200", "192.0.2.11", 8080, "eth0"),
		want:      []string{"DROP mark=0x0"},
		uncertain: nil,
	}, {
		name: "ip6tables-nft: a pod to a cluster IP",
		file: "kube-proxy-ipv6-nft.txt", ctx: plainNode(true), pkt: in("2001:db8:1:1::7", "2001:db8:5::a", 80, "cni0"),
		want:      []string{"ACCEPT endpoint=[2001:db8:1:1::2]:8080 mark=0x0", "ACCEPT endpoint=[2001:db8:1:2::2]:8080 mark=0x0"},
		uncertain: nil,
	}, {
		name: "ip6tables-nft: no endpoints",
		file: "kube-proxy-ipv6-nft.txt", ctx: plainNode(true), pkt: in("2001:db8:1:1::7", "2001:db8:5::1e", 80, "cni0"),
		want:      []string{"REJECT mark=0x0"},
		uncertain: nil,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := loadDump(t, "../testdata/nodes/"+tt.file)
			outcomes, err := Trace(d, tt.ctx, tt.pkt)
			if err != nil {
				t.Fatalf("Trace: %v", err)
			}
			if got := summary(outcomes); !slices.Equal(got, tt.want) {
				t.Errorf("outcomes:\n got %q\nwant %q\n%s", got, tt.want, describeAll(outcomes))
			}
			var deps []string
			for _, o := range outcomes {
				for _, u := range o.Uncertain {
					deps = append(deps, fmt.Sprintf("%s/%s[%d]", u.Step.Table, u.Step.Chain, u.Step.RuleIndex))
				}
			}
			if !slices.Equal(deps, tt.uncertain) {
				t.Errorf("undecided tests %q, want %q", deps, tt.uncertain)
			}
		})
	}
}

func describeAll(outcomes []Outcome) string {
	var b strings.Builder
	for _, o := range outcomes {
		b.WriteString(o.String() + " " + o.Note + "\n")
		for _, u := range o.Uncertain {
			b.WriteString("  ? " + u.String() + "\n")
		}
		for _, s := range o.Path {
			b.WriteString("    " + s.String() + "\n")
		}
	}
	return b.String()
}
