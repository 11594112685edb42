package rules

import (
	"bytes"
	"cmp"
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

// NodeConfig is the node-specific input to rendering.
type NodeConfig struct {
	Family   v1.IPFamily
	Topology model.Topology
	// NodeIPs are the node's addresses in this family, primary first.
	NodeIPs []netip.Addr
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

func (c *NodeConfig) isIPv6() bool { return c.Family == v1.IPv6Protocol }

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
	// Full writes every service's chains. Otherwise only services in
	// Changed get their per-service chains rewritten.
	Full    bool
	Changed map[types.NamespacedName]bool
	// ExistingNATChains (from iptables-save) lets the renderer delete
	// per-service chains that are no longer used. nil skips deletion.
	ExistingNATChains []string
}

// Rendered is the restore input plus counts the sync loop reports as metrics.
type Rendered struct {
	Data []byte
	// FilterRules and NATRules count the rules written; NATRulesTotal also
	// counts unchanged service chains left out of a partial restore.
	FilterRules, NATRules, NATRulesTotal int
	DeletedChains                        int
	ActiveNATChains                      map[string]bool
	// NoLocalEndpoints counts service ports whose Local policy has no local
	// endpoint, for internal and external traffic.
	NoLocalEndpointsInternal, NoLocalEndpointsExternal int
}

// render holds the output under construction for one Render call.
type render struct {
	cfg        *NodeConfig
	filter     *tableWriter
	nat        *tableWriter
	skipped    *tableWriter
	active     map[string]bool
	largeMode  bool
	out        *Rendered
	mark       string
	protoCache map[v1.Protocol]string
}

// Render turns the snapshot and node configuration into iptables-restore
// input for the filter and nat tables. It is a pure function: the same input
// always yields byte-identical output.
func Render(snap *model.Snapshot, cfg *NodeConfig, opts RenderOptions) *Rendered {
	r := &render{
		cfg:     cfg,
		filter:  newTableWriter("filter"),
		nat:     newTableWriter("nat"),
		skipped: newDiscardWriter("nat"),
		active:  map[string]bool{},
		out:     &Rendered{},
		mark:    cfg.MasqueradeMark(),
	}
	r.largeMode = LargeMode(snap)

	r.writeBaseChains()
	for _, name := range sortedServicePortNames(snap.Services) {
		sp := snap.Services[name]
		changed := opts.Full || opts.Changed[name.NamespacedName]
		r.writeServicePort(sp, snap.Endpoints[name], changed)
	}
	r.deleteStaleChains(opts.ExistingNATChains)
	r.flushPodEgressIfOff(opts.ExistingNATChains)
	r.writeNodePortsJump()
	r.writeForwardRules()

	var buf bytes.Buffer
	r.filter.writeTo(&buf)
	r.nat.writeTo(&buf)
	r.out.Data = buf.Bytes()
	r.out.FilterRules = r.filter.lines
	r.out.NATRules = r.nat.lines
	r.out.NATRulesTotal = r.nat.lines + r.skipped.lines
	r.out.ActiveNATChains = r.active
	return r.out
}

// LargeMode reports whether snap is above kube-proxy's large-cluster
// threshold, where per-endpoint comments are dropped. Crossing it changes
// every service chain, so the daemon makes that sync a full one.
func LargeMode(snap *model.Snapshot) bool {
	return snap.EndpointCount() > LargeClusterEndpointsThreshold
}

func sortedServicePortNames(m map[model.ServicePortName]*model.ServicePort) []model.ServicePortName {
	names := make([]model.ServicePortName, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	slices.SortFunc(names, func(a, b model.ServicePortName) int {
		if c := cmp.Compare(a.String(), b.String()); c != 0 {
			return c
		}
		return cmp.Compare(a.Protocol, b.Protocol)
	})
	return names
}

// writeBaseChains declares the top-level chains and writes the masquerade
// machinery: KUBE-MARK-MASQ sets the bit; KUBE-POSTROUTING masquerades (and
// clears the bit on) marked packets only.
func (r *render) writeBaseChains() {
	for _, c := range []string{ChainServices, ChainExternalServices, ChainForward, ChainNodePorts, ChainProxyFirewall} {
		r.filter.declare(c)
	}
	for _, c := range []string{ChainServices, ChainNodePorts, ChainPostrouting, ChainMarkMasq} {
		r.nat.declare(c)
	}
	mark := r.mark + "/" + r.mark
	r.nat.rule(ChainPostrouting, "-m", "mark", "!", "--mark", mark, "-j", "RETURN")
	// Clear the bit so a packet that re-traverses the stack is not masqueraded twice.
	r.nat.rule(ChainPostrouting, "-j", "MARK", "--xor-mark", r.mark)
	masq := append(comment("kubernetes service traffic requiring SNAT"), "-j", "MASQUERADE")
	if r.cfg.RandomFully {
		masq = append(masq, "--random-fully")
	}
	r.nat.rule(ChainPostrouting, masq...)
	r.nat.rule(ChainMarkMasq, "-j", "MARK", "--or-mark", r.mark)

	if r.cfg.LocalhostNodePortsPossible() {
		// route_localnet opens 127.0.0.1 NodePorts to the network
		// (kubernetes#90259); this is kubelet's identical mitigation.
		r.filter.declare(ChainKubeletFirewall)
		r.filter.rule(ChainKubeletFirewall, slices.Concat(comment("block incoming localnet connections"),
			[]string{"-d", "127.0.0.0/8", "!", "-s", "127.0.0.0/8", "-m", "conntrack", "!", "--ctstate", "RELATED,ESTABLISHED,DNAT", "-j", "DROP"})...)
	}
	if r.cfg.PodEgress != nil {
		r.writePodEgress(r.cfg.PodEgress)
	}
}

// flushPodEgressIfOff empties the pod egress chain when pod egress is off
// but the chain exists (the flag was dropped since the last run): its jump
// from POSTROUTING stays, harmlessly, until svcproxy cleanup.
func (r *render) flushPodEgressIfOff(existing []string) {
	if r.cfg.PodEgress == nil && slices.Contains(existing, ChainPodEgress) {
		r.nat.declare(ChainPodEgress)
	}
}

// writeNodePortsJump ends KUBE-SERVICES with the jump to KUBE-NODEPORTS for
// traffic to this node's own addresses. It must stay the last rule.
func (r *render) writeNodePortsJump() {
	note := comment("kubernetes service nodeports; NOTE: this must be the last rule in this chain")
	if r.cfg.NodePortAddresses == nil {
		dst := []string{"-m", "addrtype", "--dst-type", "LOCAL"}
		if r.cfg.isIPv6() {
			dst = append(dst, "!", "-d", "::1/128")
		} else if !r.cfg.LocalhostNodePorts {
			dst = append(dst, "!", "-d", "127.0.0.0/8")
		}
		r.nat.rule(ChainServices, slices.Concat(note, dst, []string{"-j", ChainNodePorts})...)
		return
	}
	for _, ip := range r.cfg.NodePortAddresses {
		if ip.IsLoopback() && (r.cfg.isIPv6() || !r.cfg.LocalhostNodePorts) {
			continue // localhost NodePorts are impossible on IPv6 and off by flag on IPv4
		}
		r.nat.rule(ChainServices, slices.Concat(note, []string{"-d", ip.String(), "-j", ChainNodePorts})...)
	}
}

// writeForwardRules lets marked (NodePort) traffic and its replies through a
// FORWARD chain whose policy may be DROP.
func (r *render) writeForwardRules() {
	if !r.cfg.ConntrackTCPLiberal {
		// INVALID packets would otherwise reset connections (kubernetes#74839).
		r.filter.rule(ChainForward, "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP")
	}
	r.filter.rule(ChainForward, slices.Concat(comment("kubernetes forwarding rules"),
		[]string{"-m", "mark", "--mark", r.mark + "/" + r.mark, "-j", "ACCEPT"})...)
	r.filter.rule(ChainForward, slices.Concat(comment("kubernetes forwarding conntrack rule"),
		[]string{"-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"})...)
}

// deleteStaleChains flushes and deletes per-service chains that exist in the
// kernel but are no longer produced.
func (r *render) deleteStaleChains(existing []string) {
	stale := map[string]bool{}
	for _, c := range existing {
		if IsServiceChain(c) && !r.active[c] {
			stale[c] = true
		}
	}
	for c := range stale {
		r.nat.deleteChain(c)
		r.out.DeletedChains++
	}
}

// writePodEgress masquerades traffic from pods to destinations outside the
// pod network (and outside the no-masquerade set).
func (r *render) writePodEgress(pe *PodEgressMasquerade) {
	const chain = ChainPodEgress
	r.nat.declare(chain)
	r.nat.rule(chain, slices.Concat(comment("pod egress leaves the pod network through the node address"),
		[]string{"-m", "set", "--match-set", pe.PodSet, "src", "-m", "set", "!", "--match-set", pe.PodSet, "dst"},
		noMasqMatch(pe.NoMasqSet), masqueradeTarget(r.cfg.RandomFully))...)
}

func noMasqMatch(set string) []string {
	if set == "" {
		return nil
	}
	return []string{"-m", "set", "!", "--match-set", set, "dst"}
}

func masqueradeTarget(randomFully bool) []string {
	if randomFully {
		return []string{"-j", "MASQUERADE", "--random-fully"}
	}
	return []string{"-j", "MASQUERADE"}
}

// ChainPodEgress holds svcproxy's optional pod egress masquerade rule.
const ChainPodEgress = "SVCPROXY-POD-EGRESS"

func portString(p int) string { return strconv.Itoa(p) }

func lowerProto(p v1.Protocol) string { return strings.ToLower(string(p)) }

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
