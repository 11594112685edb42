package host

import (
	"bufio"
	"bytes"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// RouteTable answers RouteLookup from routes read from text ("ip route"
// output in a bug report) instead of the kernel: the longest prefix wins,
// then the lowest metric. With the node's addresses (Addrs) it also knows
// the local addresses (routed to lo) and fills in the preferred source of
// routes that do not name one, as the kernel picks it. Policy routing
// (ip rule) and tables other than main and local are not modelled.
type RouteTable struct {
	Routes []TableRoute
	Addrs  []IfaceAddr
}

// TableRoute is one line of "ip route" output.
type TableRoute struct {
	Type    string // "unicast" unless the line starts with another type (blackhole, unreachable, local, ...)
	Dst     netip.Prefix
	Gateway netip.Addr // invalid when on-link
	Iface   string
	Src     netip.Addr // invalid when the route names none
	Metric  int
	Line    int
}

var _ RouteLookup = (*RouteTable)(nil)

// routeTypes are the types "ip route" prints before a route's prefix.
var routeTypes = []string{"unicast", "local", "broadcast", "multicast", "throw", "unreachable", "prohibit", "blackhole", "nat", "anycast"}

// routeKeywords are the words "ip route" prints followed by one value.
var routeKeywords = []string{"via", "dev", "proto", "scope", "src", "metric", "table", "pref", "expires", "mtu",
	"advmss", "rtt", "rttvar", "reordering", "window", "cwnd", "initcwnd", "initrwnd", "ssthresh", "realms",
	"hoplimit", "weight", "nhid", "quickack", "features", "congctl", "fastopen_no_cookie", "ttl-propagate",
	"tos", "dsfield", "from", "rto_min", "lock", "encap", "id"}

// routeFlags are the words "ip route" prints alone.
var routeFlags = []string{"onlink", "linkdown", "dead", "pervasive", "offload", "trap", "rt_offload", "rt_trap", "notify", "cloned", "cache", "inet", "inet6"}

// ParseIPRoute reads "ip route" (or "ip -6 route", or both) output. A
// multipath route's first nexthop stands for it. Routes of tables other
// than main and local are skipped. Errors name the line.
func ParseIPRoute(text []byte) (*RouteTable, error) {
	t := &RouteTable{}
	sc := bufio.NewScanner(bytes.NewReader(text))
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		if f[0] == "nexthop" { // a multipath route's next hop: the first one stands for the route
			if last := len(t.Routes) - 1; last >= 0 && t.Routes[last].Iface == "" {
				if err := applyRouteWords(&t.Routes[last], f[1:]); err != nil {
					return nil, fmt.Errorf("line %d: %v: %q", n, err, line)
				}
			}
			continue
		}
		r, skip, err := parseRouteLine(f)
		if err != nil {
			return nil, fmt.Errorf("line %d: %v: %q", n, err, line)
		}
		if !skip {
			r.Line = n
			t.Routes = append(t.Routes, r)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(t.Routes) == 0 {
		return nil, fmt.Errorf("no routes in it (want \"ip route\" output)")
	}
	return t, nil
}

// parseRouteLine reads one route; skip reports a route of another table.
func parseRouteLine(f []string) (r TableRoute, skip bool, err error) {
	r.Type = "unicast"
	if slices.Contains(routeTypes, f[0]) {
		r.Type, f = f[0], f[1:]
	}
	if len(f) == 0 {
		return r, false, fmt.Errorf("no destination")
	}
	if r.Dst, err = parseRouteDst(f[0], r.Type); err != nil {
		return r, false, err
	}
	table := ""
	for i := 1; i < len(f); i++ {
		if f[i] == "table" && i+1 < len(f) {
			table = f[i+1]
		}
	}
	if table != "" && table != "main" && table != "local" && table != "254" && table != "255" {
		return r, true, nil
	}
	return r, false, applyRouteWords(&r, f[1:])
}

// parseRouteDst reads "default", an address or a prefix.
func parseRouteDst(s, typ string) (netip.Prefix, error) {
	switch s {
	case "default":
		return netip.MustParsePrefix("0.0.0.0/0"), nil // an IPv6 default is recognised by its gateway or family below
	}
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	return netip.Prefix{}, fmt.Errorf("%q is not a destination (want \"ip route\" output)", s)
}

// applyRouteWords reads the words after a route's destination.
func applyRouteWords(r *TableRoute, f []string) error {
	for i := 0; i < len(f); i++ {
		w := f[i]
		switch {
		case w == "nexthop" && r.Iface != "":
			return nil // the first next hop stands for a multipath route
		case w == "nexthop" || slices.Contains(routeFlags, w):
			continue
		case !slices.Contains(routeKeywords, w):
			return fmt.Errorf("unknown word %q", w)
		case i+1 >= len(f):
			return fmt.Errorf("%s without a value", w)
		}
		v := f[i+1]
		i++
		switch w {
		case "via":
			if v == "inet" || v == "inet6" { // "via inet6 fe80::1"
				if i+1 >= len(f) {
					return fmt.Errorf("via %s without an address", v)
				}
				v = f[i+1]
				i++
			}
			a, err := netip.ParseAddr(v)
			if err != nil {
				return fmt.Errorf("via: %q is not an address", v)
			}
			r.Gateway = a
		case "dev":
			r.Iface = v
		case "src":
			a, err := netip.ParseAddr(v)
			if err != nil {
				return fmt.Errorf("src: %q is not an address", v)
			}
			r.Src = a
		case "metric":
			m, err := strconv.Atoi(v)
			if err != nil {
				return fmt.Errorf("metric: %q is not a number", v)
			}
			r.Metric = m
		}
	}
	return nil
}

// is4 reports whether the route is an IPv4 route: a "default" is of the
// family of its gateway or source when the text does not say.
func (r TableRoute) is4() bool {
	if r.Dst.Bits() == 0 {
		switch {
		case r.Gateway.IsValid():
			return r.Gateway.Is4()
		case r.Src.IsValid():
			return r.Src.Is4()
		}
	}
	return r.Dst.Addr().Is4()
}

// RouteGet implements RouteLookup.
func (t *RouteTable) RouteGet(dst netip.Addr) (Route, error) {
	if iface := IfaceOf(t.Addrs, dst); iface != "" || dst.IsLoopback() {
		return Route{Dst: dst.String(), Iface: "lo", Src: dst.String()}, nil
	}
	var best *TableRoute
	for i := range t.Routes {
		r := &t.Routes[i]
		if r.is4() != dst.Is4() || !(r.Dst.Bits() == 0 || r.Dst.Contains(dst)) {
			continue
		}
		if best == nil || r.Dst.Bits() > best.Dst.Bits() || r.Dst.Bits() == best.Dst.Bits() && r.Metric < best.Metric {
			best = r
		}
	}
	if best == nil {
		return Route{}, fmt.Errorf("network is unreachable (no route in the routes file)")
	}
	switch best.Type {
	case "unicast":
	case "local":
		return Route{Dst: dst.String(), Iface: "lo", Src: dst.String()}, nil
	default:
		return Route{}, fmt.Errorf("%s route %s (routes file line %d)", best.Type, best.Dst, best.Line)
	}
	out := Route{Dst: dst.String(), Iface: best.Iface}
	if best.Gateway.IsValid() {
		out.Gateway = best.Gateway.String()
	}
	src := best.Src
	if !src.IsValid() {
		src = t.preferredSource(best, dst)
	}
	if src.IsValid() {
		out.Src = src.String()
	}
	return out, nil
}

// preferredSource picks the source the kernel would for a route that names
// none: an address of the output interface, one on the subnet of the next
// hop first, else any global address of the node of the family.
func (t *RouteTable) preferredSource(r *TableRoute, dst netip.Addr) netip.Addr {
	next := dst
	if r.Gateway.IsValid() {
		next = r.Gateway
	}
	var onIface, anywhere netip.Addr
	for _, a := range t.Addrs {
		p := a.Prefix
		if p.Addr().Is4() != dst.Is4() || p.Addr().IsLinkLocalUnicast() || p.Addr().IsLoopback() {
			continue
		}
		switch {
		case a.Iface == r.Iface && p.Contains(next):
			return p.Addr()
		case a.Iface == r.Iface && !onIface.IsValid():
			onIface = p.Addr()
		case !anywhere.IsValid():
			anywhere = p.Addr()
		}
	}
	if onIface.IsValid() {
		return onIface
	}
	return anywhere
}
