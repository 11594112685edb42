package iptables

import (
	"net/netip"
	"strconv"
	"strings"
)

// RuleSpec is a rule's arguments interpreted: its matches in the order
// written, and its target. ParseRuleArgs builds it and rejects anything it
// does not understand, so that code interpreting a RuleSpec (the tracer)
// never silently ignores a condition.
type RuleSpec struct {
	Matches []Match
	Target  Target
}

// Match is one condition of a rule. It is one of *AddrMatch,
// *ProtocolMatch, *IfaceMatch, *PortMatch, *AddrTypeMatch, *MarkMatch,
// *StatisticMatch, *RecentMatch, *ConntrackMatch, *CommentMatch,
// *SetMatch, or one of the matches of other software's rules at the end
// of this file (*MultiportMatch, *IPRangeMatch, *PhysdevMatch,
// *ConnmarkMatch, *CTAddrMatch, *CTPortMatch, *CTFieldMatch,
// *TCPFlagsMatch, *ICMPMatch, *PktTypeMatch, *RPFilterMatch,
// *UndecidableMatch); use a
// type switch.
type Match interface {
	isMatch()
}

// AddrMatch is -s / -d.
type AddrMatch struct {
	Source bool // -s; otherwise -d
	// Prefix is the network matched. With Mask set, Prefix.Addr() is the
	// value the masked address must equal (Prefix.Bits() is then the full
	// length and means nothing).
	Prefix netip.Prefix
	// Mask, when valid, is an address-form mask that is not a prefix, as
	// iptables allows ("-d 0.0.0.5/0.0.0.63" matches addresses whose low six
	// bits are 5).
	Mask   netip.Addr
	Negate bool
}

// Contains reports whether addr is in the matched set (ignoring Negate).
func (m *AddrMatch) Contains(addr netip.Addr) bool {
	if !m.Mask.IsValid() {
		return m.Prefix.Contains(addr)
	}
	return addr.Is4() == m.Mask.Is4() && andAddr(addr, m.Mask) == m.Prefix.Addr()
}

// ProtocolMatch is -p.
type ProtocolMatch struct {
	Protocol string // lower case, e.g. "tcp"
	Negate   bool
}

// IfaceMatch is -i / -o. A Name ending in "+" matches every interface
// with that prefix.
type IfaceMatch struct {
	In     bool // -i; otherwise -o
	Name   string
	Negate bool
}

// Matches reports whether the match holds for interface iface.
func (m *IfaceMatch) Matches(iface string) bool {
	var ok bool
	if prefix, wild := strings.CutSuffix(m.Name, "+"); wild {
		ok = strings.HasPrefix(iface, prefix)
	} else {
		ok = iface == m.Name
	}
	return ok != m.Negate
}

// PortMatch is --sport / --dport of the tcp, udp or sctp match; a single
// port has Min == Max.
type PortMatch struct {
	Protocol string
	Source   bool // --sport; otherwise --dport
	Min, Max uint16
	Negate   bool
}

// Matches reports whether the match holds for port.
func (m *PortMatch) Matches(port int) bool {
	return (port >= int(m.Min) && port <= int(m.Max)) != m.Negate
}

// AddrTypeMatch is -m addrtype. Empty types are not checked.
type AddrTypeMatch struct {
	SrcType, DstType     string // e.g. "LOCAL"; may be a comma list
	NegateSrc, NegateDst bool
	LimitIfaceIn         bool
	LimitIfaceOut        bool
}

// MarkMatch is -m mark --mark Value/Mask: (mark & Mask) == Value.
type MarkMatch struct {
	Value, Mask uint32
	Negate      bool
}

// StatisticMatch is -m statistic.
type StatisticMatch struct {
	Mode        string // "random" or "nth"
	Probability float64
	Every       int
	Packet      int
	Negate      bool
}

// RecentMatch is -m recent.
type RecentMatch struct {
	Name     string // "DEFAULT" when not given, as in iptables
	Mode     string // "set", "rcheck", "update" or "remove"
	Seconds  int
	Hitcount int
	Reap     bool
	RTTL     bool
	Dest     bool   // --rdest; otherwise the source address is recorded/checked
	Mask     string // --mask, as written
	Negate   bool
}

// ConntrackMatch is -m conntrack --ctstate.
type ConntrackMatch struct {
	States []string // upper case
	Negate bool
}

// CommentMatch is -m comment --comment; it always matches.
type CommentMatch struct {
	Comment string
}

// SetMatch is -m set --match-set Name Flags.
type SetMatch struct {
	Name   string
	Flags  []string // "src" / "dst", one per set dimension
	Negate bool
}

