package trace

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/svcproxy/svcproxy/iptables"
)

var (
	nodeIP  = netip.MustParseAddr("192.0.2.1")
	v4Ctx   = Context{LocalAddrs: []netip.Addr{nodeIP}}
	a       = netip.MustParseAddr
	webEPs  = []string{"198.51.100.2:8080", "198.51.100.3:8080"}
	tcpPort = func(src, dst string, port int, origin Origin) Packet {
		return Packet{Src: a(src), Dst: a(dst), Protocol: "tcp", DstPort: port, Origin: origin}
	}
)

func loadDump(t *testing.T, file string) *iptables.Dump {
	t.Helper()
	text, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	d, err := iptables.ParseDump(text)
	if err != nil {
		t.Fatalf("ParseDump(%s): %v", file, err)
	}
	return d
}

func parseDump(t *testing.T, text string) *iptables.Dump {
	t.Helper()
	d, err := iptables.ParseDump([]byte(text))
	if err != nil {
		t.Fatalf("ParseDump: %v", err)
	}
	return d
}

// summary is an order-independent description of outcomes for comparisons.
func summary(outcomes []Outcome) []string {
	var s []string
	for _, o := range outcomes {
		s = append(s, o.String())
	}
	slices.Sort(s)
	return s
}

func TestTraceKubeProxyV4(t *testing.T) {
	d := loadDump(t, "../testdata/kube-proxy-v4.txt")
	tests := []struct {
		name    string
		ctx     Context
		pkt     Packet
		want    []string // summary()
		wantEPs []string
	}{{
		name:    "pod to cluster IP: both endpoints, no masquerade",
		pkt:     tcpPort("198.51.100.7", "203.0.113.10", 80, Incoming),
		want:    []string{"ACCEPT endpoint=198.51.100.2:8080 mark=0x0", "ACCEPT endpoint=198.51.100.3:8080 mark=0x0"},
		wantEPs: webEPs,
	}, {
		name:    "node to cluster IP: masqueraded, mark cleared in POSTROUTING",
		pkt:     tcpPort("192.0.2.1", "203.0.113.10", 80, Local),
		want:    []string{"ACCEPT endpoint=198.51.100.2:8080 masquerade mark=0x0", "ACCEPT endpoint=198.51.100.3:8080 masquerade mark=0x0"},
		wantEPs: webEPs,
	}, {
		name: "hairpin: an endpoint reaching its own service is masqueraded only when it picks itself",
		pkt:  tcpPort("198.51.100.2", "203.0.113.10", 80, Incoming),
		want: []string{"ACCEPT endpoint=198.51.100.2:8080 masquerade mark=0x0", "ACCEPT endpoint=198.51.100.3:8080 mark=0x0"},
	}, {
		name:    "external client to node port: masqueraded",
		pkt:     tcpPort("203.0.113.99", "192.0.2.1", 30080, Incoming),
		want:    []string{"ACCEPT endpoint=198.51.100.2:8080 masquerade mark=0x0", "ACCEPT endpoint=198.51.100.3:8080 masquerade mark=0x0"},
		wantEPs: webEPs,
	}, {
		name: "node port on localhost is local too",
		pkt:  tcpPort("127.0.0.1", "127.0.0.1", 30080, Local),
		want: []string{"ACCEPT endpoint=198.51.100.2:8080 masquerade mark=0x0", "ACCEPT endpoint=198.51.100.3:8080 masquerade mark=0x0"},
	}, {
		name: "node port on a non-local address is not a node port",
		pkt:  tcpPort("203.0.113.99", "192.0.2.77", 30080, Incoming),
		want: []string{"ACCEPT mark=0x0"},
	}, {
		name: "wrong port on the cluster IP passes untouched",
		pkt:  tcpPort("198.51.100.7", "203.0.113.10", 81, Incoming),
		want: []string{"ACCEPT mark=0x0"},
	}, {
		name: "UDP to a TCP service passes untouched",
		pkt:  Packet{Src: a("198.51.100.7"), Dst: a("203.0.113.10"), Protocol: "udp", DstPort: 80, Origin: Incoming},
		want: []string{"ACCEPT mark=0x0"},
	}, {
		name: "service without endpoints: rejected in filter FORWARD for pods",
		pkt:  tcpPort("198.51.100.7", "203.0.113.20", 80, Incoming),
		want: []string{"REJECT mark=0x0"},
	}, {
		name: "service without endpoints: rejected in filter OUTPUT for the node",
		pkt:  tcpPort("192.0.2.1", "203.0.113.20", 80, Local),
		want: []string{"REJECT mark=0x0"},
	}, {
		name: "node port without endpoints: rejected in filter INPUT",
		pkt:  tcpPort("203.0.113.99", "192.0.2.1", 30081, Incoming),
		want: []string{"REJECT mark=0x0"},
	}, {
		name:    "session affinity, no history: either endpoint",
		pkt:     tcpPort("198.51.100.7", "203.0.113.11", 80, Incoming),
		want:    []string{"ACCEPT endpoint=198.51.100.4:80 mark=0x0", "ACCEPT endpoint=198.51.100.5:80 mark=0x0"},
		wantEPs: []string{"198.51.100.4:80", "198.51.100.5:80"},
	}, {
		name:    "session affinity with history for D: only D",
		ctx:     Context{LocalAddrs: v4Ctx.LocalAddrs, RecentHits: map[string]bool{"KUBE-SEP-D": true}},
		pkt:     tcpPort("198.51.100.7", "203.0.113.11", 80, Incoming),
		want:    []string{"ACCEPT endpoint=198.51.100.5:80 mark=0x0"},
		wantEPs: []string{"198.51.100.5:80"},
	}, {
		name: "initial mark survives when not touched",
		pkt:  Packet{Src: a("198.51.100.7"), Dst: a("203.0.113.10"), Protocol: "tcp", DstPort: 80, Origin: Incoming, Mark: 0x1},
		want: []string{"ACCEPT endpoint=198.51.100.2:8080 mark=0x1", "ACCEPT endpoint=198.51.100.3:8080 mark=0x1"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := tt.ctx
			if ctx.LocalAddrs == nil {
				ctx = v4Ctx
			}
			outcomes, err := Trace(d, ctx, tt.pkt)
			if err != nil {
				t.Fatalf("Trace: %v", err)
			}
			if got := summary(outcomes); !slices.Equal(got, tt.want) {
				t.Errorf("outcomes:\n got %q\nwant %q\n%s", got, tt.want, describe(outcomes))
			}
			if tt.wantEPs != nil {
				if got := Endpoints(outcomes); !slices.Equal(got, tt.wantEPs) {
					t.Errorf("Endpoints = %q, want %q", got, tt.wantEPs)
				}
			}
		})
	}
}

