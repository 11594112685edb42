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
	var podCIDRs []netip.Prefix
	switch b.cfg.DetectLocalMode {
	case options.LocalModeClusterCIDR:
		podCIDRs = prefixesOf(b.cfg.ClusterCIDRs, b.family)
	case options.LocalModeNodeCIDR:
		if node != nil {
			podCIDRs = prefixesOf(proxier.NodePodCIDRs(node), b.family)
		}
	case options.LocalModeBridgeInterface:
		c.LocalDetector = proxier.DetectByBridgeInterface(b.cfg.DetectLocal.BridgeInterface)
	case options.LocalModeInterfaceNamePrefix:
		c.LocalDetector = proxier.DetectByInterfaceNamePrefix(b.cfg.DetectLocal.InterfaceNamePrefix)
	}
	switch {
	case len(podCIDRs) == 1:
		// A single CIDR keeps kube-proxy's exact rule text.
		c.LocalDetector = proxier.DetectByCIDR(podCIDRs[0])
	case len(podCIDRs) > 1:
		c.LocalDetector = proxier.DetectBySet(podSet)
		sets[podSet] = podCIDRs
	}
	if b.cfg.MasqueradePodEgress && len(podCIDRs) > 0 {
		sets[podSet] = podCIDRs
		egress := &proxier.PodEgressMasquerade{PodSet: podSet}
		if noMasq := prefixesOf(b.cfg.NoMasqueradeCIDRs, b.family); len(noMasq) > 0 {
			egress.NoMasqSet = ipset.FamilyName(ipset.NoMasqSet, b.ipsetFamily())
			sets[egress.NoMasqSet] = noMasq
		}
		c.PodEgress = egress
	}
	if len(sets) > 0 {
		c.IPSets = sets
	}
	return c
}

// nodePortAddresses resolves --nodeport-addresses: nil means every local
// address; "primary" means the node's primary IP; CIDRs select the host's
// addresses inside them.
func (b *nodeConfigBuilder) nodePortAddresses(nodeIPs []netip.Addr) []netip.Addr {
	if len(b.cfg.NodePortAddresses) == 0 {
		return nil
	}
	var out []netip.Addr
	var cidrs []netip.Prefix
	for _, s := range b.cfg.NodePortAddresses {
		if s == "primary" {
			if len(nodeIPs) > 0 {
				out = append(out, nodeIPs[0])
			}
			continue
		}
		if p, err := netip.ParsePrefix(s); err == nil && inFamily(p.Addr(), b.family) {
			cidrs = append(cidrs, p)
		}
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

func inFamily(a netip.Addr, family v1.IPFamily) bool {
	return (family == v1.IPv6Protocol) == (a.Is6() && !a.Is4In6())
}

func ofFamily(in []netip.Addr, family v1.IPFamily) []netip.Addr {
	return slices.DeleteFunc(slices.Clone(in), func(a netip.Addr) bool { return !inFamily(a, family) })
}

func prefixesOf(in []netip.Prefix, family v1.IPFamily) []netip.Prefix {
	return slices.DeleteFunc(slices.Clone(in), func(p netip.Prefix) bool { return !inFamily(p.Addr(), family) })
}
