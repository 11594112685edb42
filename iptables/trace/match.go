package trace

import (
	"net/netip"
	"slices"
	"strings"

	"github.com/svcproxy/svcproxy/iptables"
)

// verdictOf is one match's answer: ok, unless maybe (it can go either way
// by chance) or unknown (the tracer cannot decide it) is set.
type verdictOf struct {
	ok      bool
	maybe   bool
	unknown *undecided
}

func certain(ok bool) verdictOf { return verdictOf{ok: ok} }

func unknown(kind error, format string, a ...any) verdictOf {
	return verdictOf{unknown: undecidedf(kind, format, a...)}
}

// matches evaluates a rule's matches (all must hold) for st: whether the
// rule can match and whether it can fail to. A random match can go either
// way; so can an undecided one, which u then describes (several are
// joined). A match that certainly fails decides the rule whatever the
// others are.
func (t *tracer) matches(st state, ms []iptables.Match) (canMatch, canMiss bool, u *undecided) {
	random := false
	var unknowns []*undecided
	for _, m := range ms {
		v := t.match(st, m)
		switch {
		case v.unknown != nil:
			unknowns = append(unknowns, v.unknown)
		case v.maybe:
			random = true
		case !v.ok:
			return false, true, nil
		}
	}
	if len(unknowns) == 0 {
		return true, random, nil
	}
	u = unknowns[0]
	for _, more := range unknowns[1:] {
		u = &undecided{kind: u.kind, what: u.what + "; " + more.what}
	}
	return true, true, u
}

// match evaluates one match.
func (t *tracer) match(st state, m iptables.Match) verdictOf {
	p := &st.pkt
	switch m := m.(type) {
	case *iptables.CommentMatch:
		return certain(true)
	case *iptables.AddrMatch:
		addr := p.Dst
		if m.Source {
			addr = p.Src
		}
		return certain(m.Contains(addr) != m.Negate)
	case *iptables.ProtocolMatch:
		return certain((m.Protocol == "all" || m.Protocol == strings.ToLower(p.Protocol)) != m.Negate)
	case *iptables.IfaceMatch:
		iface, v := t.iface(st, m.In)
		if v != nil {
			return *v
		}
		if iface == "" { // no such interface at this hook: only a negated test holds
			return certain(m.Negate)
		}
		return certain(m.Matches(iface))
	case *iptables.PortMatch:
		if !m.Source {
			return certain(m.Matches(p.DstPort))
		}
		if p.SrcPort == 0 {
			return unknown(ErrNeedSrcPort, "the source port is unknown")
		}
		return certain(m.Matches(p.SrcPort))
	case *iptables.MultiportMatch:
		if m.Side != "dst" && p.SrcPort == 0 {
			if m.Side == "any" && (&iptables.MultiportMatch{Side: "dst", Ports: m.Ports}).Matches(0, p.DstPort) {
				return certain(!m.Negate)
			}
			return unknown(ErrNeedSrcPort, "the source port is unknown")
		}
		return certain(m.Matches(p.SrcPort, p.DstPort))
	case *iptables.AddrTypeMatch:
		return t.addrType(st, m)
	case *iptables.MarkMatch:
		return certain((p.Mark&m.Mask == m.Value) != m.Negate)
	case *iptables.StatisticMatch:
		if m.Mode == "random" && (m.Probability >= 1 || m.Probability <= 0) {
			return certain((m.Probability >= 1) != m.Negate)
		}
		return verdictOf{maybe: true}
	case *iptables.RecentMatch:
		switch m.Mode {
		case "set", "remove":
			return certain(!m.Negate)
		default: // rcheck, update
			return certain(t.ctx.RecentHits[m.Name] != m.Negate)
		}
	case *iptables.ConntrackMatch:
		hit := slices.ContainsFunc(m.States, func(s string) bool { return slices.Contains(ctStates(st), s) })
		return certain(hit != m.Negate)
	case *iptables.CTAddrMatch, *iptables.CTPortMatch, *iptables.CTFieldMatch:
		return conntrackTuple(st, m)
	case *iptables.ConnmarkMatch:
		if st.untracked {
			return certain(false)
		}
		return certain((st.ctmark&m.Mask == m.Value) != m.Negate)
	case *iptables.SetMatch:
		return t.setMatch(st, m)
	case *iptables.IPRangeMatch:
		addr := p.Dst
		if m.Source {
			addr = p.Src
		}
		return certain(m.Matches(addr))
	case *iptables.PhysdevMatch:
		return t.physdev(st, m)
	case *iptables.TCPFlagsMatch:
		if p.Protocol != "tcp" {
			return certain(false)
		}
		// The first packet of a connection carries SYN alone.
		hit := true
		for _, f := range m.Mask {
			hit = hit && (f == "SYN") == slices.Contains(m.Set, f)
		}
		return certain(hit != m.Negate)
	case *iptables.ICMPMatch:
		if !strings.HasPrefix(p.Protocol, "icmp") {
			return certain(false)
		}
		return unknown(ErrUndecidable, "the packet's ICMP type is unknown")
	case *iptables.PktTypeMatch:
		kind := []string{"unicast", "host"}
		if p.Dst.IsMulticast() {
			kind = []string{"multicast"}
		} else if t.isBroadcast(p.Dst) {
			kind = []string{"broadcast"}
		}
		return certain(slices.Contains(kind, m.Type) != m.Negate)
	case *iptables.RPFilterMatch:
		return t.rpfilter(st, m)
	case *iptables.UndecidableMatch:
		return unknown(ErrUndecidable, "-m %s depends on %s", m.Module, m.Why)
	}
	return unknown(ErrUnsupported, "match %T is not modelled by the tracer", m)
}

