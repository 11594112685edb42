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
		{`-m u32 --u32 0x0 -j ACCEPT`, `unsupported match module "u32"`},
		{`-m multiport --dports 80,443 -j ACCEPT`, "-m multiport needs -p tcp"},
		{`-m tcp -p tcp --tcp-flags SYN BOGUS -j ACCEPT`, `unknown TCP flag "BOGUS"`},
		{`-p udp --syn`, "unknown option --syn"},
		{`-m tcp --dport 80 -j ACCEPT`, "-m tcp needs -p tcp"},
		{`-p udp -m tcp --dport 80`, "-m tcp needs -p tcp"},
		{`--dport 80 -j ACCEPT`, "unknown option --dport"},
		{`! -p tcp --dport 80`, "unknown option --dport"},
		{`-j KUBE-SVC-X --to-destination 1.2.3.4`, "target KUBE-SVC-X is a chain"},
		{`-j ACCEPT --reject-with foo`, "unknown option --reject-with"},
		{`-s 10.0.0.300 -j ACCEPT`, "invalid address"},
		{`-s 10.0.0.0/33 -j ACCEPT`, "invalid prefix length"},
		{`-s 10.0.0.0/::ff`, "invalid prefix length"}, // a mask of the other family
		{`-s`, "option -s needs a value"},
		{`-p tcp --dport 80:70`, "backwards"},
		{`-p tcp --dport http`, "invalid port"},
		{`-p nosuchproto`, "unsupported protocol"},
		{`-p 256`, "out of range"},
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
		{`-m conntrack --ctorigdst 1.2.3.400`, "invalid address"},
		{`-m conntrack --ctfoo 1`, "unknown option --ctfoo"},
		{`-m conntrack --ctdir SIDEWAYS`, "neither ORIGINAL nor REPLY"},
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

