// Package rulestest holds fixtures for tests of rendered rules.
package rulestest

import (
	"net/netip"

	v1 "k8s.io/api/core/v1"

	"github.com/svcproxy/svcproxy/proxier/model"
	"github.com/svcproxy/svcproxy/proxier/rules"
)

// PodSet is the pod-CIDR ipset name the daemon uses for IPv4.
const PodSet = "SVCPROXY-POD-CIDRS"

// NodeConfig is the node most tests render for: node1 of the lab
// (192.0.2.11, zone-a), pod network 198.51.100.0/24, kube-proxy's defaults.
func NodeConfig() *rules.NodeConfig {
	return &rules.NodeConfig{
		Family:             v1.IPv4Protocol,
		Topology:           model.Topology{NodeName: "node1", Zone: "zone-a"},
		NodeIPs:            []netip.Addr{netip.MustParseAddr("192.0.2.11")},
		MasqueradeBit:      14,
		LocalDetector:      rules.DetectByCIDR(netip.MustParsePrefix("198.51.100.0/24")),
		RandomFully:        true,
		LocalhostNodePorts: true,
	}
}