func (*AddrMatch) isMatch()      {}
func (*ProtocolMatch) isMatch()  {}
func (*IfaceMatch) isMatch()     {}
func (*PortMatch) isMatch()      {}
func (*AddrTypeMatch) isMatch()  {}
func (*MarkMatch) isMatch()      {}
func (*StatisticMatch) isMatch() {}
func (*RecentMatch) isMatch()    {}
func (*ConntrackMatch) isMatch() {}
func (*CommentMatch) isMatch()   {}
func (*SetMatch) isMatch()       {}

// Target is a rule's -j / -g and the target's options. Name is "" for a
// rule without a target (it only counts packets).
type Target struct {
	Name string
	Goto bool // -g rather than -j
	// NAT is DNAT's --to-destination or SNAT's --to-source.
	NAT *NATRange
	// ToPorts is MASQUERADE's or REDIRECT's --to-ports, as written.
	ToPorts     string
	Random      bool
	RandomFully bool
	Persistent  bool
	// MARK's options normalised to one operation: new = (old &^ MarkMask) ^ MarkValue.
	MarkValue, MarkMask uint32
	RejectWith          string
	LogPrefix, LogLevel string
	// Ext holds the options of a target extension the fields above do not
	// cover (CONNMARK, CT, TPROXY, NETMAP); nil otherwise.
	Ext TargetExt
}

// TargetExt is the options of one target extension: *ConnmarkTarget,
// *CTTarget, *TProxyTarget or *NetmapTarget.
type TargetExt interface{ isTargetExt() }

// ConnmarkTarget is -j CONNMARK, normalised as the kernel applies it.
type ConnmarkTarget struct {
	// Op is "set": ctmark = (ctmark &^ Mask) ^ Value; "save": ctmark =
	// (ctmark &^ CTMask) ^ (mark & NFMask); "restore": mark = (mark &^
	// NFMask) ^ (ctmark & CTMask).
	Op             string
	Value, Mask    uint32
	NFMask, CTMask uint32
}

// CTTarget is -j CT (raw table): only --notrack changes what the tracer
// sees (the packet is not tracked, so nat is skipped).
type CTTarget struct {
	NoTrack bool
}

// TProxyTarget is -j TPROXY (mangle PREROUTING): the packet is handed to
// a local socket on Port (at Addr when valid) and marked.
type TProxyTarget struct {
	Port                uint16
	Addr                netip.Addr
	MarkValue, MarkMask uint32
}

// NetmapTarget is -j NETMAP --to PREFIX: the address keeps its host bits
// and takes PREFIX's network bits (the destination in PREROUTING and
// OUTPUT, the source in POSTROUTING and INPUT).
type NetmapTarget struct {
	To netip.Prefix
}

func (*ConnmarkTarget) isTargetExt() {}
func (*CTTarget) isTargetExt()       {}
func (*TProxyTarget) isTargetExt()   {}
func (*NetmapTarget) isTargetExt()   {}

// IsChain reports whether the target is a jump to a user-defined chain,
// i.e. neither a verdict (ACCEPT, DROP, RETURN, QUEUE) nor a target extension.
func (t Target) IsChain() bool {
	return t.Name != "" && !IsStandardTarget(t.Name)
}

// NATRange is an address[-address][:port[-port]] range.
type NATRange struct {
	MinAddr, MaxAddr netip.Addr
	MinPort, MaxPort uint16 // 0 when no port was given
}

// String returns the range as iptables writes it.
func (r *NATRange) String() string {
	s := r.MinAddr.String()
	if r.MaxAddr != r.MinAddr {
		s += "-" + r.MaxAddr.String()
	}
	if r.MinAddr.Is6() {
		s = "[" + s + "]"
	}
	if r.MinPort != 0 {
		s += ":" + strconv.Itoa(int(r.MinPort))
		if r.MaxPort != r.MinPort {
			s += "-" + strconv.Itoa(int(r.MaxPort))
		}
	}
	return s
}

// Verdict targets, named for readability at call sites.
const (
	TargetAccept = "ACCEPT"
	TargetDrop   = "DROP"
	TargetReturn = "RETURN"
	TargetReject = "REJECT"
)

// The matches below are those of other software's rules (CNI plugins,
// Docker, firewalls) that the tracer evaluates; see modules_more.go.

// MultiportMatch is -m multiport: the port is one of Ports (ranges; a
// single port has Min == Max).
type MultiportMatch struct {
	// Side is "dst" (--dports), "src" (--sports) or "any" (--ports: either).
	Side   string
	Ports  []PortRange
	Negate bool
}

// PortRange is an inclusive range of ports.
type PortRange struct{ Min, Max uint16 }

