package app

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/svcproxy/svcproxy/ipset"
	"github.com/svcproxy/svcproxy/iptables"
	"github.com/svcproxy/svcproxy/iptables/trace"
	"github.com/svcproxy/svcproxy/proxier/explain"
)

// live is what explain reads from the node it runs on, behind functions so
// that tests can substitute them.
type live struct {
	save       func(ctx context.Context, family iptables.Family) ([]byte, error)
	setMembers func(name string) ([]netip.Prefix, error)
	localAddrs func() ([]netip.Addr, error)
	node       func() (explain.Node, error)
}

// liveNode reads this node (the caller's network namespace).
func liveNode() live {
	return live{
		save: func(ctx context.Context, family iptables.Family) ([]byte, error) {
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
		setMembers: func(name string) ([]netip.Prefix, error) { return ipset.New().ListMembers(name) },
		localAddrs: func() ([]netip.Addr, error) {
			addrs, err := net.InterfaceAddrs()
			if err != nil {
				return nil, err
			}
			var out []netip.Addr
			for _, a := range addrs {
				if n, ok := a.(*net.IPNet); ok {
					if ip, ok := netip.AddrFromSlice(n.IP); ok {
						out = append(out, ip.Unmap())
					}
				}
			}
			return out, nil
		},
		node: func() (explain.Node, error) {
			links, err := netlink.LinkList()
			if err != nil {
				return explain.Node{}, fmt.Errorf("listing links: %w", err)
			}
			var bridges []string
			for _, l := range links {
				if l.Type() == "bridge" {
					bridges = append(bridges, l.Attrs().Name)
				}
			}
			slices.Sort(bridges)
			return explain.Node{Routes: netlinkRoutes{}, Sysctls: procSysctls{}, Bridges: bridges}, nil
		},
	}
}

// explainLive traces p through the node's live rules and checks its routes
// and sysctls.
func explainLive(ctx context.Context, p trace.Packet, l live) (*explain.Report, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, liveTimeout)
	defer cancel()
	family := iptables.IPv4
	if p.Dst.Is6() {
		family = iptables.IPv6
	}
	text, err := l.save(ctx, family)
	if err != nil {
		return nil, fmt.Errorf("reading the live rules (run as root, in the node's network namespace): %w", err)
	}
	rules, err := iptables.ParseDump(text)
	if err != nil {
		return nil, fmt.Errorf("parsing iptables-save output: %w", err)
	}
	sets := map[string][]netip.Prefix{}
	for _, name := range referencedSets(rules) {
		members, err := l.setMembers(name)
		if err != nil {
			return nil, fmt.Errorf("reading ipset %s: %w", name, err)
		}
		sets[name] = members
	}
	local, err := l.localAddrs()
	if err != nil {
		return nil, fmt.Errorf("listing local addresses: %w", err)
	}
	node, err := l.node()
	if err != nil {
		return nil, err
	}
	if p.Origin == trace.Local && !p.Src.IsValid() {
		p.Src = nodeSource(p.Dst, local, node.Routes)
		if !p.Src.IsValid() {
			return nil, fmt.Errorf("--from-node: this node has no %s address", familyWord(p.Dst))
		}
	}
	fromLocal(&p, local)
	if p.Origin == trace.Incoming && p.InIface == "" {
		// The packet arrives where the route back to its source leaves.
		if rt, err := node.Routes.RouteGet(p.Src); err == nil {
			p.InIface = rt.Iface
		}
	}
	tctx := trace.Context{LocalAddrs: local, Sets: sets}
	rep, err := explain.Explain(rules, tctx, p)
	if err != nil {
		return nil, traceErr(err)
	}
	explain.Check(rep, tctx, p, node)
	return rep, nil
}

// nodeSource picks the source address a local process would use for dst:
// the route's preferred source, else the first global address of the family.
func nodeSource(dst netip.Addr, local []netip.Addr, routes explain.RouteLookup) netip.Addr {
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

// referencedSets lists the ipsets the rules name in -m set --match-set, sorted.
func referencedSets(d *iptables.Dump) []string {
	var names []string
	for _, t := range d.Tables {
		for _, c := range t.Chains {
			for _, r := range c.Rules {
				for i := 0; i+1 < len(r.Args); i++ {
					if r.Args[i] == "--match-set" && !slices.Contains(names, r.Args[i+1]) {
						names = append(names, r.Args[i+1])
					}
				}
			}
		}
	}
	slices.Sort(names)
	return names
}

// netlinkRoutes looks routes up as "ip route get" does.
type netlinkRoutes struct{}

func (netlinkRoutes) RouteGet(dst netip.Addr) (explain.Route, error) {
	routes, err := netlink.RouteGet(dst.AsSlice())
	if err != nil {
		return explain.Route{}, err
	}
	if len(routes) == 0 {
		return explain.Route{}, errors.New("no route")
	}
	r := routes[0]
	out := explain.Route{Dst: dst.String()}
	if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil {
		out.Iface = l.Attrs().Name
	}
	if r.Gw != nil {
		out.Gateway = r.Gw.String()
	}
	if r.Src != nil {
		out.Src = r.Src.String()
	}
	return out, nil
}

// procSysctls reads /proc/sys (per network namespace for net.*).
type procSysctls struct{}

func (procSysctls) Sysctl(name string) (string, error) {
	b, err := os.ReadFile(filepath.Join("/proc/sys", strings.ReplaceAll(name, ".", "/")))
	if err != nil {
		return "", err
	}
	return string(bytes.TrimSpace(b)), nil
}
