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

// Node is what Check looks at besides the rules.
type Node struct {
	Routes  host.RouteLookup
	Sysctls host.SysctlReader
	// Bridges are the node's bridge interfaces (pod bridges such as cbr0).
	Bridges []string
}

// Check adds what the node's routes and sysctls say about the traced packet
// to r, then recomputes the verdict. ctx and p must be the ones r was
// explained with.
func Check(r *Report, ctx trace.Context, p trace.Packet, n Node) {
	v6 := p.Dst.Is6()
	// A local process routes the ORIGINAL destination before nat OUTPUT
	// rewrites it: without a route to the cluster IP, connect() fails with
	// "network unreachable" and DNAT never happens.
	if p.Origin == trace.Local && !p.Dst.IsLoopback() {
		if _, err := n.Routes.RouteGet(p.Dst); err != nil {
			r.Problems = append(r.Problems, Problem{Blocking, fmt.Sprintf(
				"no route to %s (%v): connections from this node fail before DNAT; add a default route or a route for the service CIDR", p.Dst, err)})
		}
	}
	eps := r.Endpoints()
	var sameBridge []string
	forward := false
	for _, ep := range eps {
		ap, err := netip.ParseAddrPort(ep)
		if err != nil {
			continue
		}
		a := ap.Addr()
		if !ctx.IsLocal(a) {
			forward = true
		}
		rt, err := n.Routes.RouteGet(a)
		if err != nil {
			r.Routes = append(r.Routes, host.Route{Dst: a.String(), Error: err.Error()})
			r.Problems = append(r.Problems, Problem{Blocking, fmt.Sprintf("no route to endpoint %s: %v", ep, err)})
			continue
		}
		rt.Dst = a.String()
		r.Routes = append(r.Routes, rt)
		if p.Origin == trace.Incoming && slices.Contains(n.Bridges, rt.Iface) && !masqueradedTo(r, ep) {
			if src, err := n.Routes.RouteGet(p.Src); err == nil && src.Iface == rt.Iface {
				sameBridge = append(sameBridge, ep)
			}
		}
	}
	if p.Origin == trace.Incoming && forward {
		key := "net.ipv4.ip_forward"
		if v6 {
			key = "net.ipv6.conf.all.forwarding"
		}
		if v, err := n.Sysctls.Sysctl(key); err == nil && v == "0" {
			r.Problems = append(r.Problems, Problem{Blocking, fmt.Sprintf(
				"%s=0: the endpoints are not on this node's own addresses, so packets must be forwarded, and forwarding is off (sysctl -w %s=1)", key, key)})
		}
	}
	if !v6 && p.Dst.IsLoopback() && len(eps) > 0 {
		key := "net.ipv4.conf.all.route_localnet"
		if v, err := n.Sysctls.Sysctl(key); err == nil && v == "0" {
			r.Problems = append(r.Problems, Problem{Blocking, fmt.Sprintf(
				"%s=0: a NodePort on %s is DNATed to %s but the kernel will not route a 127.0.0.0/8 source off the loopback (sysctl -w %s=1)", key, p.Dst, strings.Join(eps, ", "), key)})
		}
	}
	if len(n.Bridges) > 0 {
		key := "net.bridge.bridge-nf-call-iptables"
		if v6 {
			key = "net.bridge.bridge-nf-call-ip6tables"
		}
		v, err := n.Sysctls.Sysctl(key)
		off := ""
		switch {
		case errors.Is(err, fs.ErrNotExist):
			off = key + " is missing (br_netfilter not loaded)"
		case err == nil && v == "0":
			off = key + "=0"
		}
		if off != "" {
			if len(sameBridge) > 0 {
				r.Problems = append(r.Problems, Problem{Blocking, fmt.Sprintf(
					"%s and bridge %s is present: replies from %s to %s stay on the bridge and skip the reverse NAT, so the connection fails (modprobe br_netfilter; sysctl -w %s=1)",
					off, strings.Join(n.Bridges, ","), strings.Join(sameBridge, ", "), p.Src, key)})
			} else {
				r.Problems = append(r.Problems, Problem{Warning, fmt.Sprintf(
					"%s and bridge %s is present: pods reaching a service endpoint on the same bridge (hairpin) will fail (modprobe br_netfilter; sysctl -w %s=1)",
					off, strings.Join(n.Bridges, ","), key)})
			}
		}
	}
	r.finish(ctx, p)
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