// Matches reports whether the match holds for the given ports (ignoring
// Negate's absence: it is applied).
func (m *MultiportMatch) Matches(src, dst int) bool {
	in := func(port int) bool {
		for _, r := range m.Ports {
			if port >= int(r.Min) && port <= int(r.Max) {
				return true
			}
		}
		return false
	}
	var hit bool
	switch m.Side {
	case "src":
		hit = in(src)
	case "dst":
		hit = in(dst)
	default:
		hit = in(src) || in(dst)
	}
	return hit != m.Negate
}

// IPRangeMatch is -m iprange --src-range / --dst-range: an inclusive range
// of addresses.
type IPRangeMatch struct {
	Source   bool // --src-range; otherwise --dst-range
	From, To netip.Addr
	Negate   bool
}

// Matches reports whether addr is in the range (Negate applied).
func (m *IPRangeMatch) Matches(addr netip.Addr) bool {
	in := addr.Is4() == m.From.Is4() && m.From.Compare(addr) <= 0 && addr.Compare(m.To) <= 0
	return in != m.Negate
}

// PhysdevMatch is -m physdev: the bridge port a bridged packet came in or
// goes out by (br_netfilter). Empty fields are not tested.
type PhysdevMatch struct {
	In, Out                 string // --physdev-in / --physdev-out, "+" wildcards allowed
	NegateIn, NegateOut     bool
	IsIn, IsOut, IsBridged  bool // the flag was given
	NegateIsIn, NegateIsOut bool
	NegateIsBridged         bool
}

// ConnmarkMatch is -m connmark --mark Value/Mask: (ctmark & Mask) == Value.
type ConnmarkMatch struct {
	Value, Mask uint32
	Negate      bool
}

// CTAddrMatch is one address option of -m conntrack: --ctorigsrc,
// --ctorigdst, --ctreplsrc or --ctrepldst.
type CTAddrMatch struct {
	Field  string // "origsrc", "origdst", "replsrc" or "repldst"
	Prefix netip.Prefix
	Negate bool
}

// CTPortMatch is one port option of -m conntrack: --ctorigsrcport,
// --ctorigdstport, --ctreplsrcport or --ctrepldstport.
type CTPortMatch struct {
	Field    string // "origsrcport", "origdstport", "replsrcport" or "repldstport"
	Min, Max uint16
	Negate   bool
}

// CTFieldMatch is one of the other options of -m conntrack: --ctproto,
// --ctstatus or --ctdir, with its value as written (upper case for
// statuses and directions).
type CTFieldMatch struct {
	Field  string // "proto", "status" or "dir"
	Values []string
	Negate bool
}

// TCPFlagsMatch is --tcp-flags MASK COMP (or --syn) of -m tcp: of the
// flags in Mask, exactly those in Set are set.
type TCPFlagsMatch struct {
	Mask, Set []string // upper case flag names; ALL and NONE expanded
	Negate    bool
}

// ICMPMatch is -m icmp --icmp-type or -m icmp6 --icmpv6-type.
type ICMPMatch struct {
	IPv6   bool
	Type   string // as written: a name, "N" or "N/C"
	Negate bool
}

// PktTypeMatch is -m pkttype --pkt-type.
type PktTypeMatch struct {
	Type   string // "unicast", "broadcast", "multicast", "host" or "otherhost"
	Negate bool
}

// RPFilterMatch is -m rpfilter: the packet's source is routed back out of
// the interface it came in by (Loose: routed back at all). Invert negates.
type RPFilterMatch struct {
	Loose, ValidMark, AcceptLocal, Invert bool
}

// UndecidableMatch is a match whose result depends on something no
// single packet's description shows: the traffic rate (-m limit,
// -m hashlimit, -m connlimit), local sockets (-m socket, -m owner), the
// sender's MAC address (-m mac), IPsec policy (-m policy), the packet's
// length (-m length), or an ipset's counters. The parser checks its
// options; the tracer follows both ways.
type UndecidableMatch struct {
	Module string // e.g. "limit"
	Why    string // what the result depends on, e.g. "the rate of matching packets"
}

func (*MultiportMatch) isMatch()   {}
func (*IPRangeMatch) isMatch()     {}
func (*PhysdevMatch) isMatch()     {}
func (*ConnmarkMatch) isMatch()    {}
func (*CTAddrMatch) isMatch()      {}
func (*CTPortMatch) isMatch()      {}
func (*CTFieldMatch) isMatch()     {}
func (*TCPFlagsMatch) isMatch()    {}
func (*ICMPMatch) isMatch()        {}
func (*PktTypeMatch) isMatch()     {}
func (*UndecidableMatch) isMatch() {}
func (*RPFilterMatch) isMatch()    {}
