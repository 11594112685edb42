package rules

import (
	"bytes"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/svcproxy/svcproxy/proxier/model"
)

// LargeClusterEndpointsThreshold: above this many endpoints in total,
// per-endpoint comments are dropped to keep restore input small, as
// kube-proxy does.
const LargeClusterEndpointsThreshold = 1000

// Layout is the shape of the per-service rules. Chain names, hashes and
// comments are kube-proxy's in both; the number of chains is not (Kubernetes
// itself says the chains are not an API).
type Layout string

const (
	// LayoutCompact is svcproxy's default. An endpoint gets a KUBE-SEP chain
	// only when it may be the client itself (hairpin: on this node, without
	// a node, or at one of this node's addresses or in its pod CIDRs); every
	// other endpoint is DNATed straight from its KUBE-SVC/SVL chain, with the
	// same probabilities, and session affinity keeps the KUBE-SEP hash as
	// the name of its recent list. Above DispatchThreshold service ports,
	// KUBE-SERVICES dispatches by destination into buckets. iptables-nft
	// restores in time growing with the number of chains: at 10,000
	// Services × 10 endpoints this is about 11,000 chains against 110,000.
	LayoutCompact Layout = "compact"
	// LayoutKubeProxy is kube-proxy's iptables layout exactly: a KUBE-SEP
	// chain per endpoint and one KUBE-SERVICES rule per destination.
	LayoutKubeProxy Layout = "kube-proxy"
)

// ParseLayout reads a layout name; "" is the default, LayoutCompact.
func ParseLayout(s string) (Layout, error) {
	switch Layout(s) {
	case "", LayoutCompact:
		return LayoutCompact, nil
	case LayoutKubeProxy:
		return LayoutKubeProxy, nil
	}
	return "", fmt.Errorf("%q is not a rule layout (want %s or %s)", s, LayoutCompact, LayoutKubeProxy)
}

// NodeConfig is the node-specific input to rendering.
type NodeConfig struct {
	Family   v1.IPFamily
	Topology model.Topology
	// NodeIPs are the node's addresses in this family, primary first.
	NodeIPs []netip.Addr
	// PodCIDRs are this node's pod CIDRs in this family (the Node's
	// spec.podCIDRs): an endpoint inside them may be the client itself.
	PodCIDRs []netip.Prefix
	// Layout is the shape of the rules; "" means LayoutCompact.
	Layout Layout
	// MasqueradeBit selects the fwmark bit (kube-proxy default 14).
	MasqueradeBit int
	MasqueradeAll bool
	LocalDetector LocalDetector
	// RandomFully adds --random-fully to MASQUERADE (iptables >= 1.6.2).
	RandomFully bool
	// LocalhostNodePorts lets NodePorts answer on 127.0.0.1 (IPv4 only).
	LocalhostNodePorts bool
	// NodePortAddresses limits NodePorts to these node IPs. nil means every
	// local address; empty (non-nil) means none.
	NodePortAddresses []netip.Addr
	// ConntrackTCPLiberal: when set, INVALID packets are not dropped.
	ConntrackTCPLiberal bool
	// PodEgress, when set, masquerades pod traffic leaving the pod network.
	PodEgress *PodEgressMasquerade
	// NFAcct names the nfacct counters that exist on the node (kube-proxy's
	// iptables.NFAcctInvalidDropped and iptables.NFAcctLocalhostNodePorts):
	// rules count into these only, because a rule naming a missing counter
	// fails the whole restore.
	NFAcct []string
	// IPSets are the hash:net sets the rules reference, with their members.
	// Rendering uses only the names; the sync loop writes the members
	// before every restore so a rule never refers to a missing set.
	IPSets map[string][]netip.Prefix
}

// PodEgressMasquerade describes the optional pod egress SNAT rule: sources in
// PodSet going to destinations in neither PodSet nor NoMasqSet are
// masqueraded. Both are ipset names.
type PodEgressMasquerade struct {
	PodSet    string
	NoMasqSet string
}

