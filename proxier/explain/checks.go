package explain

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"slices"
	"strings"

	"github.com/svcproxy/svcproxy/iptables/trace"
	"github.com/svcproxy/svcproxy/proxier/host"
)

// Node is what Check looks at besides the rules. A nil field is not known
// (a saved rule file without --routes, say): the checks that need it are
// skipped, and the report says so.
type Node struct {
	Routes  host.RouteLookup
	Sysctls host.SysctlReader
	// Bridges are the node's bridge interfaces (pod bridges such as cbr0);
	// BridgesKnown says the list is complete.
	Bridges      []string
	BridgesKnown bool
	// Addrs are the node's addresses by interface.
	Addrs []host.IfaceAddr
}

// Check adds what the node's routes and sysctls say about the traced packet
// to r, then recomputes the verdict. ctx and p must be the ones r was
// explained with.
func Check(r *Report, ctx trace.Context, p trace.Packet, n Node) {
	if n.Routes == nil {
		r.Skipped = append(r.Skipped, "routes: the route to the destination, to each endpoint, and the reply's way back (no routes: give --routes FILE, \"ip route\" output)")
	} else {
		checkRoutes(r, ctx, p, n)
		checkReturnPaths(r, ctx, p, n)
	}
	if n.Sysctls == nil {
		r.Skipped = append(r.Skipped, "sysctls: ip_forward, rp_filter, route_localnet, bridge-nf-call-iptables (a saved rule file carries none)")
	} else {
		checkSysctls(r, ctx, p, n)
	}
	r.finish(ctx, p)
}

// checkRoutes checks the route for a node's own packet to the original
// destination and the route to each endpoint.
func checkRoutes(r *Report, ctx trace.Context, p trace.Packet, n Node) {
	// A local process routes the ORIGINAL destination before nat OUTPUT
	// rewrites it: without a route to the cluster IP, connect() fails with
	// "network unreachable" and DNAT never happens.
	if p.Origin == trace.Local && !p.Dst.IsLoopback() {
		if _, err := n.Routes.RouteGet(p.Dst); err != nil {
			r.Problems = append(r.Problems, Problem{Blocking, fmt.Sprintf(
				"no route to %s (%v): connections from this node fail before DNAT; add a default route or a route for the service CIDR", p.Dst, err)})
		}
	}
	for _, ep := range r.Endpoints() {
		a := netip.MustParseAddrPort(ep).Addr()
		rt, err := n.Routes.RouteGet(a)
		if err != nil {
			r.Routes = append(r.Routes, host.Route{Dst: a.String(), Error: err.Error()})
			r.Problems = append(r.Problems, Problem{Blocking, fmt.Sprintf("no route to endpoint %s: %v", ep, err)})
			continue
		}
		rt.Dst = a.String()
		r.Routes = append(r.Routes, rt)
	}
}

// checkSysctls checks forwarding, route_localnet and bridge netfilter.
// A setting that cannot be read is reported, never taken as fine.
func checkSysctls(r *Report, ctx trace.Context, p trace.Packet, n Node) {
	v6 := p.Dst.Is6()
	eps := r.Endpoints()
	forward := slices.ContainsFunc(eps, func(ep string) bool { return !ctx.IsLocal(netip.MustParseAddrPort(ep).Addr()) })
	if p.Origin == trace.Incoming && forward {
		key := "net.ipv4.ip_forward"
		if v6 {
			key = "net.ipv6.conf.all.forwarding"
		}
		if off, ok := sysctlIs(r, n.Sysctls, key, "0", "whether this node forwards to the endpoints"); ok && off {
			r.Problems = append(r.Problems, Problem{Blocking, fmt.Sprintf(
				"%s=0: the endpoints are not on this node's own addresses, so packets must be forwarded, and forwarding is off (sysctl -w %s=1)", key, key)})
		}
	}
	if !v6 && p.Dst.IsLoopback() && len(eps) > 0 {
		key := "net.ipv4.conf.all.route_localnet"
		if off, ok := sysctlIs(r, n.Sysctls, key, "0", "whether a 127.0.0.1 NodePort can be forwarded"); ok && off {
			r.Problems = append(r.Problems, Problem{Blocking, fmt.Sprintf(
				"%s=0: a NodePort on %s is DNATed to %s but the kernel will not route a 127.0.0.0/8 source off the loopback (sysctl -w %s=1)", key, p.Dst, strings.Join(eps, ", "), key)})
		}
	}
	if !n.BridgesKnown {
		r.Skipped = append(r.Skipped, "bridge-nf-call-iptables: the node's bridges are unknown")
	} else if len(n.Bridges) > 0 {
		checkBridgeNetfilter(r, p, n)
	}
}

