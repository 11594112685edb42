package explain

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/svcproxy/svcproxy/iptables/trace"
	"github.com/svcproxy/svcproxy/proxier/host"
)

// ReturnPath follows one endpoint's connection from this node there and
// back: the source the packet carries, the interface it leaves by after
// DNAT, whether it is masqueraded, and the interface its reply arrives on,
// whose reverse-path filter then judges the reply.
//
// A process on the node gets its source address from the route to the
// ORIGINAL destination (the service IP): routing happens before OUTPUT's
// DNAT. When the route to the endpoint leaves by another interface and
// nothing masquerades, the packet carries the first interface's address
// out of the second; the reply, addressed to that address, comes back over
// the link that holds it (the endpoint's side routes it there), not the
// one the endpoint is routed by, and strict rp_filter drops it.
type ReturnPath struct {
	Endpoint string `json:"endpoint"`
	Source   string `json:"source"`
	// SourceRoute is the route to the original destination that chose
	// Source.
	SourceRoute *host.Route `json:"sourceRoute,omitempty"`
	// SourceIface is the interface that holds Source; empty when the
	// node's addresses are not known.
	SourceIface string `json:"sourceIface,omitempty"`
	// Out is the route to the endpoint after DNAT.
	Out        host.Route `json:"out"`
	Masquerade bool       `json:"masquerade"`
	// ReplyTo is the reply's destination: Source, or the address
	// masquerading gave the packet.
	ReplyTo string `json:"replyTo"`
	// ReplyIface is the interface the reply arrives on; empty when unknown.
	ReplyIface string    `json:"replyIface,omitempty"`
	RPFilter   *RPFilter `json:"rpFilter,omitempty"`
	// Drop says why the reply will not arrive; empty when it does (or
	// cannot be told, see the report's problems).
	Drop string `json:"drop,omitempty"`
}

// RPFilter is an interface's effective reverse-path filter: the larger of
// net.ipv4.conf.all.rp_filter and net.ipv4.conf.IFACE.rp_filter.
type RPFilter struct {
	Iface string `json:"iface"`
	All   int    `json:"all"`
	Dev   int    `json:"dev"`
	Value int    `json:"value"` // 0 off, 1 strict, 2 loose
}

func (f RPFilter) String() string {
	mode := map[int]string{0: "off", 1: "strict", 2: "loose"}[f.Value]
	return fmt.Sprintf("rp_filter %d = max(%s=%d, %s=%d), %s", f.Value, rpFilterName("all"), f.All, rpFilterName(f.Iface), f.Dev, mode)
}

// rpFilterName is the sysctl as sysctl(8) names it (a dot in an interface
// name is written "/").
func rpFilterName(iface string) string {
	return "net.ipv4.conf." + strings.ReplaceAll(iface, ".", "/") + ".rp_filter"
}

// rpFilterPath is the sysctl as a /proc/sys path, which keeps interface
// names with dots whole.
func rpFilterPath(iface string) string { return "net/ipv4/conf/" + iface + "/rp_filter" }

func (rp ReturnPath) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: from %s", rp.Endpoint, rp.Source)
	if rp.SourceIface != "" {
		fmt.Fprintf(&b, " (on %s", rp.SourceIface)
		if rp.SourceRoute != nil {
			fmt.Fprintf(&b, ", chosen by the route to %s", rp.SourceRoute.Dst)
		}
		b.WriteString(")")
	}
	fmt.Fprintf(&b, ", out by %s", rp.Out.Iface)
	if rp.Out.Gateway != "" {
		fmt.Fprintf(&b, " via %s", rp.Out.Gateway)
	}
	if rp.Masquerade {
		fmt.Fprintf(&b, ", masqueraded to %s", rp.ReplyTo)
	} else {
		b.WriteString(", not masqueraded")
	}
	if rp.ReplyIface != "" {
		fmt.Fprintf(&b, "; the reply to %s comes back on %s", rp.ReplyTo, rp.ReplyIface)
	}
	if rp.RPFilter != nil {
		fmt.Fprintf(&b, " (%s)", rp.RPFilter)
	}
	if rp.Drop != "" {
		b.WriteString(": DROPPED")
	}
	return b.String()
}

