package explain

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
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
	// IPTables opens the node's iptables of one family. Live reads its
	// chains one at a time (SaveChain), never a whole table.
	IPTables   func(ctx context.Context, family iptables.Family) (iptables.Interface, error)
	SetMembers func(name string) ([]netip.Prefix, error)
	Addrs      func() ([]host.IfaceAddr, error)
	Node       func() (Node, error)
}

// ForThisNode reads this node (the calling thread's network namespace):
// iptables through the auto-detected backend, ipsets and routes through
// netlink, sysctls through /proc/sys.
func ForThisNode() LiveNode {
	return LiveNode{
		IPTables: func(_ context.Context, family iptables.Family) (iptables.Interface, error) {
			return iptables.New(iptables.OSExecutor{}, iptables.Options{Family: family})
		},
		SetMembers: func(name string) ([]netip.Prefix, error) { return ipset.New().ListMembers(name) },
		Addrs:      host.IfaceAddrsOfNode,
		Node: func() (Node, error) {
			bridges, err := host.Bridges()
			if err != nil {
				return Node{}, err
			}
			return Node{Routes: host.NetlinkRoutes{}, Sysctls: host.ProcSys{}, Bridges: bridges, BridgesKnown: true}, nil
		},
	}
}

// liveTimeout bounds reading the node's rules.
const liveTimeout = 60 * time.Second

// Live traces p through the node's live rules, reading only the chains the
// packet can reach, and checks its routes, sysctls and the reply's way
// back. A packet from the node (trace.Local) without a source gets the one
// the kernel would pick; an incoming packet without InIface arrives where
// the route back to its source leaves. A chain that cannot be read fails
// the explanation with the read's error.
func Live(ctx context.Context, p trace.Packet, l LiveNode) (*Report, error) {
	ctx, cancel := context.WithTimeout(ctx, liveTimeout)
	defer cancel()
	family := iptables.IPv4
	if p.Dst.Is6() {
		family = iptables.IPv6
	}
	ipt, err := l.IPTables(ctx, family)
	if err != nil {
		return nil, fmt.Errorf("opening iptables (run as root, in the node's network namespace): %w", err)
	}
	addrs, err := l.Addrs()
	if err != nil {
		return nil, fmt.Errorf("listing local addresses: %w", err)
	}
	node, err := l.Node()
	if err != nil {
		return nil, err
	}
	node.Addrs = addrs
	local := host.AddrsOf(addrs)
	if err := sourceAndInterface(&p, local, node.Routes); err != nil {
		return nil, err
	}
	chains := NewLiveChains(ctx, ipt)
	chains.Prefetch(builtinChains)
	tctx := trace.Context{LocalAddrs: local, IfaceAddrs: host.ByIface(addrs), ReadSet: l.SetMembers,
		Route: routeIface(node.Routes), Bridges: node.Bridges, BridgesKnown: node.BridgesKnown}
	rep, err := Explain(chains, tctx, p)
	if err != nil {
		return nil, fmt.Errorf("reading the live rules: %w", err)
	}
	rep.Rules = RulesInfo{Source: "live", Backend: string(ipt.Backend()), ChainsRead: chains.Reads()}
	Check(rep, tctx, p, node)
	return rep, nil
}

// ResolveLive finds ref in the comments of this node's live rules of the
// family, reading chain by chain (see ResolveFromComments).
func ResolveLive(ctx context.Context, ref ServiceRef, proto string, family iptables.Family, l LiveNode) (ServicePort, error) {
	ctx, cancel := context.WithTimeout(ctx, liveTimeout)
	defer cancel()
	ipt, err := l.IPTables(ctx, family)
	if err != nil {
		return ServicePort{}, fmt.Errorf("opening iptables (run as root, in the node's network namespace): %w", err)
	}
	return ResolveFromComments(ref, NewLiveChains(ctx, ipt), proto)
}

// sourceAndInterface completes p from the node: a node's packet without a
// source gets the one the kernel picks, a packet from one of the node's
// addresses becomes a node's packet, and an incoming packet without an
// input interface arrives where the route back to its source leaves
// (routes may be nil: unknown).
func sourceAndInterface(p *trace.Packet, local []netip.Addr, routes host.RouteLookup) error {
	if p.Origin == trace.Local && !p.Src.IsValid() {
		p.Src = nodeSource(p.Dst, local, routes)
		if !p.Src.IsValid() {
			return fmt.Errorf("--from-node: this node has no %s address", familyWord(p.Dst))
		}
	}
	FromLocal(p, local)
	if p.Origin == trace.Incoming && p.InIface == "" && routes != nil {
		if rt, err := routes.RouteGet(p.Src); err == nil {
			p.InIface = rt.Iface
		}
	}
	return nil
}