// sysctlIs reports whether sysctl key reads value; ok is false when it
// could not be read, which is then reported as a problem of severity
// Unknown (what it decides, why).
func sysctlIs(r *Report, s host.SysctlReader, key, value, decides string) (is, ok bool) {
	v, err := s.Sysctl(key)
	if err != nil {
		r.Problems = append(r.Problems, Problem{Unknown, fmt.Sprintf("could not read %s, which decides %s: %v", key, decides, err)})
		return false, false
	}
	return strings.TrimSpace(v) == value, true
}

// checkBridgeNetfilter: without br_netfilter, a pod's connection to a
// service endpoint on its own bridge gets replies that stay on the bridge
// and skip the reverse NAT.
func checkBridgeNetfilter(r *Report, p trace.Packet, n Node) {
	key := "net.bridge.bridge-nf-call-iptables"
	if p.Dst.Is6() {
		key = "net.bridge.bridge-nf-call-ip6tables"
	}
	v, err := n.Sysctls.Sysctl(key)
	off := ""
	switch {
	case errors.Is(err, fs.ErrNotExist):
		off = key + " is missing (br_netfilter not loaded)"
	case err != nil:
		r.Problems = append(r.Problems, Problem{Warning, fmt.Sprintf("could not read %s, which decides whether hairpin connections through bridge %s work: %v", key, strings.Join(n.Bridges, ","), err)})
		return
	case strings.TrimSpace(v) == "0":
		off = key + "=0"
	default:
		return
	}
	if sameBridge := sameBridgeEndpoints(r, p, n); len(sameBridge) > 0 {
		r.Problems = append(r.Problems, Problem{Blocking, fmt.Sprintf(
			"%s and bridge %s is present: replies from %s to %s stay on the bridge and skip the reverse NAT, so the connection fails (modprobe br_netfilter; sysctl -w %s=1)",
			off, strings.Join(n.Bridges, ","), strings.Join(sameBridge, ", "), p.Src, key)})
		return
	}
	r.Problems = append(r.Problems, Problem{Warning, fmt.Sprintf(
		"%s and bridge %s is present: pods reaching a service endpoint on the same bridge (hairpin) will fail (modprobe br_netfilter; sysctl -w %s=1)",
		off, strings.Join(n.Bridges, ","), key)})
}

// sameBridgeEndpoints lists the unmasqueraded endpoints an incoming packet
// reaches on the bridge it came from.
func sameBridgeEndpoints(r *Report, p trace.Packet, n Node) []string {
	if p.Origin != trace.Incoming || n.Routes == nil {
		return nil
	}
	src, err := n.Routes.RouteGet(p.Src)
	if err != nil || !slices.Contains(n.Bridges, src.Iface) {
		return nil
	}
	var out []string
	for _, ep := range r.Endpoints() {
		rt, err := n.Routes.RouteGet(netip.MustParseAddrPort(ep).Addr())
		if err == nil && rt.Iface == src.Iface && !masqueradedTo(r, ep) {
			out = append(out, ep)
		}
	}
	return out
}

// masqueradedTo reports whether every outcome reaching ep is masqueraded.
func masqueradedTo(r *Report, ep string) bool {
	found := false
	for _, o := range r.Outcomes {
		if o.Endpoint == ep && o.Verdict == trace.Accept {
			if !o.Masquerade {
				return false
			}
			found = true
		}
	}
	return found
}
