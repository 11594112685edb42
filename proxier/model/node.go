package model

import (
	"net/netip"

	v1 "k8s.io/api/core/v1"
)

// NodeAddresses returns the Node's InternalIPs (then ExternalIPs), in order.
func NodeAddresses(node *v1.Node) []netip.Addr {
	var internal, external []netip.Addr
	for _, a := range node.Status.Addresses {
		ip, err := netip.ParseAddr(a.Address)
		if err != nil {
			continue
		}
		switch a.Type {
		case v1.NodeInternalIP:
			internal = append(internal, ip)
		case v1.NodeExternalIP:
			external = append(external, ip)
		}
	}
	return append(internal, external...)
}

// NodePodCIDRs returns spec.podCIDRs (or spec.podCIDR) parsed.
func NodePodCIDRs(node *v1.Node) []netip.Prefix {
	raw := node.Spec.PodCIDRs
	if len(raw) == 0 && node.Spec.PodCIDR != "" {
		raw = []string{node.Spec.PodCIDR}
	}
	var out []netip.Prefix
	for _, s := range raw {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
		}
	}
	return out
}

// TopologyOf returns the node's name and zone label (node may be nil).
func TopologyOf(name string, node *v1.Node) Topology {
	t := Topology{NodeName: name}
	if node != nil {
		t.Zone = node.Labels[v1.LabelTopologyZone]
	}
	return t
}