func describe(outcomes []Outcome) string {
	var b strings.Builder
	for _, o := range outcomes {
		b.WriteString(o.String() + "\n")
		for _, s := range o.Path {
			b.WriteString("    " + s.String() + "\n")
		}
	}
	return b.String()
}

func TestTracePath(t *testing.T) {
	d := loadDump(t, "../testdata/kube-proxy-v4.txt")
	outcomes, err := Trace(d, v4Ctx, tcpPort("192.0.2.1", "203.0.113.10", 80, Local))
	if err != nil {
		t.Fatal(err)
	}
	// The random rule's matching branch is explored first.
	if len(outcomes) != 2 || outcomes[0].Endpoint.String() != "198.51.100.2:8080" {
		t.Fatalf("outcomes:\n%s", describe(outcomes))
	}
	var got []string
	for _, s := range outcomes[0].Path {
		got = append(got, string(s.Table)+"/"+s.Chain+"/"+strings.Fields(s.Raw)[len(strings.Fields(s.Raw))-1])
	}
	want := []string{
		"nat/OUTPUT/KUBE-SERVICES",
		"nat/KUBE-SERVICES/KUBE-SVC-X",
		"nat/KUBE-SVC-X/KUBE-MARK-MASQ",
		"nat/KUBE-MARK-MASQ/0x4000",
		"nat/KUBE-SVC-X/KUBE-SEP-A",
		"nat/KUBE-SEP-A/198.51.100.2:8080",
		"filter/OUTPUT/KUBE-PROXY-FIREWALL",
		"filter/OUTPUT/KUBE-SERVICES",
		"nat/POSTROUTING/KUBE-POSTROUTING",
		"nat/KUBE-POSTROUTING/0x4000",
		"nat/KUBE-POSTROUTING/--random-fully",
	}
	if !slices.Equal(got, want) {
		t.Errorf("path:\n got %q\nwant %q", got, want)
	}
	first := outcomes[0].Path[0]
	if first.RuleIndex != 0 || !strings.HasPrefix(first.Raw, "-A OUTPUT -m comment") {
		t.Errorf("first step = %+v", first)
	}
}

func TestTraceKubeProxyV6(t *testing.T) {
	d := loadDump(t, "../testdata/kube-proxy-v6.txt")
	ctx := Context{LocalAddrs: []netip.Addr{a("2001:db8::1")}}
	outcomes, err := Trace(d, ctx, tcpPort("2001:db8::1", "fd00:20::10", 80, Local))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"ACCEPT endpoint=[fd00:10::2]:8080 masquerade mark=0x0", "ACCEPT endpoint=[fd00:10::3]:8080 masquerade mark=0x0"}
	if got := summary(outcomes); !slices.Equal(got, want) {
		t.Errorf("outcomes %q, want %q", got, want)
	}
	outcomes, err = Trace(d, ctx, tcpPort("fd00:10::7", "fd00:20::20", 80, Incoming))
	if err != nil || !slices.Equal(Verdicts(outcomes), []string{Reject}) {
		t.Errorf("no-endpoint service: %v %v", summary(outcomes), err)
	}
}

