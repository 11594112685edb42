package iptables

import (
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func TestParseRuleArgs(t *testing.T) {
	pfx := netip.MustParsePrefix
	addr := netip.MustParseAddr
	tests := []struct {
		name string
		rule string
		want *RuleSpec
	}{{
		name: "cluster IP jump",
		rule: `-m comment --comment "ns/web:http cluster IP" -m tcp -p tcp -d 203.0.113.10 --dport 80 -j KUBE-SVC-X`,
		want: &RuleSpec{
			Matches: []Match{
				&CommentMatch{Comment: "ns/web:http cluster IP"},
				&ProtocolMatch{Protocol: "tcp"},
				&AddrMatch{Prefix: pfx("203.0.113.10/32")},
				&PortMatch{Protocol: "tcp", Min: 80, Max: 80},
			},
			Target: Target{Name: "KUBE-SVC-X"},
		},
	}, {
		name: "negated source CIDR, implicit tcp match, port range",
		rule: `! -s 198.51.100.7/24 -p TCP ! --sport 1000:2000 -j KUBE-MARK-MASQ`,
		want: &RuleSpec{
			Matches: []Match{
				&AddrMatch{Source: true, Prefix: pfx("198.51.100.0/24"), Negate: true},
				&ProtocolMatch{Protocol: "tcp"},
				&PortMatch{Protocol: "tcp", Source: true, Min: 1000, Max: 2000, Negate: true},
			},
			Target: Target{Name: "KUBE-MARK-MASQ"},
		},
	}, {
		name: "open port ranges and netmask",
		rule: `-p udp -m udp --dport 30000: --sport :99 -d 10.1.2.3/255.255.0.0`,
		want: &RuleSpec{
			Matches: []Match{
				&ProtocolMatch{Protocol: "udp"},
				&PortMatch{Protocol: "udp", Min: 30000, Max: 65535},
				&PortMatch{Protocol: "udp", Source: true, Min: 0, Max: 99},
				&AddrMatch{Prefix: pfx("10.1.0.0/16")},
			},
		},
	}, {
		name: "interfaces",
		rule: `-i cni+ ! -o eth0 -j ACCEPT`,
		want: &RuleSpec{
			Matches: []Match{&IfaceMatch{In: true, Name: "cni+"}, &IfaceMatch{Name: "eth0", Negate: true}},
			Target:  Target{Name: "ACCEPT"},
		},
	}, {
		name: "addrtype",
		rule: `-m addrtype ! --src-type LOCAL --dst-type LOCAL,BROADCAST -j KUBE-NODEPORTS`,
		want: &RuleSpec{
			Matches: []Match{&AddrTypeMatch{SrcType: "LOCAL", NegateSrc: true, DstType: "LOCAL,BROADCAST"}},
			Target:  Target{Name: "KUBE-NODEPORTS"},
		},
	}, {
		name: "mark with and without mask",
		rule: `-m mark ! --mark 0x4000/0x4000 -m mark --mark 7 -j RETURN`,
		want: &RuleSpec{
			Matches: []Match{&MarkMatch{Value: 0x4000, Mask: 0x4000, Negate: true}, &MarkMatch{Value: 7, Mask: 0xffffffff}},
			Target:  Target{Name: "RETURN"},
		},
	}, {
		name: "statistic random",
		rule: `-m statistic --mode random --probability 0.3333333333 -j KUBE-SEP-A`,
		want: &RuleSpec{
			Matches: []Match{&StatisticMatch{Mode: "random", Probability: 0.3333333333}},
			Target:  Target{Name: "KUBE-SEP-A"},
		},
	}, {
		name: "statistic nth",
		rule: `-m statistic --mode nth --every 3 --packet 1 -j KUBE-SEP-A`,
		want: &RuleSpec{
			Matches: []Match{&StatisticMatch{Mode: "nth", Every: 3, Packet: 1}},
			Target:  Target{Name: "KUBE-SEP-A"},
		},
	}, {
		name: "recent rcheck",
		rule: `-m recent --name KUBE-SEP-A --rcheck --seconds 10800 --reap --mask 255.255.255.255 --rsource -j KUBE-SEP-A`,
		want: &RuleSpec{
			Matches: []Match{&RecentMatch{Name: "KUBE-SEP-A", Mode: "rcheck", Seconds: 10800, Reap: true, Mask: "255.255.255.255"}},
			Target:  Target{Name: "KUBE-SEP-A"},
		},
	}, {
		name: "recent set, default name",
		rule: `-m recent --set --rdest -p tcp -j DNAT --to-destination 10.0.0.1:80`,
		want: &RuleSpec{
			Matches: []Match{&RecentMatch{Name: "DEFAULT", Mode: "set", Dest: true}, &ProtocolMatch{Protocol: "tcp"}},
			Target:  Target{Name: "DNAT", NAT: &NATRange{MinAddr: addr("10.0.0.1"), MaxAddr: addr("10.0.0.1"), MinPort: 80, MaxPort: 80}},
		},
	}, {
		name: "conntrack",
		rule: `-m conntrack ! --ctstate RELATED,ESTABLISHED -j DROP`,
		want: &RuleSpec{
			Matches: []Match{&ConntrackMatch{States: []string{"RELATED", "ESTABLISHED"}, Negate: true}},
			Target:  Target{Name: "DROP"},
		},
	}, {
		name: "ipset",
		rule: `-m set ! --match-set KUBE-LB src,dst -j DROP`,
		want: &RuleSpec{
			Matches: []Match{&SetMatch{Name: "KUBE-LB", Flags: []string{"src", "dst"}, Negate: true}},
			Target:  Target{Name: "DROP"},
		},
	}, {
		name: "IPv6 DNAT with brackets",
		rule: `-p tcp -j DNAT --to-destination [fd00::2]:8080`,
		want: &RuleSpec{
			Matches: []Match{&ProtocolMatch{Protocol: "tcp"}},
			Target:  Target{Name: "DNAT", NAT: &NATRange{MinAddr: addr("fd00::2"), MaxAddr: addr("fd00::2"), MinPort: 8080, MaxPort: 8080}},
		},
	}, {
		name: "SNAT range",
		rule: `-j SNAT --to-source 192.0.2.1-192.0.2.9:1000-2000 --random-fully --persistent`,
		want: &RuleSpec{Target: Target{Name: "SNAT", RandomFully: true, Persistent: true,
			NAT: &NATRange{MinAddr: addr("192.0.2.1"), MaxAddr: addr("192.0.2.9"), MinPort: 1000, MaxPort: 2000}}},
	}, {
		name: "masquerade",
		rule: `-m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully`,
		want: &RuleSpec{
			Matches: []Match{&CommentMatch{Comment: "kubernetes service traffic requiring SNAT"}},
			Target:  Target{Name: "MASQUERADE", RandomFully: true},
		},
	}, {
		name: "or-mark",
		rule: `-j MARK --or-mark 0x4000`,
		want: &RuleSpec{Target: Target{Name: "MARK", MarkValue: 0x4000, MarkMask: 0x4000}},
	}, {
		name: "xor-mark",
		rule: `-j MARK --xor-mark 0x4000`,
		want: &RuleSpec{Target: Target{Name: "MARK", MarkValue: 0x4000}},
	}, {
		name: "set-xmark",
		rule: `-j MARK --set-xmark 0x4000/0x4000`,
		want: &RuleSpec{Target: Target{Name: "MARK", MarkValue: 0x4000, MarkMask: 0x4000}},
	}, {
		name: "set-mark",
		rule: `-j MARK --set-mark 0x1/0xf0`,
		want: &RuleSpec{Target: Target{Name: "MARK", MarkValue: 0x1, MarkMask: 0xf1}},
	}, {
		name: "and-mark",
		rule: `-j MARK --and-mark 0xff`,
		want: &RuleSpec{Target: Target{Name: "MARK", MarkValue: 0, MarkMask: 0xffffff00}},
	}, {
		name: "reject-with",
		rule: `-p tcp -d 10.0.0.1 --dport 80 -j REJECT --reject-with icmp-port-unreachable`,
		want: &RuleSpec{
			Matches: []Match{&ProtocolMatch{Protocol: "tcp"}, &AddrMatch{Prefix: pfx("10.0.0.1/32")}, &PortMatch{Protocol: "tcp", Min: 80, Max: 80}},
			Target:  Target{Name: "REJECT", RejectWith: "icmp-port-unreachable"},
		},
	}, {
		name: "goto",
		rule: `-g KUBE-SVC-X`,
		want: &RuleSpec{Target: Target{Name: "KUBE-SVC-X", Goto: true}},
	}, {
		name: "no target",
		rule: `-s 10.0.0.0/8`,
		want: &RuleSpec{Matches: []Match{&AddrMatch{Source: true, Prefix: pfx("10.0.0.0/8")}}},
	}, {
		name: "IPv6 source",
		rule: `! -s fd00:10::/64 -j X`,
		want: &RuleSpec{Matches: []Match{&AddrMatch{Source: true, Prefix: pfx("fd00:10::/64"), Negate: true}}, Target: Target{Name: "X"}},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args, err := SplitLine(tt.rule)
			if err != nil {
				t.Fatal(err)
			}
			got, err := ParseRuleArgs(args)
			if err != nil {
				t.Fatalf("ParseRuleArgs(%s): %v", tt.rule, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseRuleArgs(%s):\n got %s\nwant %s", tt.rule, dumpSpec(got), dumpSpec(tt.want))
			}
		})
	}
}

func dumpSpec(s *RuleSpec) string {
	var b strings.Builder
	for _, m := range s.Matches {
		fmt.Fprintf(&b, "%T%+v; ", m, m)
	}
	fmt.Fprintf(&b, "target %+v", s.Target)
	if s.Target.NAT != nil {
		fmt.Fprintf(&b, " nat %+v", *s.Target.NAT)
	}
	return b.String()
}

func TestParseRuleArgsErrors(t *testing.T) {
	tests := []struct{ rule, msg string }{
		{`-m multiport --dports 80,443 -j ACCEPT`, `unsupported match module "multiport"`},
		{`-m tcp -p tcp --tcp-flags SYN SYN -j ACCEPT`, "unknown option --tcp-flags"},
		{`-m tcp --dport 80 -j ACCEPT`, "-m tcp needs -p tcp"},
		{`-p udp -m tcp --dport 80`, "-m tcp needs -p tcp"},
		{`--dport 80 -j ACCEPT`, "unknown option --dport"},
		{`! -p tcp --dport 80`, "unknown option --dport"},
		{`-j KUBE-SVC-X --to-destination 1.2.3.4`, "target KUBE-SVC-X is a chain"},
		{`-j ACCEPT --reject-with foo`, "unknown option --reject-with"},
		{`-s 10.0.0.300 -j ACCEPT`, "invalid address"},
		{`-s 10.0.0.0/33 -j ACCEPT`, "invalid prefix length"},
		{`-s 10.0.0.0/255.0.255.0`, "non-contiguous netmask"},
		{`-s`, "option -s needs a value"},
		{`-p tcp --dport 80:70`, "backwards"},
		{`-p tcp --dport http`, "invalid port"},
		{`-p gre`, "unsupported protocol"},
		{`! ! -s 1.2.3.4`, "double negation"},
		{`-s 1.2.3.4 !`, `trailing "!"`},
		{`! -m comment --comment x`, `"!" cannot precede -m`},
		{`-m comment ! --comment x`, "cannot be negated"},
		{`-m comment -j ACCEPT`, "-m comment needs --comment"},
		{`-m mark --mark 0x4000/0xfffffffff`, "invalid mask"},
		{`-m mark --mark x`, "invalid mark"},
		{`-m mark`, "-m mark needs --mark"},
		{`-m statistic --mode random --probability 1.5`, "between 0 and 1"},
		{`-m statistic --mode random`, "needs --probability"},
		{`-m statistic --mode nth --probability 0.5 --every 2`, "nth needs --every"},
		{`-m statistic --probability 0.5`, "needs --mode"},
		{`-m statistic --mode roundrobin`, "unknown mode"},
		{`-m recent --name X`, "needs one of --set"},
		{`-m recent --set --rcheck`, "only one of"},
		{`-m recent --set --seconds 10`, "need --rcheck or --update"},
		{`-m recent --rcheck --reap`, "--reap needs --seconds"},
		{`-m conntrack --ctstate NEW,BOGUS`, `unknown state "BOGUS"`},
		{`-m conntrack --ctorigdst 1.2.3.4`, "unknown option --ctorigdst"},
		{`-m conntrack`, "needs --ctstate"},
		{`-m addrtype --dst-type LOCALISH`, "unknown address type"},
		{`-m addrtype`, "needs --src-type or --dst-type"},
		{`-m set --match-set KUBE-X`, "needs a value"},
		{`-m set --match-set KUBE-X up`, "neither src nor dst"},
		{`-m comment --comment a --comment b`, "given twice"},
		{`-j DNAT`, "needs --to-destination"},
		{`-j DNAT --to-destination 10.0.0.1:0`, "invalid port range"},
		{`-j DNAT --to-destination [fd00::1`, "unterminated ["},
		{`-j SNAT`, "needs --to-source"},
		{`-j MARK`, "needs a mark operation"},
		{`-j MARK --or-mark 1/1`, "takes no mask"},
		{`-j MARK --or-mark 1 --xor-mark 2`, "only one mark operation"},
		{`-j ACCEPT -j DROP`, "more than one target"},
		{`! -j ACCEPT`, `"!" cannot precede -j`},
		{`-j`, "needs a value"},
		{`-f -j ACCEPT`, `unsupported argument "-f"`},
		{`-i averyveryverylongname`, "invalid interface name"},
		{`-j MASQUERADE --to-ports abc`, "invalid port"},
	}
	for _, tt := range tests {
		args, err := SplitLine(tt.rule)
		if err != nil {
			t.Fatal(err)
		}
		_, err = ParseRuleArgs(args)
		if err == nil || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("ParseRuleArgs(%s) error = %v, want one containing %q", tt.rule, err, tt.msg)
		}
	}
}

