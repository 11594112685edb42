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
// *StatisticMatch, *RecentMatch, *ConntrackMatch, *CommentMatch or
// *SetMatch; use a type switch.
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
}

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
