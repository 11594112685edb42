package app

import (
	"net"
	"net/netip"
	"slices"

	v1 "k8s.io/api/core/v1"

	"github.com/svcproxy/svcproxy/cmd/svcproxy/options"
	"github.com/svcproxy/svcproxy/ipset"
	"github.com/svcproxy/svcproxy/proxier"
)

// nodeConfigBuilder turns the daemon configuration plus this node's Node
// object into what the renderer needs. It is pure apart from localAddrs,
// which lists the host's interface addresses (for --nodeport-addresses).
type nodeConfigBuilder struct {
	cfg         options.Config
	family      v1.IPFamily
	nodeName    string
	randomFully bool
	localAddrs  func() []netip.Addr
}

// BuildNodeConfig derives what the daemon renders for one IP family from its
// configuration and this node's Node object (nil until seen): detect-local
// rules, pod egress masquerade and the ipsets the rules reference (see
// docs/ipset.md). CIDRs in --nodeport-addresses are matched against the
// interface addresses of the calling thread's network namespace.
func BuildNodeConfig(cfg options.Config, nodeName string, node *v1.Node, family v1.IPFamily, randomFully bool) *proxier.NodeConfig {
	b := &nodeConfigBuilder{cfg: cfg, family: family, nodeName: nodeName, randomFully: randomFully, localAddrs: interfaceAddrs}
	return b.build(node)
}

// build maps the configuration onto a NodeConfig. Local traffic detection:
// ClusterCIDR with one CIDR of the family gives kube-proxy's exact
// "-s CIDR" match and with several the pod-CIDR ipset; NodeCIDR the node's
// pod CIDR; BridgeInterface and InterfaceNamePrefix "-i" matches. Pod egress
// masquerade (--masquerade-pod-egress) needs the cluster CIDRs, always in
// the pod-CIDR set, plus the no-masquerade set when --no-masquerade-cidrs
// has CIDRs of the family.
func (b *nodeConfigBuilder) build(node *v1.Node) *proxier.NodeConfig {
	c := &proxier.NodeConfig{
		Family:              b.family,
		Topology:            proxier.TopologyOf(b.nodeName, node),
		MasqueradeBit:       int(b.cfg.MasqueradeBit),
		MasqueradeAll:       b.cfg.MasqueradeAll,
		RandomFully:         b.randomFully,
		LocalhostNodePorts:  b.cfg.LocalhostNodePorts,
		ConntrackTCPLiberal: b.cfg.Conntrack.TCPBeLiberal,
		LocalDetector:       proxier.NoLocalDetector(),
	}
	if node != nil {
		c.NodeIPs = ofFamily(proxier.NodeAddresses(node), b.family)
	}
	if ip, err := netip.ParseAddr(b.cfg.BindAddress); err == nil && !ip.IsUnspecified() && inFamily(ip, b.family) {
		c.NodeIPs = append([]netip.Addr{ip}, slices.DeleteFunc(c.NodeIPs, func(a netip.Addr) bool { return a == ip })...)
	}
	c.NodePortAddresses = b.nodePortAddresses(c.NodeIPs)

	sets := map[string][]netip.Prefix{}
	podSet := ipset.FamilyName(ipset.PodCIDRsSet, b.ipsetFamily())
	clusterCIDRs := prefixesOf(b.cfg.ClusterCIDRs, b.family)
	switch b.cfg.DetectLocalMode {
	case options.LocalModeClusterCIDR, "": // "" is kube-proxy's default, ClusterCIDR
		switch {
		case len(clusterCIDRs) == 1:
			// A single CIDR keeps kube-proxy's exact rule text.
			c.LocalDetector = proxier.DetectByCIDR(clusterCIDRs[0])
		case len(clusterCIDRs) > 1:
			c.LocalDetector = proxier.DetectBySet(podSet)
			sets[podSet] = setMembers(clusterCIDRs)
		}
	case options.LocalModeNodeCIDR:
		// As kube-proxy: the node's pod CIDR of this family. The API allows
		// at most one per family, so this is never a set (and never collides
		// with the cluster-wide pod set pod egress uses).
		if node != nil {
			if cidrs := prefixesOf(proxier.NodePodCIDRs(node), b.family); len(cidrs) > 0 {
				c.LocalDetector = proxier.DetectByCIDR(cidrs[0])
			}
		}
	case options.LocalModeBridgeInterface:
		c.LocalDetector = proxier.DetectByBridgeInterface(b.cfg.DetectLocal.BridgeInterface)
	case options.LocalModeInterfaceNamePrefix:
		c.LocalDetector = proxier.DetectByInterfaceNamePrefix(b.cfg.DetectLocal.InterfaceNamePrefix)
	}
	// Pod egress is defined by the cluster's pod network (all of it, in
	// every detect-local mode): traffic from it to anything outside it and
	// outside --no-masquerade-cidrs leaves through the node's address.
	if b.cfg.MasqueradePodEgress && len(clusterCIDRs) > 0 {
		sets[podSet] = setMembers(clusterCIDRs)
		egress := &proxier.PodEgressMasquerade{PodSet: podSet}
		if noMasq := prefixesOf(b.cfg.NoMasqueradeCIDRs, b.family); len(noMasq) > 0 {
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
func (b *nodeConfigBuilder) nodePortAddresses(nodeIPs []netip.Addr) []netip.Addr {
	if len(b.cfg.NodePortAddresses) == 0 {
		return nil
	}
	var out []netip.Addr
	var cidrs []netip.Prefix
	for _, s := range b.cfg.NodePortAddresses {
		if s == options.NodePortAddressesPrimary {
			// kube-proxy turns "primary" into the node IP's /32 (/128),
			// skipping a loopback fallback.
			if len(nodeIPs) > 0 && !nodeIPs[0].IsLoopback() {
				out = append(out, nodeIPs[0])
			}
			continue
		}
		if p, err := netip.ParsePrefix(s); err == nil && inFamily(p.Addr(), b.family) {
			cidrs = append(cidrs, p.Masked())
		}
	}
	if len(out) == 0 && len(cidrs) == 0 || slices.ContainsFunc(cidrs, func(p netip.Prefix) bool { return p.Bits() == 0 }) {
		return nil
	}
	if len(cidrs) > 0 && b.localAddrs != nil {
		for _, a := range b.localAddrs() {
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

func (b *nodeConfigBuilder) ipsetFamily() ipset.Family {
	if b.family == v1.IPv6Protocol {
		return ipset.IPv6
	}
	return ipset.IPv4
}

func interfaceAddrs() []netip.Addr {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(ipn.IP); ok {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out
}

func inFamily(a netip.Addr, family v1.IPFamily) bool { return proxier.FamilyOf(a) == family }

func ofFamily(in []netip.Addr, family v1.IPFamily) []netip.Addr {
	return slices.DeleteFunc(slices.Clone(in), func(a netip.Addr) bool { return !inFamily(a, family) })
}

func prefixesOf(in []netip.Prefix, family v1.IPFamily) []netip.Prefix {
	return slices.DeleteFunc(slices.Clone(in), func(p netip.Prefix) bool { return !inFamily(p.Addr(), family) })
}
