package explain

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/svcproxy/svcproxy/ipset"
	"github.com/svcproxy/svcproxy/iptables"
	"github.com/svcproxy/svcproxy/iptables/trace"
	"github.com/svcproxy/svcproxy/proxier/host"
)

// LiveNode is what explaining a live node reads from it, behind functions
// so that tests can substitute them. ForThisNode reads the node the caller
// runs on.
type LiveNode struct {
	// Save returns iptables-save output of the nat and filter tables.
	Save       func(ctx context.Context, family iptables.Family) ([]byte, error)
	SetMembers func(name string) ([]netip.Prefix, error)
	LocalAddrs func() ([]netip.Addr, error)
	Node       func() (Node, error)
}

// ForThisNode reads this node (the calling thread's network namespace):
// iptables-save through the auto-detected backend, ipsets and routes
// through netlink, sysctls through /proc/sys.
func ForThisNode() LiveNode {
	return LiveNode{
		Save: func(ctx context.Context, family iptables.Family) ([]byte, error) {
			ipt, err := iptables.New(iptables.OSExecutor{}, iptables.Options{Family: family})
			if err != nil {
				return nil, err
			}
			var out []byte
			for _, t := range []iptables.Table{iptables.TableNAT, iptables.TableFilter} {
				b, err := ipt.Save(ctx, t)
				if err != nil {
					return nil, fmt.Errorf("iptables-save -t %s: %w", t, err)
				}
				out = append(out, b...)
			}
			return out, nil
		},
		SetMembers: func(name string) ([]netip.Prefix, error) { return ipset.New().ListMembers(name) },
		LocalAddrs: host.InterfaceAddrs,
		Node: func() (Node, error) {
			bridges, err := host.Bridges()
			if err != nil {
				return Node{}, err
			}
			return Node{Routes: host.NetlinkRoutes{}, Sysctls: host.ProcSys{}, Bridges: bridges}, nil
		},
	}
}

// Live traces p through the node's live rules and checks its routes and
// sysctls. A packet from the node (trace.Local) without a source gets the
// one the kernel would pick; an incoming packet without InIface arrives
// where the route back to its source leaves.
func Live(ctx context.Context, p trace.Packet, l LiveNode) (*Report, error) {
	ctx, cancel := context.WithTimeout(ctx, liveTimeout)
	defer cancel()
	family := iptables.IPv4
	if p.Dst.Is6() {
		family = iptables.IPv6
	}
	text, err := l.Save(ctx, family)
	if err != nil {
		return nil, fmt.Errorf("reading the live rules (run as root, in the node's network namespace): %w", err)
	}
	rules, err := iptables.ParseDump(text)
	if err != nil {
		return nil, fmt.Errorf("parsing iptables-save output: %w", err)
	}
	sets := map[string][]netip.Prefix{}
	for _, name := range referencedSets(rules) {
		members, err := l.SetMembers(name)
		if err != nil {
			return nil, fmt.Errorf("reading ipset %s: %w", name, err)
		}
		sets[name] = members
	}
	local, err := l.LocalAddrs()
	if err != nil {
		return nil, fmt.Errorf("listing local addresses: %w", err)
	}
	node, err := l.Node()
	if err != nil {
		return nil, err
	}
	if p.Origin == trace.Local && !p.Src.IsValid() {
		p.Src = nodeSource(p.Dst, local, node.Routes)
		if !p.Src.IsValid() {
			return nil, fmt.Errorf("--from-node: this node has no %s address", familyWord(p.Dst))
		}
	}
	FromLocal(&p, local)
	if p.Origin == trace.Incoming && p.InIface == "" {
		// The packet arrives where the route back to its source leaves.
		if rt, err := node.Routes.RouteGet(p.Src); err == nil {
			p.InIface = rt.Iface
		}
	}
	tctx := trace.Context{LocalAddrs: local, Sets: sets}
	rep, err := Explain(rules, tctx, p)
	if err != nil {
		return nil, err
	}
	Check(rep, tctx, p, node)
	return rep, nil
}

// liveTimeout bounds reading the node's rules.
const liveTimeout = 30 * time.Second

// FromLocal makes an incoming p from one of the node's own addresses (or
// loopback) a packet of a local process.
func FromLocal(p *trace.Packet, local []netip.Addr) {
	if p.Origin == trace.Incoming && (p.Src.IsLoopback() || slices.Contains(local, p.Src)) {
		p.Origin = trace.Local
		p.InIface = ""
	}
}

// nodeSource picks the source address a local process would use for dst:
// the route's preferred source, else the first global address of the family.
func nodeSource(dst netip.Addr, local []netip.Addr, routes host.RouteLookup) netip.Addr {
	if dst.IsLoopback() {
		return dst
	}
	if rt, err := routes.RouteGet(dst); err == nil {
		if a, err := netip.ParseAddr(rt.Src); err == nil {
			return a
		}
	}
	for _, a := range local {
		if a.Is4() == dst.Is4() && a.IsGlobalUnicast() {
			return a
		}
	}
	return netip.Addr{}
}

func familyWord(a netip.Addr) string {
	if a.Is6() {
		return "IPv6"
	}
	return "IPv4"
}

// referencedSets lists the ipsets the rules match with -m set, sorted. Rules
// the parser does not understand name no set it could read.
func referencedSets(d *iptables.Dump) []string {
	var names []string
	for _, t := range d.Tables {
		for _, c := range t.Chains {
			for _, r := range c.Rules {
				spec, err := iptables.ParseRuleArgs(r.Args)
				if err != nil {
					continue
				}
				for _, m := range spec.Matches {
					if set, ok := m.(*iptables.SetMatch); ok && !slices.Contains(names, set.Name) {
						names = append(names, set.Name)
					}
				}
			}
		}
	}
	slices.Sort(names)
	return names
}