// iface returns the packet's input (in) or output interface at st's hook:
// "" when the hook has none; a verdict when it is unknown.
func (t *tracer) iface(st state, in bool) (string, *verdictOf) {
	p := &st.pkt
	if in {
		switch {
		case st.hook == "OUTPUT" || st.hook == "POSTROUTING":
			return "", nil
		case p.Origin == Local:
			return "lo", nil // looped back to a local destination
		case p.InIface == "":
			v := unknown(ErrNeedInIface, "the input interface is unknown")
			return "", &v
		}
		return p.InIface, nil
	}
	if st.hook == "PREROUTING" || st.hook == "INPUT" {
		return "", nil
	}
	if t.ctx.Route != nil {
		if iface, ok := t.ctx.Route(p.Dst); ok {
			return iface, nil
		}
		v := unknown(ErrNeedOutIface, "the node has no route to %s", p.Dst)
		return "", &v
	}
	if p.OutIface == "" {
		v := unknown(ErrNeedOutIface, "the output interface is unknown")
		return "", &v
	}
	return p.OutIface, nil
}

// ctStates are the conntrack states of st's connection: the tracer follows
// a connection's first packet.
func ctStates(st state) []string {
	if st.untracked {
		return []string{"UNTRACKED"}
	}
	states := []string{"NEW"}
	if st.endpoint.IsValid() {
		states = append(states, "DNAT")
	}
	if st.masquerade {
		states = append(states, "SNAT")
	}
	return states
}