// TestParseRuleArgsExact pins the parser's whole answer, error text or
// parsed rule, for the corners the other tests leave open: which of two
// faults is reported first, exact error texts, options that a later -m, the
// target or an implicit protocol match takes, and every option of every
// module and target at least once.
func TestParseRuleArgsExact(t *testing.T) {
	tests := []struct{ rule, want string }{
		{"-m statistic ! --mode random --probability 0.5", "error: -m statistic --mode: cannot be negated"},
		{"-m statistic --mode nth ! --every 2 ! --packet 1", "error: -m statistic --packet: cannot be negated"},
		{"-m statistic --mode nth --every 2 --packet x", "error: -m statistic --packet: invalid number \"x\""},
		{"-m statistic --mode nth --every -1", "error: -m statistic --every: invalid number \"-1\""},
		{"-m statistic --mode random --probability 0.5 --every 2", "error: -m statistic --mode random needs --probability (and only that)"},
		{"-m statistic --mode nth --every 2 ! --probability 2", "error: -m statistic --probability: probability \"2\" is not a number between 0 and 1"},
		{"-m addrtype --dst-type LOCAL ! --limit-iface-in", "error: -m addrtype --limit-iface-in: cannot be negated"},
		{"-m addrtype --dst-type LOCAL ! --limit-iface-out", "error: -m addrtype --limit-iface-out: cannot be negated"},
		{"-m addrtype --dst-type LOCAL --limit-iface-in --limit-iface-out", "*iptables.AddrTypeMatch&{SrcType: DstType:LOCAL NegateSrc:false NegateDst:false LimitIfaceIn:true LimitIfaceOut:true}; target {Name: Goto:false NAT:<nil> ToPorts: Random:false RandomFully:false Persistent:false MarkValue:0 MarkMask:0 RejectWith: LogPrefix: LogLevel: Ext:<nil>}"},
		{"-m addrtype --src-type", "error: option --src-type needs a value"},
		{"-m recent --rcheck ! --name X", "error: -m recent --name: cannot be negated"},
		{"-m recent ! --update --hitcount 3 --seconds 60 --rttl --name Y --rdest --rsource", "*iptables.RecentMatch&{Name:Y Mode:update Seconds:60 Hitcount:3 Reap:false RTTL:true Dest:false Mask: Negate:true}; target {Name: Goto:false NAT:<nil> ToPorts: Random:false RandomFully:false Persistent:false MarkValue:0 MarkMask:0 RejectWith: LogPrefix: LogLevel: Ext:<nil>}"},
		{"-m recent --remove --name Z", "*iptables.RecentMatch&{Name:Z Mode:remove Seconds:0 Hitcount:0 Reap:false RTTL:false Dest:false Mask: Negate:false}; target {Name: Goto:false NAT:<nil> ToPorts: Random:false RandomFully:false Persistent:false MarkValue:0 MarkMask:0 RejectWith: LogPrefix: LogLevel: Ext:<nil>}"},
		{"-m recent --set --update", "error: -m recent --update: only one of --set, --rcheck, --update, --remove is allowed"},
		{"-m recent --rcheck --seconds x", "error: -m recent --seconds: invalid number \"x\""},
		{"-m recent --rcheck --hitcount -2", "error: -m recent --hitcount: invalid number \"-2\""},
		{"-m recent --rcheck --mask 255.255.0.x", "error: -m recent --mask: invalid mask \"255.255.0.x\""},
		{"-m recent --rcheck ! --reap --seconds 5", "error: -m recent --reap: cannot be negated"},
		{"-m recent --set --reap", "error: -m recent --seconds/--hitcount/--reap need --rcheck or --update"},
		{"-m recent --remove --hitcount 2", "error: -m recent --seconds/--hitcount/--reap need --rcheck or --update"},
		{"-m set --match-set \"\" src", "error: -m set --match-set: empty set name"},
		{"-m set --match-set", "error: option --match-set needs a value"},
		{"-m set --match-set X src,dst,src", "*iptables.SetMatch&{Name:X Flags:[src dst src] Negate:false}; target {Name: Goto:false NAT:<nil> ToPorts: Random:false RandomFully:false Persistent:false MarkValue:0 MarkMask:0 RejectWith: LogPrefix: LogLevel: Ext:<nil>}"},
		{"-m set --match-set X src -m set ! --match-set Y dst", "*iptables.SetMatch&{Name:X Flags:[src] Negate:false}; *iptables.SetMatch&{Name:Y Flags:[dst] Negate:true}; target {Name: Goto:false NAT:<nil> ToPorts: Random:false RandomFully:false Persistent:false MarkValue:0 MarkMask:0 RejectWith: LogPrefix: LogLevel: Ext:<nil>}"},
		{"-m conntrack --ctstate NEW --ctstate ESTABLISHED", "error: -m conntrack: option --ctstate given twice"},
		{"-m conntrack ! --ctstate \"\"", "error: -m conntrack --ctstate: unknown state \"\""},
		{"-m comment --comment", "error: option --comment needs a value"},
		{"-m comment --comment \"\"", "*iptables.CommentMatch&{Comment:}; target {Name: Goto:false NAT:<nil> ToPorts: Random:false RandomFully:false Persistent:false MarkValue:0 MarkMask:0 RejectWith: LogPrefix: LogLevel: Ext:<nil>}"},
		{"-m comment --comment a -m comment --comment b", "*iptables.CommentMatch&{Comment:a}; *iptables.CommentMatch&{Comment:b}; target {Name: Goto:false NAT:<nil> ToPorts: Random:false RandomFully:false Persistent:false MarkValue:0 MarkMask:0 RejectWith: LogPrefix: LogLevel: Ext:<nil>}"},
		{"-m mark --mark 1 --mark 2", "error: -m mark: option --mark given twice"},
		{"-m mark ! --mark 0x1/0x1", "*iptables.MarkMatch&{Value:1 Mask:1 Negate:true}; target {Name: Goto:false NAT:<nil> ToPorts: Random:false RandomFully:false Persistent:false MarkValue:0 MarkMask:0 RejectWith: LogPrefix: LogLevel: Ext:<nil>}"},
		{"-m tcp -p tcp --dport 80 --dport 81", "error: -m tcp: option --dport given twice"},
		{"-p tcp --dport 80 --dport 81", "error: -m tcp: option --dport given twice"},
		{"-p tcp --dport 80 ! --destination-port 81", "*iptables.ProtocolMatch&{Protocol:tcp Negate:false}; *iptables.PortMatch&{Protocol:tcp Source:false Min:80 Max:80 Negate:false}; *iptables.PortMatch&{Protocol:tcp Source:false Min:81 Max:81 Negate:true}; target {Name: Goto:false NAT:<nil> ToPorts: Random:false RandomFully:false Persistent:false MarkValue:0 MarkMask:0 RejectWith: LogPrefix: LogLevel: Ext:<nil>}"},
		{"-p tcp -m udp --dport 80", "error: -m udp needs -p udp"},
		{"-p udp -m udp -m tcp --dport 80", "error: -m tcp needs -p tcp"},
		{"-p sctp --sport 5 ! --source-port 6:7", "*iptables.ProtocolMatch&{Protocol:sctp Negate:false}; *iptables.PortMatch&{Protocol:sctp Source:true Min:5 Max:5 Negate:false}; *iptables.PortMatch&{Protocol:sctp Source:true Min:6 Max:7 Negate:true}; target {Name: Goto:false NAT:<nil> ToPorts: Random:false RandomFully:false Persistent:false MarkValue:0 MarkMask:0 RejectWith: LogPrefix: LogLevel: Ext:<nil>}"},
		{"-p udp --dport 80 -m udp --dport 81", "*iptables.ProtocolMatch&{Protocol:udp Negate:false}; *iptables.PortMatch&{Protocol:udp Source:false Min:80 Max:80 Negate:false}; *iptables.PortMatch&{Protocol:udp Source:false Min:81 Max:81 Negate:false}; target {Name: Goto:false NAT:<nil> ToPorts: Random:false RandomFully:false Persistent:false MarkValue:0 MarkMask:0 RejectWith: LogPrefix: LogLevel: Ext:<nil>}"},
		{"-p tcp --dport 80 -j ACCEPT --dport 81", "error: -m tcp: option --dport given twice"},
		{"-p tcp -j DNAT --to-destination 10.0.0.1 --dport 80", "*iptables.ProtocolMatch&{Protocol:tcp Negate:false}; *iptables.PortMatch&{Protocol:tcp Source:false Min:80 Max:80 Negate:false}; target {Name:DNAT Goto:false NAT:10.0.0.1 ToPorts: Random:false RandomFully:false Persistent:false MarkValue:0 MarkMask:0 RejectWith: LogPrefix: LogLevel: Ext:<nil>} nat {MinAddr:10.0.0.1 MaxAddr:10.0.0.1 MinPort:0 MaxPort:0}"},
		{"! -p tcp -m tcp --dport 80", "error: -m tcp needs -p tcp"},
		{"-p all --dport 80", "error: unknown option --dport (not accepted by any loaded match or the target)"},
		{"-p icmp --dport 80", "error: unknown option --dport (not accepted by any loaded match or the target)"},
		{"-m tcp --dport", "error: option --dport needs a value"},
		{"-m tcp ! --dport", "error: option --dport needs a value"},
		{"-m", "error: option -m needs a value"},
		{"-m nosuch", "error: unsupported match module \"nosuch\""},
		{"-m tcp -m tcp -p tcp --dport 1 --dport 2", "error: -m tcp: option --dport given twice"},
		{"-j DNAT ! --random --to-destination 1.2.3.4", "error: \"!\" cannot precede target option --random"},
		{"-j DNAT --to-destination 1.2.3.4 --to-destination 1.2.3.5", "error: -j DNAT --to-destination: given twice"},
		{"-j DNAT --to-destination 1.2.3.4 --random --persistent", "target {Name:DNAT Goto:false NAT:1.2.3.4 ToPorts: Random:true RandomFully:false Persistent:true MarkValue:0 MarkMask:0 RejectWith: LogPrefix: LogLevel: Ext:<nil>} nat {MinAddr:1.2.3.4 MaxAddr:1.2.3.4 MinPort:0 MaxPort:0}"},
		{"-j DNAT --to-destination 1.2.3.4 --random-fully", "error: unknown option --random-fully (not accepted by any loaded match or the target)"},
		{"-j DNAT --to-destination", "error: option --to-destination needs a value"},
		{"-j DNAT --to-destination x", "error: -j DNAT --to-destination: invalid address in \"x\""},
		{"-j SNAT --to-source 1.2.3.4 --random --random", "target {Name:SNAT Goto:false NAT:1.2.3.4 ToPorts: Random:true RandomFully:false Persistent:false MarkValue:0 MarkMask:0 RejectWith: LogPrefix: LogLevel: Ext:<nil>} nat {MinAddr:1.2.3.4 MaxAddr:1.2.3.4 MinPort:0 MaxPort:0}"},
		{"-j SNAT --to-source 1.2.3.4 --to-source 1.2.3.5", "error: -j SNAT --to-source: given twice"},
		{"-j MASQUERADE --to-ports 1000-2000 --random", "target {Name:MASQUERADE Goto:false NAT:<nil> ToPorts:1000-2000 Random:true RandomFully:false Persistent:false MarkValue:0 MarkMask:0 RejectWith: LogPrefix: LogLevel: Ext:<nil>}"},
		{"-j MASQUERADE --to-ports 1000-2000 --to-ports 3000", "target {Name:MASQUERADE Goto:false NAT:<nil> ToPorts:3000 Random:false RandomFully:false Persistent:false MarkValue:0 MarkMask:0 RejectWith: LogPrefix: LogLevel: Ext:<nil>}"},
		{"-j MASQUERADE --persistent", "error: unknown option --persistent (not accepted by any loaded match or the target)"},
		{"-j REDIRECT --to-ports 8080 --random", "target {Name:REDIRECT Goto:false NAT:<nil> ToPorts:8080 Random:true RandomFully:false Persistent:false MarkValue:0 MarkMask:0 RejectWith: LogPrefix: LogLevel: Ext:<nil>}"},
		{"-j REDIRECT --random-fully", "error: unknown option --random-fully (not accepted by any loaded match or the target)"},
		{"-j MARK --set-mark 1 --set-mark 2", "error: -j MARK --set-mark: only one mark operation is allowed"},
		{"-j MARK --set-xmark 0x1/0x1 --or-mark 2", "error: -j MARK --or-mark: only one mark operation is allowed"},
		{"-j MARK --and-mark 1/2", "error: -j MARK --and-mark: takes no mask"},
		{"-j MARK --xor-mark 1/2", "error: -j MARK --xor-mark: takes no mask"},
		{"-j MARK --set-mark x", "error: -j MARK --set-mark: invalid mark \"x\""},
		{"-j MARK ! --set-mark 1", "error: \"!\" cannot precede target option --set-mark"},
		{"-j REJECT --reject-with tcp-reset --reject-with icmp-host-unreachable", "target {Name:REJECT Goto:false NAT:<nil> ToPorts: Random:false RandomFully:false Persistent:false MarkValue:0 MarkMask:0 RejectWith:icmp-host-unreachable LogPrefix: LogLevel: Ext:<nil>}"},
		{"-j REJECT", "target {Name:REJECT Goto:false NAT:<nil> ToPorts: Random:false RandomFully:false Persistent:false MarkValue:0 MarkMask:0 RejectWith: LogPrefix: LogLevel: Ext:<nil>}"},
		{"-j LOG --log-prefix \"p: \" --log-level 4 --log-tcp-sequence --log-tcp-options --log-ip-options --log-uid", "target {Name:LOG Goto:false NAT:<nil> ToPorts: Random:false RandomFully:false Persistent:false MarkValue:0 MarkMask:0 RejectWith: LogPrefix:p:  LogLevel:4 Ext:<nil>}"},
		{"-j LOG --log-level", "error: option --log-level needs a value"},
		{"-j QUEUE", "target {Name:QUEUE Goto:false NAT:<nil> ToPorts: Random:false RandomFully:false Persistent:false MarkValue:0 MarkMask:0 RejectWith: LogPrefix: LogLevel: Ext:<nil>}"},
		{"-j NOTRACK", "target {Name:NOTRACK Goto:false NAT:<nil> ToPorts: Random:false RandomFully:false Persistent:false MarkValue:0 MarkMask:0 RejectWith: LogPrefix: LogLevel: Ext:<nil>}"},
		{"-j RETURN --random", "error: unknown option --random (not accepted by any loaded match or the target)"},
		{"-g DNAT --to-destination 1.2.3.4", "target {Name:DNAT Goto:true NAT:1.2.3.4 ToPorts: Random:false RandomFully:false Persistent:false MarkValue:0 MarkMask:0 RejectWith: LogPrefix: LogLevel: Ext:<nil>} nat {MinAddr:1.2.3.4 MaxAddr:1.2.3.4 MinPort:0 MaxPort:0}"},
		{"-j \"\"", "error: -j: invalid target \"\""},
		{"-j -x", "error: -j: invalid target \"-x\""},
		{"--jump X --goto Y", "error: more than one target"},
		{"-j X --foo", "error: unknown option --foo (target X is a chain and takes no options)"},
		{"-j X -m comment --comment c", "*iptables.CommentMatch&{Comment:c}; target {Name:X Goto:false NAT:<nil> ToPorts: Random:false RandomFully:false Persistent:false MarkValue:0 MarkMask:0 RejectWith: LogPrefix: LogLevel: Ext:<nil>}"},
		{"-j DNAT -m tcp -p tcp --dport 80 --to-destination 1.2.3.4:80", "*iptables.ProtocolMatch&{Protocol:tcp Negate:false}; *iptables.PortMatch&{Protocol:tcp Source:false Min:80 Max:80 Negate:false}; target {Name:DNAT Goto:false NAT:1.2.3.4:80 ToPorts: Random:false RandomFully:false Persistent:false MarkValue:0 MarkMask:0 RejectWith: LogPrefix: LogLevel: Ext:<nil>} nat {MinAddr:1.2.3.4 MaxAddr:1.2.3.4 MinPort:80 MaxPort:80}"},
		{"-j DNAT --to-destination 1.2.3.4:80 -m comment", "error: -m comment needs --comment"},
		{"-j MARK", "error: -j MARK needs a mark operation"},
		{"--foo", "error: unknown option --foo (not accepted by any loaded match or the target)"},
		{"-x", "error: unsupported argument \"-x\""},
		{"-p tcp -p tcp", "error: -p given twice"},
		{"-p", "error: option -p needs a value"},
		{"-i \"\"", "error: -i: invalid interface name \"\""},
		{"-o eth0 --in-interface eth1 --out-interface eth2", "*iptables.IfaceMatch&{In:false Name:eth0 Negate:false}; *iptables.IfaceMatch&{In:true Name:eth1 Negate:false}; *iptables.IfaceMatch&{In:false Name:eth2 Negate:false}; target {Name: Goto:false NAT:<nil> ToPorts: Random:false RandomFully:false Persistent:false MarkValue:0 MarkMask:0 RejectWith: LogPrefix: LogLevel: Ext:<nil>}"},
		{"-m comment --comment x ! -m tcp", "error: \"!\" cannot precede -m"},
		{"-m conntrack --ctstate NEW,DNAT,SNAT,UNTRACKED,INVALID,RELATED,ESTABLISHED", "*iptables.ConntrackMatch&{States:[NEW DNAT SNAT UNTRACKED INVALID RELATED ESTABLISHED] Negate:false}; target {Name: Goto:false NAT:<nil> ToPorts: Random:false RandomFully:false Persistent:false MarkValue:0 MarkMask:0 RejectWith: LogPrefix: LogLevel: Ext:<nil>}"},
	}
	for _, tt := range tests {
		args, err := SplitLine(tt.rule)
		if err != nil {
			t.Fatalf("SplitLine(%s): %v", tt.rule, err)
		}
		var got string
		if spec, err := ParseRuleArgs(args); err != nil {
			got = "error: " + err.Error()
		} else {
			got = dumpSpec(spec)
		}
		if got != tt.want {
			t.Errorf("ParseRuleArgs(%s):\n got %s\nwant %s", tt.rule, got, tt.want)
		}
	}
}

