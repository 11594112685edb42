package model

import (
	"net/netip"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// UDPFlow is the part of a conntrack entry that stale-flow detection needs.
// UDP has no connection to tear down: a flow DNATed to an endpoint that is
// gone keeps going there (into a black hole) for as long as the client
// keeps sending, unless the entry is deleted.
type UDPFlow struct {
	// OrigDst is where the client sent (a service IP or node port).
	OrigDst netip.AddrPort
	// ReplySrc is who answers: the endpoint after DNAT, or OrigDst when the
	// packet was never DNATed (it arrived while the service had no endpoints).
	ReplySrc netip.AddrPort
	// Key identifies the kernel entry for deletion; opaque here.
	Key string
}

// StaleUDPFlows picks, as kube-proxy does, the UDP flows to a service
// address (cluster IP, external IP, load-balancer IP, or any address on the
// service's node port) whose answering side is not one of the service's
// serving endpoints. Services without serving endpoints are left alone:
// there is nowhere better to send their traffic.
func StaleUDPFlows(snap *Snapshot, flows []UDPFlow) []UDPFlow {
	byServiceAddr := map[netip.AddrPort]map[netip.AddrPort]bool{}
	byNodePort := map[uint16]map[netip.AddrPort]bool{}
	for name, sp := range snap.Services {
		if sp.Protocol != v1.ProtocolUDP {
			continue
		}
		serving := map[netip.AddrPort]bool{}
		for _, ep := range snap.Endpoints[name] {
			if ep.Serving {
				serving[ep.Addr] = true
			}
		}
		if len(serving) == 0 {
			continue
		}
		port := uint16(sp.Port)
		for _, ip := range append(append([]netip.Addr{sp.ClusterIP}, sp.ExternalIPs...), sp.LoadBalancerVIPs...) {
			byServiceAddr[netip.AddrPortFrom(ip, port)] = serving
		}
		if sp.NodePort != 0 {
			byNodePort[uint16(sp.NodePort)] = serving
		}
	}
	var stale []UDPFlow
	for _, f := range flows {
		if serving, ok := byServiceAddr[f.OrigDst]; ok && !serving[f.ReplySrc] {
			stale = append(stale, f)
			continue
		}
		if serving, ok := byNodePort[f.OrigDst.Port()]; ok && !serving[f.ReplySrc] {
			stale = append(stale, f)
		}
	}
	return stale
}

// ChangesUDP reports whether a changed Service has a UDP port: only those
// can leave UDP flows on endpoints that are gone, so other changes need not
// list the (possibly large) conntrack table.
func ChangesUDP(snap *Snapshot, changed map[types.NamespacedName]bool) bool {
	for key := range changed {
		for _, name := range snap.PortsOf(key) {
			if name.Protocol == v1.ProtocolUDP {
				return true
			}
		}
	}
	return false
}