// MasqueradeMark is the mark value in kube-proxy's spelling ("0x004000").
func (c *NodeConfig) MasqueradeMark() string {
	return fmt.Sprintf("%#08x", 1<<uint(c.MasqueradeBit))
}

// counts reports whether the rules count into nfacct counter name.
func (c *NodeConfig) counts(name string) bool { return slices.Contains(c.NFAcct, name) }

// countInto is the match that counts a packet into counter name, or nothing
// when the node does not have that counter.
func (c *NodeConfig) countInto(name string) []string {
	if !c.counts(name) {
		return nil
	}
	return []string{"-m", "nfacct", "--nfacct-name", name}
}

func (c *NodeConfig) isIPv6() bool { return c.Family == v1.IPv6Protocol }

func (c *NodeConfig) layout() Layout {
	if c.Layout == "" {
		return LayoutCompact
	}
	return c.Layout
}

// LocalhostNodePortsPossible reports whether a NodePort can answer on
// 127.0.0.1, as kube-proxy decides it: IPv4 only, LocalhostNodePorts on, and
// NodePorts open on every local address or on a loopback one. Then the
// kernel needs route_localnet=1, and the rules block the anti-martian hole
// that opens (KUBE-FIREWALL).
func (c *NodeConfig) LocalhostNodePortsPossible() bool {
	if c.isIPv6() || !c.LocalhostNodePorts {
		return false
	}
	return c.NodePortAddresses == nil || slices.ContainsFunc(c.NodePortAddresses, netip.Addr.IsLoopback)
}

// RenderOptions select full or partial output.
type RenderOptions struct {
	// Full writes every chain. Otherwise only what the Services in Changed
	// touch is written: their own chains and the dispatch buckets that hold
	// their entries (plus the small shared chains, rewritten every time).
	// A partial render needs Previous; without it, or when the dispatch
	// width or the large-cluster mode changed, it is full.
	Full    bool
	Changed map[types.NamespacedName]bool
	// Previous is the Index of the last render that was applied.
	Previous *Index
	// ExistingNATChains are the nat chains the kernel holds (full renders
	// only): the pod egress chain is flushed when the feature was turned
	// off. nil means unknown.
	ExistingNATChains []string
}

// Rendered is the restore input plus what the sync loop needs next.
type Rendered struct {
	Data []byte
	// Full reports whether every chain was written (asked for, or forced).
	Full bool
	// FilterRules and NATRules count the rules written; NATRulesTotal counts
	// every nat rule the table holds once Data is applied.
	FilterRules, NATRules, NATRulesTotal int
	// Index describes what the kernel holds once Data is applied; pass it
	// as RenderOptions.Previous next time.
	Index *Index
	// Unreferenced are chains of ours, by table, that this partial render
	// stopped using (a Service's old chains, an emptied dispatch bucket).
	// They are flushed or empty and unreferenced once Data is applied, and
	// can be deleted. A full render leaves the comparison with the kernel to
	// the caller (Index.Chains).
	Unreferenced map[string][]string
	// NoLocalEndpoints counts service ports whose Local policy has no local
	// endpoint, for internal and external traffic.
	NoLocalEndpointsInternal, NoLocalEndpointsExternal int
}

// render holds the output under construction for one Render call.
type render struct {
	cfg       *NodeConfig
	snap      *model.Snapshot
	filter    *tableWriter
	nat       *tableWriter
	largeMode bool
	mark      string
	index     *Index
}

// writeForNFT: the compact layout's chains are written in the order
// iptables-nft restores fastest (tableWriter.writeNFTOrder); tests turn it
// off to compare with sorted output.
var writeForNFT = true