// conntrackTuple evaluates -m conntrack's tuple, protocol, status and
// direction tests against the connection st opens.
func conntrackTuple(st state, m iptables.Match) verdictOf {
	p := &st.pkt
	if st.untracked {
		return certain(false)
	}
	masqueraded := func(field string) verdictOf {
		return unknown(ErrUndecidable, "--ct%s is the address and port masquerading picks", field)
	}
	switch m := m.(type) {
	case *iptables.CTAddrMatch:
		var addr netip.Addr
		switch m.Field {
		case "origsrc":
			addr = p.Src
		case "origdst":
			addr = st.origDst
		case "replsrc":
			addr = p.Dst
		default: // repldst
			if st.masquerade {
				return masqueraded(m.Field)
			}
			addr = p.Src
		}
		return certain(m.Prefix.Contains(addr) != m.Negate)
	case *iptables.CTPortMatch:
		port := 0
		switch m.Field {
		case "origdstport":
			port = st.origDstPort
		case "replsrcport":
			port = p.DstPort
		default: // origsrcport, repldstport
			if m.Field == "repldstport" && st.masquerade {
				return masqueraded(m.Field)
			}
			if p.SrcPort == 0 {
				return unknown(ErrNeedSrcPort, "the source port is unknown")
			}
			port = p.SrcPort
		}
		return certain((port >= int(m.Min) && port <= int(m.Max)) != m.Negate)
	case *iptables.CTFieldMatch:
		var hit bool
		switch m.Field {
		case "proto":
			hit = m.Values[0] == strings.ToLower(p.Protocol)
		case "status":
			hit = slices.Contains(m.Values, "NONE") // a new connection has no status bit yet
		default: // dir
			hit = m.Values[0] == "ORIGINAL"
		}
		return certain(hit != m.Negate)
	}
	return unknown(ErrUnsupported, "conntrack match %T is not modelled by the tracer", m)
}

// setMatch evaluates -m set with the set's members, when known.
func (t *tracer) setMatch(st state, m *iptables.SetMatch) verdictOf {
	if len(m.Flags) != 1 {
		return unknown(ErrUnsupported, "set %s is matched on %s; the tracer reads single-dimension sets only", m.Name, strings.Join(m.Flags, ","))
	}
	members, err := t.set(m.Name)
	if err != nil {
		return unknown(ErrUnknownSet, "set %s: %v", m.Name, err)
	}
	addr := st.pkt.Dst
	if m.Flags[0] == "src" {
		addr = st.pkt.Src
	}
	in := slices.ContainsFunc(members, func(pfx netip.Prefix) bool { return pfx.Contains(addr) })
	return certain(in != m.Negate)
}

// addrType evaluates -m addrtype: each of the source and destination tests
// given must hold.
func (t *tracer) addrType(st state, m *iptables.AddrTypeMatch) verdictOf {
	limit := ""
	if m.LimitIfaceIn || m.LimitIfaceOut {
		iface, v := t.iface(st, m.LimitIfaceIn)
		if v != nil {
			return *v
		}
		limit = iface
	}
	result := certain(true)
	for _, c := range []struct {
		types  string
		negate bool
		addr   netip.Addr
	}{{m.SrcType, m.NegateSrc, st.pkt.Src}, {m.DstType, m.NegateDst, st.pkt.Dst}} {
		if c.types == "" {
			continue
		}
		v := t.isAddrType(c.addr, strings.Split(c.types, ","), limit, m.LimitIfaceIn || m.LimitIfaceOut)
		switch {
		case v.unknown != nil:
			result = v
		case v.ok == c.negate:
			return certain(false)
		}
	}
	return result
}

// isAddrType decides whether addr is of one of types (as the kernel's
// route lookup classifies it), on interface limit when limited.
func (t *tracer) isAddrType(addr netip.Addr, types []string, limit string, limited bool) verdictOf {
	local, known := t.ctx.localness(addr)
	if limited && local {
		local, known = t.onIface(addr, limit)
	}
	var class string
	switch {
	case addr.IsMulticast():
		class = "MULTICAST"
	case t.isBroadcast(addr):
		class = "BROADCAST"
	case local:
		class = "LOCAL"
	case !known:
		return unknown(ErrNeedLocalAddrs, "whether %s is this node's address is unknown", addr)
	default:
		class = "UNICAST"
	}
	for _, want := range types {
		switch want {
		case class:
			return certain(true)
		case "LOCAL", "UNICAST", "MULTICAST", "BROADCAST":
		default:
			return unknown(ErrUnsupported, "address type %s depends on routes the tracer does not model", want)
		}
	}
	return certain(false)
}

