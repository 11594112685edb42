package nodeconfig

import (
	"net/netip"
	"slices"

	v1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"

	"github.com/svcproxy/svcproxy/ipset"
	"github.com/svcproxy/svcproxy/proxier/host"
	"github.com/svcproxy/svcproxy/proxier/model"
	"github.com/svcproxy/svcproxy/proxier/rules"
)

// Builder derives the rules.NodeConfig of one IP family of one node.
type Builder struct {
	Settings    Settings
	Family      v1.IPFamily
	NodeName    string
	RandomFully bool
	// LocalAddrs lists the host's interface addresses, which CIDRs in
	// NodePortAddresses select from; nil means none (offline rendering).
	// host.InterfaceAddrs is the real one.
	LocalAddrs func() ([]netip.Addr, error)
}

// ForHost returns the Builder the daemon uses: the host's interface
// addresses are those of the calling thread's network namespace.
func ForHost(s Settings, family v1.IPFamily, nodeName string, randomFully bool) *Builder {
	return &Builder{Settings: s, Family: family, NodeName: nodeName, RandomFully: randomFully, LocalAddrs: host.InterfaceAddrs}
}

// Build maps the configuration onto a NodeConfig. Local traffic detection:
// ClusterCIDR with one CIDR of the family gives kube-proxy's exact
// "-s CIDR" match and with several the pod-CIDR ipset; NodeCIDR the node's
// pod CIDR; BridgeInterface and InterfaceNamePrefix "-i" matches. Pod egress
// masquerade (--masquerade-pod-egress) needs the cluster CIDRs, always in
// the pod-CIDR set, plus the no-masquerade set when --no-masquerade-cidrs
// has CIDRs of the family.
func (b *Builder) Build(node *v1.Node) *rules.NodeConfig {
	c := &rules.NodeConfig{
		Family:              b.Family,
		Topology:            model.TopologyOf(b.NodeName, node),
		MasqueradeBit:       int(b.Settings.MasqueradeBit),
		MasqueradeAll:       b.Settings.MasqueradeAll,
		RandomFully:         b.RandomFully,
		LocalhostNodePorts:  b.Settings.LocalhostNodePorts,
		ConntrackTCPLiberal: b.Settings.TCPBeLiberal,
		LocalDetector:       rules.NoLocalDetector(),
	}
	c.Layout, _ = rules.ParseLayout(b.Settings.RuleLayout) // checked by Settings.Validate
	if node != nil {
		c.NodeIPs = OfFamily(model.NodeAddresses(node), b.Family)
		c.PodCIDRs = PrefixesOf(model.NodePodCIDRs(node), b.Family)
	}
	if ip, err := netip.ParseAddr(b.Settings.BindAddress); err == nil && !ip.IsUnspecified() && inFamily(ip, b.Family) {
		c.NodeIPs = append([]netip.Addr{ip}, slices.DeleteFunc(c.NodeIPs, func(a netip.Addr) bool { return a == ip })...)
	}
	c.NodePortAddresses = b.nodePortAddresses(c.NodeIPs)

	sets := map[string][]netip.Prefix{}
	podSet := ipset.FamilyName(ipset.PodCIDRsSet, b.ipsetFamily())
	clusterCIDRs := PrefixesOf(b.Settings.ClusterCIDRs, b.Family)
	switch b.Settings.DetectLocalMode {
	case LocalModeClusterCIDR, "": // "" is kube-proxy's default, ClusterCIDR
		switch {
		case len(clusterCIDRs) == 1:
			// A single CIDR keeps kube-proxy's exact rule text.
			c.LocalDetector = rules.DetectByCIDR(clusterCIDRs[0])
		case len(clusterCIDRs) > 1:
			c.LocalDetector = rules.DetectBySet(podSet)
			sets[podSet] = setMembers(clusterCIDRs)
		}
	case LocalModeNodeCIDR:
		// As kube-proxy: the node's pod CIDR of this family. The API allows
		// at most one per family, so this is never a set (and never collides
		// with the cluster-wide pod set pod egress uses).
		if node != nil {
			if cidrs := PrefixesOf(model.NodePodCIDRs(node), b.Family); len(cidrs) > 0 {
				c.LocalDetector = rules.DetectByCIDR(cidrs[0])
			}
		}
	case LocalModeBridgeInterface:
		c.LocalDetector = rules.DetectByBridgeInterface(b.Settings.BridgeInterface)
	case LocalModeInterfaceNamePrefix:
		c.LocalDetector = rules.DetectByInterfaceNamePrefix(b.Settings.InterfaceNamePrefix)
	}
	// Pod egress is defined by the cluster's pod network (all of it, in
	// every detect-local mode): traffic from it to anything outside it and
	// outside --no-masquerade-cidrs leaves through the node's address.
	if b.Settings.MasqueradePodEgress && len(clusterCIDRs) > 0 {
		sets[podSet] = setMembers(clusterCIDRs)
		egress := &rules.PodEgressMasquerade{PodSet: podSet}
		if noMasq := PrefixesOf(b.Settings.NoMasqueradeCIDRs, b.Family); len(noMasq) > 0 {
			egress.NoMasqSet = ipset.FamilyName(ipset.NoMasqSet, b.ipsetFamily())
			sets[egress.NoMasqSet] = setMembers(noMasq)
		}
		c.PodEgress = egress
	}
	if len(sets) > 0 {
		c.IPSets = sets
	}
	return c
}