// Render turns the snapshot and node configuration into iptables-restore
// input for the filter and nat tables. It is a pure function: the same input
// always yields byte-identical output.
func Render(snap *model.Snapshot, cfg *NodeConfig, opts RenderOptions) *Rendered {
	r := &render{
		cfg:       cfg,
		snap:      snap,
		filter:    newTableWriter("filter", writeForNFT && cfg.layout() == LayoutCompact),
		nat:       newTableWriter("nat", writeForNFT && cfg.layout() == LayoutCompact),
		largeMode: LargeMode(snap),
		mark:      cfg.MasqueradeMark(),
	}
	buckets := dispatchBuckets(cfg.layout(), len(snap.Services), opts.Previous)
	full := opts.Full || !opts.Previous.compatible(cfg.layout(), buckets, r.largeMode)
	out := &Rendered{Full: full}

	var dirty []model.ServicePortName
	if full {
		r.index = newIndex(cfg.layout(), buckets, r.largeMode)
		dirty = sortedPorts(snap)
	} else {
		r.index = opts.Previous.clone()
		dirty = r.dirtyPorts(opts.Changed, opts.Previous)
	}
	old := map[model.ServicePortName]*footprint{}
	for _, name := range dirty {
		old[name] = r.index.ports[name]
		if sp := snap.Services[name]; sp != nil {
			r.index.put(name, r.servicePort(sp, snap.Endpoints[name]))
		} else {
			r.index.drop(name)
		}
	}
	before := r.nat.lines
	r.writeBaseChains()
	r.index.baseNATRules = r.nat.lines - before
	if full {
		r.flushPodEgressIfOff(opts.ExistingNATChains)
	}
	r.writeSharedChains(full, old)
	out.Unreferenced = r.unreferenced(old, full)

	var buf bytes.Buffer
	r.filter.writeTo(&buf)
	r.nat.writeTo(&buf)
	out.Data = buf.Bytes()
	out.FilterRules = r.filter.lines
	out.NATRules = r.nat.lines
	out.NATRulesTotal = r.index.natRules()
	out.Index = r.index
	out.NoLocalEndpointsInternal, out.NoLocalEndpointsExternal = r.index.noLocalEndpoints()
	return out
}

// LargeMode reports whether snap is above kube-proxy's large-cluster
// threshold, where per-endpoint comments are dropped. Crossing it changes
// every service chain, so that render is a full one.
func LargeMode(snap *model.Snapshot) bool {
	return snap.EndpointCount() > LargeClusterEndpointsThreshold
}

// dirtyPorts are the service ports a partial render rewrites: every port,
// then and now, of the Services in changed.
func (r *render) dirtyPorts(changed map[types.NamespacedName]bool, prev *Index) []model.ServicePortName {
	set := map[model.ServicePortName]bool{}
	for svc := range changed {
		for _, name := range r.snap.PortsOf(svc) {
			if r.snap.Services[name] != nil {
				set[name] = true
			}
		}
		for _, name := range prev.byService[svc] {
			set[name] = true
		}
	}
	return sortPortNames(set)
}

// sortedPorts lists the snapshot's service ports in the order their rules
// appear in shared chains: by "ns/name:port", then protocol.
func sortedPorts(snap *model.Snapshot) []model.ServicePortName {
	set := make(map[model.ServicePortName]bool, len(snap.Services))
	for name := range snap.Services {
		set[name] = true
	}
	return sortPortNames(set)
}

func sortPortNames(set map[model.ServicePortName]bool) []model.ServicePortName {
	type keyed struct {
		key  string
		name model.ServicePortName
	}
	list := make([]keyed, 0, len(set))
	for name := range set {
		list = append(list, keyed{name.String() + "\x00" + string(name.Protocol), name})
	}
	slices.SortFunc(list, func(a, b keyed) int { return strings.Compare(a.key, b.key) })
	names := make([]model.ServicePortName, len(list))
	for i, k := range list {
		names[i] = k.name
	}
	return names
}

// probability is the statistic-match probability for the rule that picks
// the first of n remaining endpoints, formatted as kube-proxy formats it.
// The common values are formatted once.
func probability(n int) string {
	if n < len(probabilities) {
		return probabilities[n]
	}
	return formatProbability(n)
}

var probabilities = func() []string {
	p := make([]string, 1025)
	for n := 1; n < len(p); n++ {
		p[n] = formatProbability(n)
	}
	return p
}()

func formatProbability(n int) string {
	return strconv.FormatFloat(1.0/float64(n), 'f', 10, 64)
}

func portString(p int) string { return strconv.Itoa(p) }

func lowerProto(p v1.Protocol) string { return strings.ToLower(string(p)) }