// checkReturnPaths follows the reply of every endpoint a packet from this
// node reaches (see ReturnPath), and checks that an incoming packet passes
// the reverse-path filter of the interface it arrives on.
func checkReturnPaths(r *Report, ctx trace.Context, p trace.Packet, n Node) {
	if p.Origin == trace.Incoming {
		checkArrival(r, ctx, p, n)
		return
	}
	if p.Dst.IsLoopback() {
		return // localhost NodePorts: see the route_localnet check
	}
	srcRoute, err := n.Routes.RouteGet(p.Dst)
	if err != nil {
		return // reported: no route to the original destination
	}
	srcRoute.Dst = p.Dst.String()
	seen := map[string]bool{}
	for _, o := range r.Outcomes {
		key := fmt.Sprintf("%s %v", o.Endpoint, o.Masquerade)
		if o.Verdict != trace.Accept || o.Endpoint == "" || seen[key] {
			continue
		}
		seen[key] = true
		ep := netip.MustParseAddrPort(o.Endpoint)
		if ctx.IsLocal(ep.Addr()) {
			continue // delivered on this node: no way back to take
		}
		out, err := n.Routes.RouteGet(ep.Addr())
		if err != nil {
			continue // reported: no route to the endpoint
		}
		rp := replyPath(p.Src, &srcRoute, ep, out, o.Masquerade, n)
		judgeReply(r, &rp, p.Dst, n)
		r.ReturnPaths = append(r.ReturnPaths, rp)
	}
}

// replyPath works out where the reply of a connection to ep goes.
func replyPath(src netip.Addr, srcRoute *host.Route, ep netip.AddrPort, out host.Route, masq bool, n Node) ReturnPath {
	out.Dst = ep.Addr().String()
	rp := ReturnPath{Endpoint: ep.String(), Source: src.String(), SourceRoute: srcRoute,
		SourceIface: host.IfaceOf(n.Addrs, src), Out: out, Masquerade: masq, ReplyTo: src.String()}
	switch {
	case masq:
		// MASQUERADE takes an address of the output interface, where
		// the reply then comes back.
		rp.ReplyTo = out.Src
		if rp.ReplyTo == "" {
			rp.ReplyTo = "the address of " + out.Iface
		}
		rp.ReplyIface = out.Iface
	case out.Gateway == "":
		// The endpoint is on the link: it answers over it.
		rp.ReplyIface = out.Iface
	default:
		// The reply to src comes over the link that holds src (the
		// endpoint's side routes it there): unknown without the node's
		// addresses.
		rp.ReplyIface = rp.SourceIface
	}
	return rp
}

// judgeReply checks the reply's arrival against the reverse-path filter
// and whether its destination can be reached at all, adding problems.
func judgeReply(r *Report, rp *ReturnPath, origDst netip.Addr, n Node) {
	src := netip.MustParseAddr(rp.Source)
	switch {
	case rp.Masquerade:
		return // the reply comes back where the endpoint is routed
	case src.IsLinkLocalUnicast() && rp.SourceIface != rp.Out.Iface:
		rp.Drop = fmt.Sprintf("the source %s is link-local on %s and cannot be reached from %s's side (out by %s)", src, rp.SourceIface, rp.Endpoint, rp.Out.Iface)
		r.Problems = append(r.Problems, Problem{Blocking, "replies from " + rp.Endpoint + " cannot arrive: " + rp.Drop +
			"; fix: set --cluster-cidr (node traffic to services is then masqueraded), or give the route to " + origDst.String() + " a routable source"})
		return
	case rp.ReplyIface == "":
		r.Skipped = append(r.Skipped, fmt.Sprintf("the way back of replies to %s: the interface holding it is unknown (give --addrs)", src))
		return
	case rp.ReplyIface == "lo":
		r.Problems = append(r.Problems, Problem{Warning, fmt.Sprintf(
			"the packet to %s leaves by %s from %s, an address on lo: replies arrive only if %s's side routes %s back to this node", rp.Endpoint, rp.Out.Iface, src, rp.Endpoint, src)})
		return
	case rp.ReplyIface == rp.Out.Iface || !src.Is4():
		return // symmetric (IPv6 has no rp_filter sysctl)
	}
	filter, err := readRPFilter(n.Sysctls, rp.ReplyIface)
	if err != nil {
		r.Problems = append(r.Problems, Problem{Unknown, fmt.Sprintf(
			"replies from %s to %s arrive on %s while %s is routed via %s: with strict reverse-path filtering on %s they are dropped, and %s (%v)",
			rp.Endpoint, src, rp.ReplyIface, netip.MustParseAddrPort(rp.Endpoint).Addr(), rp.Out.Iface, rp.ReplyIface, rpFilterName(rp.ReplyIface), err)})
		return
	}
	rp.RPFilter = &filter
	if filter.Value != 1 {
		return
	}
	ep := netip.MustParseAddrPort(rp.Endpoint).Addr()
	rp.Drop = fmt.Sprintf("strict reverse-path filtering on %s: %s is routed via %s", rp.ReplyIface, ep, rp.Out.Iface)
	fixSrc := ""
	if rp.Out.Src != "" {
		fixSrc = " src " + rp.Out.Src
	}
	r.Problems = append(r.Problems, Problem{Blocking, fmt.Sprintf(
		"replies from %s will be dropped: this node sends from %s (on %s; the route to %s chose it before DNAT), but the packet to %s leaves by %s unmasqueraded, "+
			"so the reply to %s arrives on %s, where reverse-path filtering (%s) drops it because %s is routed via %s. "+
			"Fix: --cluster-cidr (node traffic to services is then masqueraded), or loose rp_filter (sysctl -w %s=2), or route %s via %s (or give its route%s)",
		ep, src, rp.SourceIface, origDst, ep, rp.Out.Iface,
		src, rp.ReplyIface, filter, ep, rp.Out.Iface,
		rpFilterName(rp.ReplyIface), origDst, rp.Out.Iface, orDefault(fixSrc, " a source on "+rp.Out.Iface))}) // one line, for the verdict
}

