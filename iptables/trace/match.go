package trace

import (
	"net/netip"
	"slices"
	"strings"

	"github.com/svcproxy/svcproxy/iptables"
)

// matches evaluates a rule's matches (all must hold) for st. Most matches
// are certain; a random one can go either way, so the answer is a pair:
// whether the rule can match and whether it can fail to.
//
// A match that cannot be evaluated (say -o on a packet without OutIface)
// is only an error when no other match of the rule certainly fails: then
// the answer would depend on it.
func (t *tracer) matches(st state, ms []iptables.Match) (canMatch, canMiss bool, err error) {
	random := false
	var firstErr error
	for _, m := range ms {
		ok, maybe, err := t.match(st, m)
		switch {
		case err != nil:
			if firstErr == nil {
				firstErr = err
			}
		case maybe:
			random = true
		case !ok:
			return false, true, nil
		}
	}
	if firstErr != nil {
		return false, false, firstErr
	}
	return true, random, nil
}

// match evaluates one match: ok is its result unless maybe is set, meaning
// it can go either way.
func (t *tracer) match(st state, m iptables.Match) (ok, maybe bool, err error) {
	p := &st.pkt
	switch m := m.(type) {
	case *iptables.CommentMatch:
		return true, false, nil
	case *iptables.AddrMatch:
		addr := p.Dst
		if m.Source {
			addr = p.Src
		}
		return m.Contains(addr) != m.Negate, false, nil
	case *iptables.ProtocolMatch:
		return (m.Protocol == "all" || m.Protocol == strings.ToLower(p.Protocol)) != m.Negate, false, nil
	case *iptables.IfaceMatch:
		iface, field, need := p.OutIface, "OutIface", ErrNeedOutIface
		if m.In {
			iface, field, need = p.InIface, "InIface", ErrNeedInIface
			if p.Origin == Local {
				// Locally generated packets have no input interface.
				return m.Negate, false, nil
			}
		}
		if iface == "" {
			return false, false, errorOf(need, "rule tests the interface (%s); set Packet.%s", m.Name, field)
		}
		return m.Matches(iface), false, nil
	case *iptables.PortMatch:
		port := p.DstPort
		if m.Source {
			if p.SrcPort == 0 {
				return false, false, errorOf(ErrNeedSrcPort, "rule tests the source port; set Packet.SrcPort")
			}
			port = p.SrcPort
		}
		return m.Matches(port), false, nil
	case *iptables.AddrTypeMatch:
		if m.LimitIfaceIn || m.LimitIfaceOut {
			return false, false, errorOf(ErrUnsupported, "-m addrtype --limit-iface-in/out is not supported by the tracer")
		}
		ok := true
		for _, c := range []struct {
			types  string
			negate bool
			local  bool
		}{
			{m.SrcType, m.NegateSrc, t.ctx.IsLocal(p.Src)},
			{m.DstType, m.NegateDst, t.ctx.IsLocal(p.Dst)},
		} {
			if c.types == "" {
				continue
			}
			if c.types != "LOCAL" {
				return false, false, errorOf(ErrUnsupported, "-m addrtype type %s is not supported by the tracer (only LOCAL)", c.types)
			}
			ok = ok && c.local != c.negate
		}
		return ok, false, nil
	case *iptables.MarkMatch:
		return (p.Mark&m.Mask == m.Value) != m.Negate, false, nil
	case *iptables.StatisticMatch:
		if m.Mode == "random" && (m.Probability >= 1 || m.Probability <= 0) {
			return (m.Probability >= 1) != m.Negate, false, nil
		}
		return false, true, nil
	case *iptables.RecentMatch:
		switch m.Mode {
		case "set", "remove":
			return !m.Negate, false, nil
		default: // rcheck, update
			return t.ctx.RecentHits[m.Name] != m.Negate, false, nil
		}
	case *iptables.ConntrackMatch:
		// The tracer follows the first packet of a new connection.
		states := []string{"NEW"}
		if st.endpoint.IsValid() {
			states = append(states, "DNAT")
		}
		if st.masquerade {
			states = append(states, "SNAT")
		}
		hit := slices.ContainsFunc(m.States, func(s string) bool { return slices.Contains(states, s) })
		return hit != m.Negate, false, nil
	case *iptables.SetMatch:
		if len(m.Flags) != 1 {
			return false, false, errorOf(ErrUnsupported, "-m set %s %s: only single-dimension sets are supported by the tracer", m.Name, strings.Join(m.Flags, ","))
		}
		members, found := t.ctx.Sets[m.Name]
		if !found {
			return false, false, errorOf(ErrUnknownSet, "-m set: set %s is not in the trace Context", m.Name)
		}
		addr := p.Dst
		if m.Flags[0] == "src" {
			addr = p.Src
		}
		in := slices.ContainsFunc(members, func(pfx netip.Prefix) bool { return pfx.Contains(addr) })
		return in != m.Negate, false, nil
	}
	return false, false, errorOf(ErrUnsupported, "match %T is not supported by the tracer", m)
}