// TestTraceSemantics covers the tracer's rules one by one on small rulesets.
func TestTraceSemantics(t *testing.T) {
	tests := []struct {
		name  string
		rules string
		ctx   Context
		pkt   Packet
		want  []string
	}{{
		name: "policy DROP in FORWARD lets only marked packets through",
		rules: `*filter
:FORWARD DROP [0:0]
:KUBE-FORWARD - [0:0]
-A FORWARD -j KUBE-FORWARD
-A KUBE-FORWARD -m mark --mark 0x4000/0x4000 -j ACCEPT
COMMIT
*nat
:KUBE-MARK-MASQ - [0:0]
-A PREROUTING -s 10.0.0.0/8 -j KUBE-MARK-MASQ
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
COMMIT
`,
		pkt:  tcpPort("10.1.1.1", "172.16.0.1", 80, Incoming),
		want: []string{"ACCEPT mark=0x4000"},
	}, {
		name: "policy DROP drops unmarked",
		rules: `*filter
:FORWARD DROP [0:0]
-A FORWARD -m mark --mark 0x4000/0x4000 -j ACCEPT
COMMIT
`,
		pkt:  tcpPort("192.168.1.1", "172.16.0.1", 80, Incoming),
		want: []string{"DROP mark=0x0"},
	}, {
		name: "three-way random split yields three outcomes",
		rules: `*nat
:SVC - [0:0]
-A PREROUTING -j SVC
-A SVC -m statistic --mode random --probability 0.3333333333 -j DNAT --to-destination 10.0.0.1:80
-A SVC -m statistic --mode random --probability 0.5000000000 -j DNAT --to-destination 10.0.0.2:80
-A SVC -j DNAT --to-destination 10.0.0.3:80
COMMIT
`,
		pkt:  tcpPort("192.168.1.1", "172.16.0.1", 80, Incoming),
		want: []string{"ACCEPT endpoint=10.0.0.1:80 mark=0x0", "ACCEPT endpoint=10.0.0.2:80 mark=0x0", "ACCEPT endpoint=10.0.0.3:80 mark=0x0"},
	}, {
		name: "probability 1 always matches, 0 never",
		rules: `*nat
-A PREROUTING -m statistic --mode random --probability 0 -j DNAT --to-destination 10.0.0.9
-A PREROUTING -m statistic --mode random --probability 1.0 -j DNAT --to-destination 10.0.0.1
COMMIT
`,
		pkt:  tcpPort("192.168.1.1", "172.16.0.1", 80, Incoming),
		want: []string{"ACCEPT endpoint=10.0.0.1:80 mark=0x0"},
	}, {
		name: "nth is explored both ways",
		rules: `*nat
-A PREROUTING -m statistic --mode nth --every 2 -j DNAT --to-destination 10.0.0.1
COMMIT
`,
		pkt:  tcpPort("192.168.1.1", "172.16.0.1", 80, Incoming),
		want: []string{"ACCEPT endpoint=10.0.0.1:80 mark=0x0", "ACCEPT mark=0x0"},
	}, {
		name: "identical outcomes by different paths are merged",
		rules: `*filter
-A INPUT -m statistic --mode random --probability 0.5 -j DROP
-A INPUT -j DROP
COMMIT
`,
		ctx:  Context{LocalAddrs: []netip.Addr{a("172.16.0.1")}},
		pkt:  tcpPort("192.168.1.1", "172.16.0.1", 80, Incoming),
		want: []string{"DROP mark=0x0"},
	}, {
		name: "RETURN and goto: a RETURN in a goto'd chain returns to the caller's caller",
		rules: `*filter
:A - [0:0]
:B - [0:0]
-A FORWARD -j A
-A FORWARD -j REJECT
-A A -g B
-A A -j ACCEPT
-A B -j RETURN
COMMIT
`,
		pkt:  tcpPort("192.168.1.1", "172.16.0.1", 80, Incoming),
		want: []string{"REJECT mark=0x0"},
	}, {
		name: "RETURN from a jumped-to chain continues after the jump",
		rules: `*filter
:A - [0:0]
-A FORWARD -j A
-A FORWARD -j REJECT
-A A -j RETURN
-A A -j ACCEPT
COMMIT
`,
		pkt:  tcpPort("192.168.1.1", "172.16.0.1", 80, Incoming),
		want: []string{"REJECT mark=0x0"},
	}, {
		name: "RETURN in a built-in chain applies the policy",
		rules: `*filter
:FORWARD DROP [0:0]
-A FORWARD -j RETURN
-A FORWARD -j ACCEPT
COMMIT
`,
		pkt:  tcpPort("192.168.1.1", "172.16.0.1", 80, Incoming),
		want: []string{"DROP mark=0x0"},
	}, {
		name: "conntrack: NEW matches, ESTABLISHED and INVALID do not, DNAT after DNAT",
		rules: `*nat
-A PREROUTING -p tcp -j DNAT --to-destination 10.0.0.1:8080
COMMIT
*filter
-A FORWARD -m conntrack --ctstate INVALID -j DROP
-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j DROP
-A FORWARD -m conntrack ! --ctstate NEW -j DROP
-A FORWARD -m conntrack --ctstate DNAT -j MARK --set-xmark 0x1/0xffffffff
-A FORWARD -m conntrack --ctstate SNAT -j DROP
COMMIT
`,
		pkt:  tcpPort("192.168.1.1", "172.16.0.1", 80, Incoming),
		want: []string{"ACCEPT endpoint=10.0.0.1:8080 mark=0x1"},
	}, {
		name: "DNAT without port keeps the port; DNAT to a local address goes to INPUT",
		rules: `*nat
-A PREROUTING -j DNAT --to-destination 172.16.0.9
COMMIT
*filter
-A INPUT -j REJECT
COMMIT
`,
		ctx:  Context{LocalAddrs: []netip.Addr{a("172.16.0.9")}},
		pkt:  tcpPort("192.168.1.1", "172.16.0.1", 443, Incoming),
		want: []string{"REJECT endpoint=172.16.0.9:443 mark=0x0"},
	}, {
		name: "local to local visits filter INPUT after POSTROUTING",
		rules: `*filter
-A INPUT -p tcp --dport 22 -j DROP
COMMIT
`,
		ctx:  v4Ctx,
		pkt:  tcpPort("192.0.2.1", "192.0.2.1", 22, Local),
		want: []string{"DROP mark=0x0"},
	}, {
		name: "SNAT in POSTROUTING counts as masquerade",
		rules: `*nat
-A POSTROUTING -o eth0 -j SNAT --to-source 192.0.2.1
COMMIT
`,
		pkt:  Packet{Src: a("10.0.0.1"), Dst: a("8.8.8.8"), Protocol: "udp", DstPort: 53, Origin: Incoming, OutIface: "eth0"},
		want: []string{"ACCEPT masquerade mark=0x0"},
	}, {
		name: "interfaces: -i with wildcard; a local packet has no input interface",
		rules: `*filter
-A FORWARD -i cni+ -j DROP
-A OUTPUT -i lo -j DROP
COMMIT
`,
		pkt:  Packet{Src: a("10.0.0.1"), Dst: a("8.8.8.8"), Protocol: "udp", DstPort: 53, Origin: Incoming, InIface: "cni0"},
		want: []string{"DROP mark=0x0"},
	}, {
		name: "ipset src and dst, with negation",
		rules: `*filter
-A FORWARD -m set --match-set ALLOWED src -m set ! --match-set BLOCKED dst -j ACCEPT
-A FORWARD -j DROP
COMMIT
`,
		ctx: Context{Sets: map[string][]netip.Prefix{
			"ALLOWED": {netip.MustParsePrefix("10.0.0.0/8")},
			"BLOCKED": {netip.MustParsePrefix("8.8.4.4/32")},
		}},
		pkt:  tcpPort("10.9.9.9", "8.8.8.8", 53, Incoming),
		want: []string{"ACCEPT mark=0x0"},
	}, {
		name: "addrtype ! --src-type LOCAL",
		rules: `*nat
-A POSTROUTING -m addrtype ! --src-type LOCAL -j MASQUERADE
COMMIT
`,
		ctx:  v4Ctx,
		pkt:  tcpPort("192.0.2.1", "8.8.8.8", 53, Local),
		want: []string{"ACCEPT mark=0x0"},
	}, {
		name: "a rule that certainly fails needs no more information",
		rules: `*filter
-A FORWARD -p udp -o eth0 -j DROP
COMMIT
`,
		pkt:  tcpPort("10.0.0.1", "8.8.8.8", 53, Incoming),
		want: []string{"ACCEPT mark=0x0"},
	}, {
		name: "LOG and NOTRACK-free rules without target continue",
		rules: `*filter
-A FORWARD -j LOG --log-prefix "seen: "
-A FORWARD -s 10.0.0.1
-A FORWARD -j MARK --set-mark 0x10
COMMIT
`,
		pkt:  tcpPort("10.0.0.1", "8.8.8.8", 53, Incoming),
		want: []string{"ACCEPT mark=0x10"},
	}, {
		name: "missing tables accept",
		rules: `*mangle
COMMIT
`,
		pkt:  tcpPort("10.0.0.1", "8.8.8.8", 53, Incoming),
		want: []string{"ACCEPT mark=0x0"},
	}, {
		name: "an untracked packet (raw CT --notrack) skips nat; conntrack sees UNTRACKED",
		rules: `*raw
-A PREROUTING -p tcp --dport 80 -j CT --notrack
COMMIT
*nat
-A PREROUTING -j DNAT --to-destination 10.0.0.1
COMMIT
*filter
-A FORWARD -m conntrack --ctstate UNTRACKED -j MARK --set-mark 0x7
-A FORWARD -m connmark --mark 0x0 -j DROP
COMMIT
`,
		pkt:  tcpPort("192.168.1.1", "172.16.0.1", 80, Incoming),
		want: []string{"ACCEPT mark=0x7"},
	}, {
		name: "mangle marks are seen by nat and filter; CONNMARK saves and restores",
		rules: `*mangle
-A PREROUTING -j MARK --set-xmark 0x10/0xff
-A PREROUTING -j CONNMARK --save-mark --nfmask 0xff --ctmask 0xff
-A PREROUTING -j MARK --set-xmark 0x0/0xff
-A FORWARD -m connmark --mark 0x10/0xff -j CONNMARK --restore-mark --nfmask 0xf0 --ctmask 0xf0
COMMIT
*filter
-A FORWARD -m mark ! --mark 0x10 -j DROP
COMMIT
`,
		pkt:  tcpPort("192.168.1.1", "172.16.0.1", 80, Incoming),
		want: []string{"ACCEPT mark=0x10"},
	}, {
		name: "conntrack's original destination, multiport, iprange, tcp flags and pkttype",
		rules: `*nat
-A PREROUTING -p tcp -m multiport --dports 443,80:81 -j DNAT --to-destination 10.0.0.1:8080
COMMIT
*filter
-A FORWARD -m conntrack ! --ctorigdst 172.16.0.1 -j DROP
-A FORWARD -m conntrack ! --ctorigdstport 80 -j DROP
-A FORWARD -m conntrack ! --ctreplsrc 10.0.0.1 -j DROP
-A FORWARD -m conntrack ! --ctstatus NONE -j DROP
-A FORWARD -m iprange ! --src-range 192.168.1.0-192.168.1.9 -j DROP
-A FORWARD -p tcp ! --syn -j DROP
-A FORWARD -m pkttype ! --pkt-type unicast -j DROP
-A FORWARD -m pkttype --pkt-type unicast -j ACCEPT
COMMIT
`,
		pkt:  tcpPort("192.168.1.1", "172.16.0.1", 80, Incoming),
		want: []string{"ACCEPT endpoint=10.0.0.1:8080 mark=0x0"},
	}, {
		name: "addrtype --limit-iface-in: local on the input interface only",
		rules: `*filter
-A INPUT -m addrtype --dst-type LOCAL --limit-iface-in -j ACCEPT
-A INPUT -j DROP
COMMIT
`,
		ctx: Context{LocalAddrs: []netip.Addr{a("192.0.2.1"), a("198.51.100.1")},
			IfaceAddrs: map[string][]netip.Prefix{"eth0": {netip.MustParsePrefix("192.0.2.1/24")}, "cbr0": {netip.MustParsePrefix("198.51.100.1/24")}}},
		pkt:  Packet{Src: a("192.0.2.9"), Dst: a("198.51.100.1"), Protocol: "tcp", DstPort: 22, Origin: Incoming, InIface: "eth0"},
		want: []string{"DROP mark=0x0"},
	}, {
		name: "REDIRECT from outside goes to the input interface's address; NETMAP maps the network",
		rules: `*nat
-A PREROUTING -p tcp --dport 80 -j REDIRECT --to-ports 8080
-A PREROUTING -p tcp --dport 81 -j NETMAP --to 10.9.0.0/16
COMMIT
`,
		ctx:  Context{LocalAddrs: []netip.Addr{a("192.0.2.1")}, IfaceAddrs: map[string][]netip.Prefix{"eth0": {netip.MustParsePrefix("192.0.2.1/24")}}},
		pkt:  Packet{Src: a("192.0.2.9"), Dst: a("172.16.3.4"), Protocol: "tcp", DstPort: 80, Origin: Incoming, InIface: "eth0"},
		want: []string{"ACCEPT endpoint=192.0.2.1:8080 mark=0x0"},
	}, {
		name: "NETMAP keeps the host bits",
		rules: `*nat
-A PREROUTING -p tcp --dport 81 -j NETMAP --to 10.9.0.0/16
COMMIT
`,
		pkt:  Packet{Src: a("192.0.2.9"), Dst: a("172.16.3.4"), Protocol: "tcp", DstPort: 81, Origin: Incoming, InIface: "eth0"},
		want: []string{"ACCEPT endpoint=10.9.3.4:81 mark=0x0"},
	}, {
		name: "-o follows the route after DNAT; a PREROUTING rule sees no output interface",
		rules: `*nat
-A PREROUTING ! -o eth9 -j DNAT --to-destination 10.0.0.1
COMMIT
*filter
-A FORWARD -o eth1 -j ACCEPT
-A FORWARD -j DROP
COMMIT
`,
		ctx: Context{Route: func(dst netip.Addr) (string, bool) {
			if dst == a("10.0.0.1") {
				return "eth1", true
			}
			return "eth0", true
		}},
		pkt:  tcpPort("192.168.1.1", "172.16.0.1", 80, Incoming),
		want: []string{"ACCEPT endpoint=10.0.0.1:80 mark=0x0"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := parseDump(t, tt.rules)
			outcomes, err := Trace(d, tt.ctx, tt.pkt)
			if err != nil {
				t.Fatalf("Trace: %v", err)
			}
			if got := summary(outcomes); !slices.Equal(got, tt.want) {
				t.Errorf("outcomes:\n got %q\nwant %q\n%s", got, tt.want, describe(outcomes))
			}
		})
	}
}

