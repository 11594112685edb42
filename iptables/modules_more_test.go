package iptables

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// The modules and targets of other software's rules parse into what the
// tracer needs.
func TestParseOtherSoftwaresMatches(t *testing.T) {
	a := netip.MustParseAddr
	tests := []struct {
		rule string
		want []Match
	}{
		{"-p tcp -m multiport --dports 80,443,8000:8080", []Match{&ProtocolMatch{Protocol: "tcp"},
			&MultiportMatch{Side: "dst", Ports: []PortRange{{80, 80}, {443, 443}, {8000, 8080}}}}},
		{"-p udp -m multiport ! --ports 53", []Match{&ProtocolMatch{Protocol: "udp"},
			&MultiportMatch{Side: "any", Ports: []PortRange{{53, 53}}, Negate: true}}},
		{"-m iprange --src-range 192.0.2.10-192.0.2.20 ! --dst-range 2001:db8::1-2001:db8::9", []Match{
			&IPRangeMatch{Source: true, From: a("192.0.2.10"), To: a("192.0.2.20")},
			&IPRangeMatch{From: a("2001:db8::1"), To: a("2001:db8::9"), Negate: true}}},
		{"-m physdev --physdev-in veth+ ! --physdev-is-bridged", []Match{&PhysdevMatch{In: "veth+", IsBridged: true, NegateIsBridged: true}}},
		{"-m connmark ! --mark 0x1/0xf", []Match{&ConnmarkMatch{Value: 1, Mask: 0xf, Negate: true}}},
		{"-m state --state RELATED,ESTABLISHED", []Match{&ConntrackMatch{States: []string{"RELATED", "ESTABLISHED"}}}},
		{"-m conntrack --ctstate DNAT --ctorigdst 203.0.113.10/32 ! --ctorigdstport 80 --ctdir original --ctproto 6 --ctstatus ASSURED,CONFIRMED",
			[]Match{&ConntrackMatch{States: []string{"DNAT"}}, &CTAddrMatch{Field: "origdst", Prefix: netip.MustParsePrefix("203.0.113.10/32")},
				&CTPortMatch{Field: "origdstport", Min: 80, Max: 80, Negate: true}, &CTFieldMatch{Field: "dir", Values: []string{"ORIGINAL"}},
				&CTFieldMatch{Field: "proto", Values: []string{"tcp"}}, &CTFieldMatch{Field: "status", Values: []string{"ASSURED", "CONFIRMED"}}}},
		{"-p tcp -m tcp --tcp-flags SYN,RST SYN ! --syn", []Match{&ProtocolMatch{Protocol: "tcp"},
			&TCPFlagsMatch{Mask: []string{"SYN", "RST"}, Set: []string{"SYN"}},
			&TCPFlagsMatch{Mask: []string{"SYN", "RST", "ACK", "FIN"}, Set: []string{"SYN"}, Negate: true}}},
		{"-p icmp -m icmp --icmp-type 3/4", []Match{&ProtocolMatch{Protocol: "icmp"}, &ICMPMatch{Type: "3/4"}}},
		{"-p ipv6-icmp -m icmp6 --icmpv6-type echo-request", []Match{&ProtocolMatch{Protocol: "ipv6-icmp"}, &ICMPMatch{IPv6: true, Type: "echo-request"}}},
		{"-m pkttype --pkt-type MULTICAST", []Match{&PktTypeMatch{Type: "multicast"}}},
		{"-m nfacct --nfacct-name localhost_nps_accepted_pkts", []Match{&CommentMatch{}}},
		{"-m limit --limit 3/min --limit-burst 10", []Match{&UndecidableMatch{Module: "limit", Why: "the rate of matching packets"}}},
		{"-m socket --transparent --nowildcard", []Match{&UndecidableMatch{Module: "socket", Why: "whether a local socket matches the packet"}}},
		{"-m set --match-set cali40s src --packets-gt 3", []Match{&SetMatch{Name: "cali40s", Flags: []string{"src"}},
			&UndecidableMatch{Module: "set --packets-gt", Why: "the set entry's counters"}}},
		{"-p 4", []Match{&ProtocolMatch{Protocol: "4"}}},
		{"-p ipencap", []Match{&ProtocolMatch{Protocol: "ipencap"}}},
		{"-p 17", []Match{&ProtocolMatch{Protocol: "udp"}}},
	}
	for _, tt := range tests {
		args, err := SplitLine(tt.rule)
		if err != nil {
			t.Fatal(err)
		}
		spec, err := ParseRuleArgs(args)
		if err != nil {
			t.Errorf("ParseRuleArgs(%s): %v", tt.rule, err)
			continue
		}
		if !reflect.DeepEqual(spec.Matches, tt.want) {
			t.Errorf("ParseRuleArgs(%s):\n got %s\nwant %s", tt.rule, dumpSpec(spec), dumpSpec(&RuleSpec{Matches: tt.want}))
		}
	}
}

