package rules

import "net/netip"

// LocalDetector yields the match arguments that tell pod-originated traffic
// from everything else. Off-cluster sources to a cluster IP are masqueraded,
// and pod traffic to an external address is short-circuited to all endpoints.
type LocalDetector interface {
	// IfLocal matches traffic from local pods; nil when detection is off.
	IfLocal() []string
	// IfNotLocal matches everything else; nil when detection is off.
	IfNotLocal() []string
}

type detector struct{ ifLocal, ifNotLocal []string }

func (d detector) IfLocal() []string    { return d.ifLocal }
func (d detector) IfNotLocal() []string { return d.ifNotLocal }

// NoLocalDetector disables local-traffic detection (no --cluster-cidr).
func NoLocalDetector() LocalDetector { return detector{} }

// DetectByCIDR matches a single source CIDR, exactly as kube-proxy's
// ClusterCIDR and NodeCIDR modes do.
func DetectByCIDR(cidr netip.Prefix) LocalDetector {
	c := cidr.Masked().String()
	return detector{ifLocal: []string{"-s", c}, ifNotLocal: []string{"!", "-s", c}}
}

// DetectBySet matches the source against an ipset (hash:net). One rule then
// serves any number of pod CIDRs, and the rule text is the same on every node.
func DetectBySet(setName string) LocalDetector {
	return detector{
		ifLocal:    []string{"-m", "set", "--match-set", setName, "src"},
		ifNotLocal: []string{"-m", "set", "!", "--match-set", setName, "src"},
	}
}

// DetectByBridgeInterface matches traffic entering from the pod bridge.
func DetectByBridgeInterface(iface string) LocalDetector {
	return detector{ifLocal: []string{"-i", iface}, ifNotLocal: []string{"!", "-i", iface}}
}

// DetectByInterfaceNamePrefix matches traffic entering from any interface
// whose name starts with prefix (e.g. "veth").
func DetectByInterfaceNamePrefix(prefix string) LocalDetector {
	return detector{ifLocal: []string{"-i", prefix + "+"}, ifNotLocal: []string{"!", "-i", prefix + "+"}}
}