func TestTraceErrors(t *testing.T) {
	tests := []struct {
		name  string
		rules string
		msg   string
	}{{
		name:  "loop",
		rules: "*filter\n:A - [0:0]\n:B - [0:0]\n-A FORWARD -j A\n-A A -j B\n-A B -j A\nCOMMIT\n",
		msg:   "a loop through chain A?",
	}, {
		name:  "jump to a missing chain",
		rules: "*filter\n-A FORWARD -m physdev --physdev-is-in -j NOPE\nCOMMIT\n",
		msg:   "trace: filter/FORWARD rule 0 (-A FORWARD -m physdev --physdev-is-in -j NOPE): jump to chain NOPE, which does not exist",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Trace(parseDump(t, tt.rules), Context{}, tcpPort("10.0.0.1", "8.8.8.8", 53, Incoming))
			if err == nil || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("Trace error = %v, want one containing %q", err, tt.msg)
			}
		})
	}
	if _, err := Trace(&iptables.Dump{}, Context{}, Packet{Src: a("10.0.0.1"), Dst: a("fd00::1")}); err == nil {
		t.Errorf("mixed families accepted")
	}
	if _, err := Trace(&iptables.Dump{}, Context{}, Packet{}); err == nil {
		t.Errorf("packet without addresses accepted")
	}
}