// onIface reports whether the local address addr is on iface.
func (t *tracer) onIface(addr netip.Addr, iface string) (on, known bool) {
	if addr.IsLoopback() {
		return iface == "lo", true
	}
	if t.ctx.IfaceAddrs == nil {
		return false, false
	}
	return slices.ContainsFunc(t.ctx.IfaceAddrs[iface], func(p netip.Prefix) bool { return p.Addr() == addr }), true
}

// isBroadcast reports whether addr is the limited broadcast address or
// the broadcast address of one of the node's IPv4 subnets.
func (t *tracer) isBroadcast(addr netip.Addr) bool {
	if !addr.Is4() {
		return false
	}
	if addr == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return true
	}
	for _, prefixes := range t.ctx.IfaceAddrs {
		for _, p := range prefixes {
			if p.Addr().Is4() && p.Bits() < 31 && p.Contains(addr) && lastAddr(p) == addr {
				return true
			}
		}
	}
	return false
}

// lastAddr is the highest address of an IPv4 prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := ^uint32(0) >> p.Bits()
	for i := range 4 {
		b[i] |= byte(host >> (24 - 8*i))
	}
	return netip.AddrFrom4(b)
}

// physdev evaluates -m physdev. Only a packet that came in by a bridge
// port carries bridge-port information (br_netfilter); without it the
// match holds when every test given is negated, as in the kernel. A packet
// from a bridge port routed out of another interface came in (is-in) but
// is not bridged and goes out of no port; which port it came by is unknown.
func (t *tracer) physdev(st state, m *iptables.PhysdevMatch) verdictOf {
	in := st.pkt.InIface
	switch {
	case st.pkt.Origin == Local:
		return certain(physdevWithoutInfo(m))
	case !t.ctx.BridgesKnown:
		return unknown(ErrNeedBridges, "-m physdev depends on whether %q is a bridge", in)
	case in == "":
		return unknown(ErrNeedInIface, "the input interface is unknown")
	case !slices.Contains(t.ctx.Bridges, in):
		return certain(physdevWithoutInfo(m))
	}
	out, v := t.iface(st, false)
	switch {
	case v != nil:
		return *v
	case out == in:
		return unknown(ErrUndecidable, "-m physdev depends on the ports of bridge %s the packet uses", in)
	case m.In != "" || m.Out != "" && !m.NegateOut:
		if m.In == "" { // --physdev-out X: no output port
			return certain(false)
		}
		return unknown(ErrUndecidable, "-m physdev --physdev-in depends on the port of bridge %s the packet came by", in)
	}
	ok := (!m.IsIn || !m.NegateIsIn) && (!m.IsOut || m.NegateIsOut) && (!m.IsBridged || m.NegateIsBridged)
	return certain(ok)
}

// physdevWithoutInfo is -m physdev on a packet that was not bridged.
func physdevWithoutInfo(m *iptables.PhysdevMatch) bool {
	for _, given := range []struct{ set, negated bool }{
		{m.In != "", m.NegateIn}, {m.Out != "", m.NegateOut},
		{m.IsIn, m.NegateIsIn}, {m.IsOut, m.NegateIsOut}, {m.IsBridged, m.NegateIsBridged},
	} {
		if given.set && !given.negated {
			return false
		}
	}
	return true
}

// rpfilter evaluates -m rpfilter: the source must be routed back out of
// the input interface (anywhere, with --loose). A locally generated packet
// (looped back) always passes. The fwmark's effect on the lookup
// (--validmark) is not modelled: routes are looked up without it.
func (t *tracer) rpfilter(st state, m *iptables.RPFilterMatch) verdictOf {
	p := &st.pkt
	pass := true
	switch {
	case p.Origin == Local:
	case m.AcceptLocal && t.ctx.IsLocal(p.Src):
	case t.ctx.Route == nil:
		return unknown(ErrNeedRoutes, "-m rpfilter depends on the route back to %s", p.Src)
	case p.InIface == "" && !m.Loose:
		return unknown(ErrNeedInIface, "the input interface is unknown")
	default:
		back, ok := t.ctx.Route(p.Src)
		pass = ok && (m.Loose || back == p.InIface)
	}
	return certain(pass != m.Invert)
}