// routeIface adapts routes to the tracer's Context.Route (nil when routes
// are unknown).
func routeIface(routes host.RouteLookup) func(netip.Addr) (string, bool) {
	if routes == nil {
		return nil
	}
	return func(dst netip.Addr) (string, bool) {
		rt, err := routes.RouteGet(dst)
		return rt.Iface, err == nil
	}
}

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
	if routes != nil {
		if rt, err := routes.RouteGet(dst); err == nil {
			if a, err := netip.ParseAddr(rt.Src); err == nil {
				return a
			}
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

// builtinChains are the chains every trace starts from, read ahead.
var builtinChains = []chainName{
	{iptables.TableRaw, "PREROUTING"}, {iptables.TableRaw, "OUTPUT"},
	{iptables.TableMangle, "PREROUTING"}, {iptables.TableMangle, "INPUT"}, {iptables.TableMangle, "FORWARD"},
	{iptables.TableMangle, "OUTPUT"}, {iptables.TableMangle, "POSTROUTING"},
	{iptables.TableNAT, "PREROUTING"}, {iptables.TableNAT, "INPUT"}, {iptables.TableNAT, "OUTPUT"}, {iptables.TableNAT, "POSTROUTING"},
	{iptables.TableFilter, "INPUT"}, {iptables.TableFilter, "FORWARD"}, {iptables.TableFilter, "OUTPUT"},
	{iptables.TableNAT, "KUBE-SERVICES"}, {iptables.TableFilter, "KUBE-SERVICES"},
}

type chainName struct {
	table iptables.Table
	name  string
}

// LiveChains reads a live node's chains for the tracer one at a time
// ("iptables -t TABLE -S CHAIN", whose cost follows the chain), caching
// each: on a node of 100,000 chains a packet reaches a few dozen, while a
// whole-table save takes minutes or crashes.
type LiveChains struct {
	ctx   context.Context
	ipt   iptables.Interface
	mu    sync.Mutex
	cache map[chainName]*iptables.Chain
	reads int
}

var _ trace.Chains = (*LiveChains)(nil)

// NewLiveChains reads chains through ipt, bounded by ctx.
func NewLiveChains(ctx context.Context, ipt iptables.Interface) *LiveChains {
	return &LiveChains{ctx: ctx, ipt: ipt, cache: map[chainName]*iptables.Chain{}}
}

// Chain implements trace.Chains.
func (l *LiveChains) Chain(table iptables.Table, name string) (*iptables.Chain, error) {
	k := chainName{table, name}
	l.mu.Lock()
	c, ok := l.cache[k]
	l.mu.Unlock()
	if ok {
		return c, nil
	}
	c, err := l.read(k)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.cache[k] = c
	l.mu.Unlock()
	return c, nil
}

// read asks iptables for one chain; a chain that does not exist is nil.
func (l *LiveChains) read(k chainName) (*iptables.Chain, error) {
	l.mu.Lock()
	l.reads++
	l.mu.Unlock()
	text, err := l.ipt.SaveChain(l.ctx, k.table, k.name)
	if errors.Is(err, iptables.ErrNoChain) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	c, err := iptables.ParseChain(k.table, withoutComments(text))
	if err != nil {
		return nil, fmt.Errorf("iptables -t %s -S %s: %w", k.table, k.name, err)
	}
	return c, nil
}

// withoutComments drops the "# Warning: ..." lines iptables-nft may print.
func withoutComments(text []byte) []byte {
	var b strings.Builder
	for _, line := range strings.SplitAfter(string(text), "\n") {
		if !strings.HasPrefix(line, "#") {
			b.WriteString(line)
		}
	}
	return []byte(b.String())
}

// Prefetch reads chains ahead, a few at a time, so that the walk finds
// them cached. A chain that fails here is read again (and its error
// reported) when the walk reaches it.
func (l *LiveChains) Prefetch(chains []chainName) {
	var wg sync.WaitGroup
	work := make(chan chainName)
	for range min(4, len(chains)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range work {
				if c, err := l.read(k); err == nil {
					l.mu.Lock()
					l.cache[k] = c
					l.mu.Unlock()
				}
			}
		}()
	}
	for _, k := range chains {
		work <- k
	}
	close(work)
	wg.Wait()
}

// Reads returns how many chains have been read so far.
func (l *LiveChains) Reads() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.reads
}