// failingChains fails to read one chain, as a live node's iptables can.
type failingChains struct {
	DumpChains
	bad string
}

func (f failingChains) Chain(table iptables.Table, name string) (*iptables.Chain, error) {
	if name == f.bad {
		return nil, errors.New("exit status 4: resource busy")
	}
	return f.DumpChains.Chain(table, name)
}

// A chain that cannot be read stops the trace with the read's error, and
// names the chain; chains the packet does not reach are never asked for.
func TestTraceChainReadError(t *testing.T) {
	d := loadDump(t, "../testdata/kube-proxy-v4.txt")
	_, err := TraceChains(failingChains{DumpChains{d}, "KUBE-SVC-X"}, v4Ctx, tcpPort("198.51.100.7", "203.0.113.10", 80, Incoming))
	if err == nil || !strings.Contains(err.Error(), "reading chain nat/KUBE-SVC-X: exit status 4: resource busy") {
		t.Errorf("error = %v", err)
	}
	if _, err := TraceChains(failingChains{DumpChains{d}, "KUBE-SVC-X"}, v4Ctx, tcpPort("198.51.100.7", "203.0.113.20", 80, Incoming)); err != nil {
		t.Errorf("a packet that never reaches the unreadable chain: %v", err)
	}
}

// Tests the tracer cannot decide are followed both ways: each outcome
// carries the undecided test, its kind, and its own assumption; the trace
// never stops on them.
func TestTraceUndecided(t *testing.T) {
	kinds := []error{ErrNeedInIface, ErrNeedOutIface, ErrNeedSrcPort, ErrNeedLocalAddrs, ErrNeedRoutes, ErrUnknownSet, ErrNeedBridges, ErrUndecidable, ErrUnsupported}
	tests := []struct {
		name  string
		rules string
		ctx   Context
		kind  error
		what  string // Undecided.What contains it
		step  string // the rule's table/chain[index]
		want  []string
	}{{
		name:  "input interface",
		rules: "*nat\n-A PREROUTING -i eth0 -j DNAT --to-destination 10.0.0.9\nCOMMIT\n",
		kind:  ErrNeedInIface, what: "the input interface is unknown", step: "nat/PREROUTING[0]",
		want: []string{"ACCEPT endpoint=10.0.0.9:53 mark=0x0 uncertain", "ACCEPT mark=0x0 uncertain"},
	}, {
		name:  "output interface, in a chain reached by a jump",
		rules: "*filter\n:KUBE-FORWARD - [0:0]\n-A FORWARD -j KUBE-FORWARD\n-A KUBE-FORWARD ! -o cni+ -j DROP\nCOMMIT\n",
		kind:  ErrNeedOutIface, what: "the output interface is unknown", step: "filter/KUBE-FORWARD[0]",
		want: []string{"ACCEPT mark=0x0 uncertain", "DROP mark=0x0 uncertain"},
	}, {
		name:  "source port",
		rules: "*filter\n-A FORWARD -p tcp --sport 1000:2000 -j DROP\nCOMMIT\n",
		kind:  ErrNeedSrcPort, what: "the source port is unknown", step: "filter/FORWARD[0]",
		want: []string{"ACCEPT mark=0x0 uncertain", "DROP mark=0x0 uncertain"},
	}, {
		name:  "set not in the context",
		rules: "*filter\n-A FORWARD -m set --match-set cali40s dst -j DROP\nCOMMIT\n",
		kind:  ErrUnknownSet, what: "set cali40s: its members are unknown", step: "filter/FORWARD[0]",
		want: []string{"ACCEPT mark=0x0 uncertain", "DROP mark=0x0 uncertain"},
	}, {
		name:  "set that cannot be read",
		rules: "*filter\n-A FORWARD -m set --match-set cali40s dst -j DROP\nCOMMIT\n",
		ctx:   Context{ReadSet: func(string) ([]netip.Prefix, error) { return nil, errors.New("permission denied") }},
		kind:  ErrUnknownSet, what: "set cali40s: reading it failed: permission denied", step: "filter/FORWARD[0]",
		want: []string{"ACCEPT mark=0x0 uncertain", "DROP mark=0x0 uncertain"},
	}, {
		name:  "two-dimensional set",
		rules: "*filter\n-A FORWARD -m set --match-set KUBE-X dst,dst -j DROP\nCOMMIT\n",
		ctx:   Context{Sets: map[string][]netip.Prefix{"KUBE-X": nil}},
		kind:  ErrUnsupported, what: "set KUBE-X is matched on dst,dst", step: "filter/FORWARD[0]",
		want: []string{"ACCEPT mark=0x0 uncertain", "DROP mark=0x0 uncertain"},
	}, {
		name:  "address type the tracer does not model",
		rules: "*filter\n-A FORWARD -m addrtype --dst-type BLACKHOLE -j DROP\nCOMMIT\n",
		kind:  ErrUnsupported, what: "address type BLACKHOLE", step: "filter/FORWARD[0]",
		want: []string{"ACCEPT mark=0x0 uncertain", "DROP mark=0x0 uncertain"},
	}, {
		name:  "rate limit",
		rules: "*filter\n-A FORWARD -m limit --limit 3/min -j ACCEPT\n-A FORWARD -j DROP\nCOMMIT\n",
		kind:  ErrUndecidable, what: "-m limit depends on the rate of matching packets", step: "filter/FORWARD[0]",
		want: []string{"ACCEPT mark=0x0 uncertain", "DROP mark=0x0 uncertain"},
	}, {
		name:  "a rule the parser rejects, with a verdict target",
		rules: "*filter\n-A FORWARD -m u32 --u32 0x0 -j DROP\nCOMMIT\n",
		kind:  ErrUnsupported, what: `the tracer does not understand this rule: unsupported match module "u32"`, step: "filter/FORWARD[0]",
		want: []string{"ACCEPT mark=0x0 uncertain", "DROP mark=0x0 uncertain"},
	}, {
		name:  "a rule the parser rejects, with a target it cannot follow",
		rules: "*filter\n-A FORWARD -j SET --add-set x src\nCOMMIT\n",
		kind:  ErrUnsupported, what: "nor its target SET, and assumed it did not match", step: "filter/FORWARD[0]",
		want: []string{"ACCEPT mark=0x0 uncertain"},
	}, {
		name:  "DNAT to a range",
		rules: "*nat\n-A PREROUTING -p tcp -j DNAT --to-destination 10.0.0.1-10.0.0.2:80\nCOMMIT\n",
		kind:  ErrUndecidable, what: "DNAT picks one of 10.0.0.1-10.0.0.2:80 per connection", step: "nat/PREROUTING[0]",
		want: []string{"ACCEPT endpoint=10.0.0.1:80 mark=0x0 uncertain"},
	}, {
		name:  "whether the destination is local, when the node's addresses are not all known",
		rules: "*nat\n-A PREROUTING -m addrtype --dst-type LOCAL -j DROP\nCOMMIT\n",
		ctx:   Context{LocalAddrsPartial: true},
		kind:  ErrNeedLocalAddrs, what: "whether 8.8.8.8 is this node's address is unknown", step: "nat/PREROUTING[0]",
		want: []string{"ACCEPT mark=0x0 uncertain", "DROP mark=0x0 uncertain"},
	}, {
		name:  "physdev without knowing the bridges",
		rules: "*filter\n-A FORWARD -m physdev --physdev-is-bridged -j DROP\nCOMMIT\n",
		kind:  ErrNeedBridges, what: "whether \"eth0\" is a bridge", step: "filter/FORWARD[0]",
		want: []string{"ACCEPT mark=0x0 uncertain", "DROP mark=0x0 uncertain"},
	}, {
		name:  "NFQUEUE",
		rules: "*filter\n-A FORWARD -j NFQUEUE --queue-num 1\nCOMMIT\n",
		kind:  ErrUndecidable, what: "NFQUEUE hands the packet to a userspace program", step: "filter/FORWARD[0]",
		want: []string{"ACCEPT mark=0x0 uncertain", "DROP mark=0x0 uncertain"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := tcpPort("10.0.0.1", "8.8.8.8", 53, Incoming)
			if strings.Contains(tt.name, "physdev") {
				p.InIface = "eth0"
			}
			p.SrcPort = 0
			outcomes, err := Trace(parseDump(t, tt.rules), tt.ctx, p)
			if err != nil {
				t.Fatalf("Trace: %v", err)
			}
			if got := summary(outcomes); !slices.Equal(got, tt.want) {
				t.Errorf("outcomes %q, want %q\n%s", got, tt.want, describe(outcomes))
			}
			assumed := map[bool]bool{}
			for _, o := range outcomes {
				if len(o.Uncertain) != 1 {
					t.Fatalf("%s: Uncertain = %+v, want one", o, o.Uncertain)
				}
				u := o.Uncertain[0]
				assumed[u.Matched] = true
				if got := fmt.Sprintf("%s/%s[%d]", u.Step.Table, u.Step.Chain, u.Step.RuleIndex); got != tt.step {
					t.Errorf("undecided at %s, want %s", got, tt.step)
				}
				if !strings.Contains(u.What, tt.what) {
					t.Errorf("What = %q, want it to contain %q", u.What, tt.what)
				}
				for _, k := range kinds {
					if got, want := errors.Is(u.Kind, k), k == tt.kind; got != want {
						t.Errorf("errors.Is(%v, %v) = %v, want %v", u.Kind, k, got, want)
					}
				}
			}
			if len(outcomes) == 2 && !(assumed[true] && assumed[false]) {
				t.Errorf("the two outcomes should assume opposite answers: %+v", outcomes)
			}
		})
	}
}

