package trace

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/svcproxy/svcproxy/iptables"
)

// passThrough are the targets that change nothing the tracer follows
// (logging, TCP options, checksums, header fields): the walk goes on.
var passThrough = map[string]bool{
	"": true, "LOG": true, "NFLOG": true, "TCPMSS": true, "CHECKSUM": true, "CLASSIFY": true,
	"DSCP": true, "TOS": true, "AUDIT": true, "TRACE": true,
}

// target applies rule i's target to a packet that matched it.
func (t *tracer) target(st state, table iptables.Table, chain *iptables.Chain, i int, tg iptables.Target, depth int) ([]result, error) {
	next := func(st state) ([]result, error) { return t.chain(st, table, chain, i+1, depth) }
	accepted := func(st state) ([]result, error) { return []result{{st, Accept}}, nil }
	switch tg.Name {
	case Accept, Drop, Reject:
		return []result{{st, tg.Name}}, nil
	case iptables.TargetReturn:
		return []result{{st, ""}}, nil
	case "NOTRACK":
		st.untracked = true
		return next(st)
	case "CT":
		if ct, ok := tg.Ext.(*iptables.CTTarget); ok && ct.NoTrack {
			st.untracked = true
		}
		return next(st)
	case "MARK":
		st.pkt.Mark = (st.pkt.Mark &^ tg.MarkMask) ^ tg.MarkValue
		return next(st)
	case "CONNMARK":
		connmark(&st, tg.Ext.(*iptables.ConnmarkTarget))
		return next(st)
	case "DNAT":
		return accepted(t.dnat(st, tg.NAT))
	case "REDIRECT":
		return accepted(t.redirect(st, tg.ToPorts))
	case "NETMAP":
		return accepted(netmap(st, tg.Ext.(*iptables.NetmapTarget).To))
	case "SNAT", "MASQUERADE":
		st.masquerade = true
		return accepted(st)
	case "TPROXY":
		return tproxy(st, tg.Ext.(*iptables.TProxyTarget)), nil
	case "QUEUE", "NFQUEUE":
		u := undecidedf(ErrUndecidable, "%s hands the packet to a userspace program, which accepts or drops it", tg.Name)
		st.note = tg.Name + ": a userspace program decides"
		return []result{{st.assumeHere(u), Accept}, {st.assume(u, st.path[len(st.path)-1], false), Drop}}, nil
	}
	if passThrough[tg.Name] {
		return next(st)
	}
	if !tg.IsChain() {
		return nil, fmt.Errorf("target %s is not modelled by the tracer", tg.Name)
	}
	sub, err := t.chainOf(table, tg.Name)
	if err != nil {
		return nil, err
	}
	if sub == nil {
		return nil, fmt.Errorf("jump to chain %s, which does not exist", tg.Name)
	}
	if depth+1 > MaxDepth {
		return nil, fmt.Errorf("jumps nested deeper than %d: a loop through chain %s?", MaxDepth, tg.Name)
	}
	results, err := t.chain(st, table, sub, 0, depth+1)
	if err != nil || tg.Goto {
		// A RETURN from a goto'd chain returns to our caller, as it does in iptables.
		return results, err
	}
	var out []result
	for _, r := range results {
		if r.verdict != "" {
			out = append(out, r)
			continue
		}
		rs, err := next(r.st)
		if err != nil {
			return nil, err
		}
		out = append(out, rs...)
	}
	return out, nil
}

// connmark applies -j CONNMARK as the kernel does (xt_CONNMARK).
func connmark(st *state, c *iptables.ConnmarkTarget) {
	if st.untracked {
		return // no connection to mark
	}
	switch c.Op {
	case "set":
		st.ctmark = (st.ctmark &^ c.Mask) ^ c.Value
	case "save":
		st.ctmark = (st.ctmark &^ c.CTMask) ^ (st.pkt.Mark & c.NFMask)
	case "restore":
		st.pkt.Mark = (st.pkt.Mark &^ c.NFMask) ^ (st.ctmark & c.CTMask)
	}
}

