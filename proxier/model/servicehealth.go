package model

import "k8s.io/apimachinery/pkg/types"

// HealthCheckNodePorts lists the health-check node port of every Service
// that has one (LoadBalancer with externalTrafficPolicy Local).
func HealthCheckNodePorts(snap *Snapshot) map[types.NamespacedName]uint16 {
	ports := map[types.NamespacedName]uint16{}
	for name, sp := range snap.Services {
		if sp.HealthCheckNodePort != 0 {
			ports[name.NamespacedName] = uint16(sp.HealthCheckNodePort)
		}
	}
	return ports
}

// LocalReadyEndpoints counts, per Service, the distinct IPs of ready
// endpoints on nodeName: a pod serving two ports counts once, as in
// kube-proxy.
func LocalReadyEndpoints(snap *Snapshot, nodeName string) map[types.NamespacedName]int {
	ips := map[types.NamespacedName]map[string]bool{}
	for name, eps := range snap.Endpoints {
		for _, ep := range eps {
			if !ep.Ready || nodeName == "" || ep.NodeName != nodeName {
				continue
			}
			if ips[name.NamespacedName] == nil {
				ips[name.NamespacedName] = map[string]bool{}
			}
			ips[name.NamespacedName][ep.IP()] = true
		}
	}
	counts := make(map[types.NamespacedName]int, len(ips))
	for name, set := range ips {
		counts[name] = len(set)
	}
	return counts
}