// nodePortAddresses resolves --nodeport-addresses as kube-proxy does. nil
// means every local address (-m addrtype --dst-type LOCAL): no value, no
// CIDR of this family, a /0, or "primary" without a usable node IP.
// "primary" means the node's primary IP; CIDRs select the host's addresses
// inside them, and when none matches NodePorts stay closed (non-nil, empty).
func (b *Builder) nodePortAddresses(nodeIPs []netip.Addr) []netip.Addr {
	if len(b.Settings.NodePortAddresses) == 0 {
		return nil
	}
	var out []netip.Addr
	var cidrs []netip.Prefix
	for _, s := range b.Settings.NodePortAddresses {
		if s == NodePortAddressesPrimary {
			// kube-proxy turns "primary" into the node IP's /32 (/128),
			// skipping a loopback fallback.
			if len(nodeIPs) > 0 && !nodeIPs[0].IsLoopback() {
				out = append(out, nodeIPs[0])
			}
			continue
		}
		if p, err := netip.ParsePrefix(s); err == nil && inFamily(p.Addr(), b.Family) {
			cidrs = append(cidrs, p.Masked())
		}
	}
	if len(out) == 0 && len(cidrs) == 0 || slices.ContainsFunc(cidrs, func(p netip.Prefix) bool { return p.Bits() == 0 }) {
		return nil
	}
	if len(cidrs) > 0 && b.LocalAddrs != nil {
		local, err := b.LocalAddrs()
		if err != nil {
			klog.ErrorS(err, "Cannot list local addresses for nodePortAddresses; NodePorts stay closed until the next Node change")
		}
		for _, a := range local {
			if slices.ContainsFunc(cidrs, func(p netip.Prefix) bool { return p.Contains(a) }) && !slices.Contains(out, a) {
				out = append(out, a)
			}
		}
	}
	if out == nil {
		// Nothing matched: NodePorts stay closed (non-nil, empty), rather
		// than open on every address (nil).
		out = []netip.Addr{}
	}
	return out
}

// setMembers makes prefixes storable in a hash:net set, which cannot hold a
// /0: a /0 becomes its two halves, which match exactly the same addresses.
func setMembers(in []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range in {
		if p.Bits() != 0 {
			out = append(out, p)
			continue
		}
		lo := netip.PrefixFrom(p.Addr(), 1).Masked()
		hi := netip.AddrFrom4([4]byte{128})
		if p.Addr().Is6() {
			hi = netip.AddrFrom16([16]byte{0x80})
		}
		out = append(out, lo, netip.PrefixFrom(hi, 1))
	}
	return out
}

func (b *Builder) ipsetFamily() ipset.Family { return IPSetFamily(b.Family) }

func inFamily(a netip.Addr, family v1.IPFamily) bool { return model.FamilyOf(a) == family }

// OfFamily keeps the addresses of family.
func OfFamily(in []netip.Addr, family v1.IPFamily) []netip.Addr {
	return slices.DeleteFunc(slices.Clone(in), func(a netip.Addr) bool { return !inFamily(a, family) })
}

// PrefixesOf keeps the prefixes of family.
func PrefixesOf(in []netip.Prefix, family v1.IPFamily) []netip.Prefix {
	return slices.DeleteFunc(slices.Clone(in), func(p netip.Prefix) bool { return !inFamily(p.Addr(), family) })
}