// dnat rewrites the destination. DNAT to a range picks one address and
// port per connection; the first is traced, and the outcome says so.
func (t *tracer) dnat(st state, r *iptables.NATRange) state {
	if r.MinAddr != r.MaxAddr || r.MinPort != r.MaxPort {
		st = st.assumeHere(undecidedf(ErrUndecidable, "DNAT picks one of %s per connection; traced with the first", r))
	}
	st.pkt.Dst = r.MinAddr
	if r.MinPort != 0 {
		st.pkt.DstPort = int(r.MinPort)
	}
	st.endpoint = netip.AddrPortFrom(st.pkt.Dst, uint16(st.pkt.DstPort))
	return st
}

// redirect sends the packet to this node: to loopback from a local
// process, else to the primary address of the interface it came in by.
func (t *tracer) redirect(st state, toPorts string) state {
	addr := netip.IPv6Loopback()
	if st.pkt.Dst.Is4() {
		addr = netip.AddrFrom4([4]byte{127, 0, 0, 1})
	}
	if st.pkt.Origin == Incoming {
		var ok bool
		if addr, ok = t.primaryAddr(st.pkt.InIface, st.pkt.Dst.Is4()); !ok {
			st = st.assumeHere(undecidedf(ErrNeedLocalAddrs, "REDIRECT sends to the address of the input interface %q, which is unknown; traced with the original destination", st.pkt.InIface))
			addr = st.pkt.Dst
		}
	}
	st.pkt.Dst = addr
	if p, _, _ := strings.Cut(toPorts, "-"); p != "" {
		st.pkt.DstPort, _ = strconv.Atoi(p)
	}
	st.endpoint = netip.AddrPortFrom(addr, uint16(st.pkt.DstPort))
	st.note = "REDIRECT to a local port"
	return st
}

// primaryAddr returns the first address of the family on iface.
func (t *tracer) primaryAddr(iface string, v4 bool) (netip.Addr, bool) {
	for _, p := range t.ctx.IfaceAddrs[iface] {
		if p.Addr().Is4() == v4 {
			return p.Addr(), true
		}
	}
	return netip.Addr{}, false
}

// netmap maps the destination (before routing) or the source (after) onto
// prefix, keeping the host bits.
func netmap(st state, to netip.Prefix) state {
	if st.hook == "POSTROUTING" || st.hook == "INPUT" {
		st.masquerade = true
		return st
	}
	if st.pkt.Dst.Is4() != to.Addr().Is4() {
		return st
	}
	a, n := st.pkt.Dst.AsSlice(), to.Masked().Addr().AsSlice()
	for i := range a {
		keep := byte(0)
		if bits := to.Bits() - 8*i; bits < 8 {
			keep = byte(0xff >> max(bits, 0))
		}
		a[i] = n[i]&^keep | a[i]&keep
	}
	st.pkt.Dst, _ = netip.AddrFromSlice(a)
	st.endpoint = netip.AddrPortFrom(st.pkt.Dst, uint16(st.pkt.DstPort))
	return st
}

// tproxy hands the packet to a local socket on the target's port, marking
// it (so that policy routing delivers it locally); without such a socket
// the kernel drops it. Which is undecided.
func tproxy(st state, tp *iptables.TProxyTarget) []result {
	u := undecidedf(ErrUndecidable, "TPROXY needs a local socket on port %d, else it drops the packet", tp.Port)
	drop := st.assume(u, st.path[len(st.path)-1], false)
	st = st.assumeHere(u)
	st.pkt.Mark = (st.pkt.Mark &^ tp.MarkMask) ^ tp.MarkValue
	addr := tp.Addr
	if !addr.IsValid() {
		addr = st.pkt.Dst
	}
	st.endpoint = netip.AddrPortFrom(addr, tp.Port)
	st.local = true
	st.note = fmt.Sprintf("TPROXY to a local socket on port %d", tp.Port)
	return []result{{st, Accept}, {drop, Drop}}
}