// checkArrival checks that an incoming packet passes the reverse-path
// filter of the interface it arrives on: the route back to its source
// must leave by that interface when rp_filter is strict.
func checkArrival(r *Report, ctx trace.Context, p trace.Packet, n Node) {
	if p.InIface == "" || ctx.IsLocal(p.Src) || !p.Src.Is4() {
		return
	}
	back, err := n.Routes.RouteGet(p.Src)
	if err != nil {
		r.Problems = append(r.Problems, Problem{Blocking, fmt.Sprintf(
			"no route back to %s (%v): replies cannot leave this node, and reverse-path filtering drops its packets", p.Src, err)})
		return
	}
	if back.Iface == p.InIface {
		return
	}
	filter, err := readRPFilter(n.Sysctls, p.InIface)
	if err != nil {
		r.Problems = append(r.Problems, Problem{Unknown, fmt.Sprintf(
			"packets from %s arrive on %s but the route back to %s leaves by %s: strict reverse-path filtering on %s would drop them, and %s (%v)",
			p.Src, p.InIface, p.Src, back.Iface, p.InIface, rpFilterName(p.InIface), err)})
		return
	}
	if filter.Value == 1 {
		r.Problems = append(r.Problems, Problem{Blocking, fmt.Sprintf(
			"packets from %s arriving on %s are dropped by reverse-path filtering (%s): the route back to %s leaves by %s. "+
				"Fix: loose rp_filter (sysctl -w %s=2), or a route to %s via %s",
			p.Src, p.InIface, filter, p.Src, back.Iface, rpFilterName(p.InIface), p.Src, p.InIface)})
	}
}

// readRPFilter reads an interface's effective reverse-path filter. With no
// sysctls (a saved rule file) it cannot be known.
func readRPFilter(s host.SysctlReader, iface string) (RPFilter, error) {
	if s == nil {
		return RPFilter{}, fmt.Errorf("its value is unknown (saved files carry no sysctls)")
	}
	f := RPFilter{Iface: iface}
	for _, v := range []struct {
		path string
		into *int
	}{{rpFilterPath("all"), &f.All}, {rpFilterPath(iface), &f.Dev}} {
		text, err := s.Sysctl(v.path)
		if err != nil {
			return RPFilter{}, fmt.Errorf("could not be read: %w", err)
		}
		n, err := strconv.Atoi(strings.TrimSpace(text))
		if err != nil {
			return RPFilter{}, fmt.Errorf("%s reads %q, not a number", v.path, text)
		}
		*v.into = n
	}
	f.Value = max(f.All, f.Dev)
	return f, nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