func TestIfaceAndPortMatches(t *testing.T) {
	tests := []struct {
		m     IfaceMatch
		iface string
		want  bool
	}{
		{IfaceMatch{Name: "eth0"}, "eth0", true},
		{IfaceMatch{Name: "eth0"}, "eth01", false},
		{IfaceMatch{Name: "cni+"}, "cni0", true},
		{IfaceMatch{Name: "cni+"}, "eth0", false},
		{IfaceMatch{Name: "+"}, "anything", true},
		{IfaceMatch{Name: "cni+", Negate: true}, "cni0", false},
		{IfaceMatch{Name: "eth0", Negate: true}, "eth1", true},
	}
	for _, tt := range tests {
		if got := tt.m.Matches(tt.iface); got != tt.want {
			t.Errorf("%+v.Matches(%q) = %v, want %v", tt.m, tt.iface, got, tt.want)
		}
	}
	pm := PortMatch{Min: 10, Max: 20}
	if !pm.Matches(10) || !pm.Matches(20) || pm.Matches(21) {
		t.Errorf("port range bounds are wrong")
	}
	pm.Negate = true
	if pm.Matches(15) || !pm.Matches(9) {
		t.Errorf("negated port range is wrong")
	}
}

func TestNATRangeString(t *testing.T) {
	for _, s := range []string{"10.0.0.1", "10.0.0.1:80", "10.0.0.1-10.0.0.9:80-90", "[fd00::1]:8080", "[fd00::1]"} {
		r, err := parseNATRange(s)
		if err != nil {
			t.Fatalf("parseNATRange(%q): %v", s, err)
		}
		if got := r.String(); got != s {
			t.Errorf("parseNATRange(%q).String() = %q", s, got)
		}
	}
	if r, err := parseNATRange("fd00::1"); err != nil || r.MinAddr != netip.MustParseAddr("fd00::1") || r.MinPort != 0 {
		t.Errorf("bare IPv6 address: %+v, %v", r, err)
	}
}