// Address masks that are not prefixes are what iptables accepts too: svcproxy's
// dispatch buckets match on the low bits of the destination.
func TestParseAddressMasks(t *testing.T) {
	for _, tc := range []struct {
		arg       string
		in, notIn []string
	}{
		{"-d 0.0.0.5/0.0.0.63", []string{"203.0.113.5", "203.0.113.69", "198.51.100.133"}, []string{"203.0.113.6", "203.0.113.4", "2001:db8::5"}},
		{"-d ::3f/::3f", []string{"2001:db8:5::3f", "2001:db8::7f"}, []string{"2001:db8::3e", "0.0.0.63"}},
		{"-s 10.0.0.0/255.0.255.0", []string{"10.7.0.9"}, []string{"10.7.1.9"}},
		{"-d 198.51.100.0/255.255.255.0", []string{"198.51.100.9"}, []string{"198.51.101.9"}}, // a prefix mask stays a prefix
	} {
		spec, err := ParseRuleArgs(append(strings.Fields(tc.arg), "-j", "ACCEPT"))
		if err != nil {
			t.Fatalf("%s: %v", tc.arg, err)
		}
		m := spec.Matches[0].(*AddrMatch)
		if m.Source != strings.HasPrefix(tc.arg, "-s") {
			t.Errorf("%s: Source = %v", tc.arg, m.Source)
		}
		for _, a := range tc.in {
			if !m.Contains(netip.MustParseAddr(a)) {
				t.Errorf("%s should match %s", tc.arg, a)
			}
		}
		for _, a := range tc.notIn {
			if m.Contains(netip.MustParseAddr(a)) {
				t.Errorf("%s should not match %s", tc.arg, a)
			}
		}
	}
	// --source is a source (it was read as a destination once).
	spec, err := ParseRuleArgs([]string{"--source", "192.0.2.1", "-j", "ACCEPT"})
	if err != nil || !spec.Matches[0].(*AddrMatch).Source {
		t.Errorf("--source: %+v, %v", spec, err)
	}
}