// The tracer works on the Fake's state just as on parsed text.
func TestTraceFake(t *testing.T) {
	text, err := os.ReadFile("../testdata/kube-proxy-v4.txt")
	if err != nil {
		t.Fatal(err)
	}
	f := iptables.NewFake(iptables.IPv4)
	if err := f.Restore(t.Context(), text, iptables.RestoreOptions{NoFlush: true}); err != nil {
		t.Fatal(err)
	}
	outcomes, err := Trace(f.Dump(), v4Ctx, tcpPort("198.51.100.7", "203.0.113.10", 80, Incoming))
	if err != nil {
		t.Fatal(err)
	}
	if got := Endpoints(outcomes); !slices.Equal(got, webEPs) {
		t.Errorf("Endpoints = %q", got)
	}
}

func TestEndpointsSortsByAddress(t *testing.T) {
	ap := netip.MustParseAddrPort
	outcomes := []Outcome{
		{Verdict: Accept, Endpoint: ap("10.0.0.10:80")},
		{Verdict: Accept, Endpoint: ap("10.0.0.2:80")},
		{Verdict: Accept, Endpoint: ap("10.0.0.2:80")},
		{Verdict: Drop, Endpoint: ap("10.0.0.3:80")},
		{Verdict: Accept},
	}
	if got, want := Endpoints(outcomes), []string{"10.0.0.2:80", "10.0.0.10:80"}; !slices.Equal(got, want) {
		t.Errorf("Endpoints = %q, want %q", got, want)
	}
	if got, want := Verdicts(outcomes), []string{"ACCEPT", "DROP"}; !slices.Equal(got, want) {
		t.Errorf("Verdicts = %q, want %q", got, want)
	}
}