func TestParseOtherSoftwaresTargets(t *testing.T) {
	tests := []struct {
		rule string
		want TargetExt
	}{
		{"-j CONNMARK --set-xmark 0x10000/0x10000", &ConnmarkTarget{Op: "set", Value: 0x10000, Mask: 0x10000, NFMask: 0xffffffff, CTMask: 0xffffffff}},
		{"-j CONNMARK --or-mark 0x4", &ConnmarkTarget{Op: "set", Value: 4, Mask: 4, NFMask: 0xffffffff, CTMask: 0xffffffff}},
		{"-j CONNMARK --save-mark --nfmask 0xff --ctmask 0xf0", &ConnmarkTarget{Op: "save", NFMask: 0xff, CTMask: 0xf0}},
		{"-j CONNMARK --restore-mark --mask 0xff00", &ConnmarkTarget{Op: "restore", NFMask: 0xff00, CTMask: 0xff00}},
		{"-j CT --notrack", &CTTarget{NoTrack: true}},
		{"-j CT --zone 3", &CTTarget{}},
		{"-p tcp -j TPROXY --on-port 37145 --on-ip 127.0.0.1 --tproxy-mark 0x200/0xffffffff",
			&TProxyTarget{Port: 37145, Addr: netip.MustParseAddr("127.0.0.1"), MarkValue: 0x200, MarkMask: 0xffffffff}},
		{"-j NFLOG --nflog-group 1 --nflog-prefix x", nil},
		{"-p tcp -j TCPMSS --clamp-mss-to-pmtu", nil},
		{"-j NFQUEUE --queue-num 3 --queue-bypass", nil},
	}
	for _, tt := range tests {
		args, _ := SplitLine(tt.rule)
		spec, err := ParseRuleArgs(args)
		if err != nil {
			t.Errorf("ParseRuleArgs(%s): %v", tt.rule, err)
			continue
		}
		if !reflect.DeepEqual(spec.Target.Ext, tt.want) {
			t.Errorf("ParseRuleArgs(%s).Target.Ext = %+v, want %+v", tt.rule, spec.Target.Ext, tt.want)
		}
	}
	if !isNATOnlyTarget("NETMAP") {
		t.Errorf("NETMAP is a nat target")
	}
	for rule, msg := range map[string]string{
		"-j CONNMARK":                              "needs an operation",
		"-j CONNMARK --save-mark --restore-mark":   "only one CONNMARK operation",
		"-j CONNMARK --set-mark 1 --nfmask 0xff":   "go with --save-mark",
		"-j TPROXY --on-ip 127.0.0.1":              "needs --on-port",
		"-m multiport --dports 80 --sports 1":      "only one of --dports",
		"-m iprange --src-range 10.0.0.9-10.0.0.1": "invalid address range",
		"-p icmp -m icmp --icmp-type 300":          "invalid ICMP type",
		"-p tcp -m icmp --icmp-type 3":             "-m icmp needs -p icmp",
		"-m pkttype --pkt-type sideways":           "unknown packet type",
		"-m state --state DNAT":                    `unknown state "DNAT"`,
		"-m limit --burst 3":                       "unknown option --burst",
	} {
		args, _ := SplitLine(rule)
		if _, err := ParseRuleArgs(args); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("ParseRuleArgs(%s) error = %v, want one containing %q", rule, err, msg)
		}
	}
}

// Every rule of the saved rule files of real nodes' software in testdata
// parses: the tracer never stops on them for want of a module.
func TestSavedNodeRulesParse(t *testing.T) {
	files, err := filepath.Glob("testdata/nodes/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no saved rule files: %v", err)
	}
	for _, f := range files {
		text, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		d, err := ParseDump(text)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		for _, tb := range d.Tables {
			for _, c := range tb.Chains {
				for _, r := range c.Rules {
					if _, err := ParseRuleArgs(r.Args); err != nil {
						t.Errorf("%s line %d: %v\n  %s", f, r.Line, err, r.Raw)
					}
				}
			}
		}
	}
}
