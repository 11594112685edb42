package model

import (
	"slices"

	v1 "k8s.io/api/core/v1"
)

// Categorized is the split of a service port's endpoints that the rules need.
type Categorized struct {
	// Cluster feeds KUBE-SVC (traffic policy Cluster).
	Cluster []*Endpoint
	// Local feeds KUBE-SVL (traffic policy Local): endpoints on this node.
	Local []*Endpoint
	// Reachable is every endpoint that gets a KUBE-SEP chain on this node.
	Reachable []*Endpoint
	// HasAny is true when the service has a usable endpoint on any node.
	HasAny bool
}

// Topology is the node-specific input to endpoint selection.
type Topology struct {
	NodeName string
	Zone     string // the node's topology.kubernetes.io/zone label
}

// CategorizeEndpoints picks the endpoints for each traffic policy the way
// kube-proxy v1.36 does: ready endpoints filtered by topology hints for
// Cluster policy, falling back to serving-and-terminating endpoints when none
// are ready; this node's ready (else serving-terminating) endpoints for Local.
func CategorizeEndpoints(endpoints []*Endpoint, sp *ServicePort, topo Topology) Categorized {
	var c Categorized
	if len(endpoints) == 0 {
		return c
	}
	isLocal := func(ep *Endpoint) bool { return topo.NodeName != "" && ep.NodeName == topo.NodeName }
	servingTerminating := func(ep *Endpoint) bool { return ep.Serving && ep.Terminating }

	var topologyMode string
	if sp.UsesClusterEndpoints() {
		topologyMode = topologyModeFromHints(endpoints, topo)
		c.Cluster = filter(endpoints, func(ep *Endpoint) bool {
			return ep.Ready && availableForTopology(ep, topologyMode, topo)
		})
		if len(c.Cluster) == 0 {
			c.Cluster = filter(endpoints, servingTerminating)
		}
		c.HasAny = len(c.Cluster) > 0
	}
	if !sp.UsesLocalEndpoints() {
		c.Reachable = c.Cluster
		return c
	}

	var localReady, localServingTerminating bool
	for _, ep := range endpoints {
		if ep.Ready {
			c.HasAny = true
			localReady = localReady || isLocal(ep)
		} else if servingTerminating(ep) {
			c.HasAny = true
			localServingTerminating = localServingTerminating || isLocal(ep)
		}
	}
	usedServingTerminating := false
	switch {
	case localReady:
		c.Local = filter(endpoints, func(ep *Endpoint) bool { return isLocal(ep) && ep.Ready })
	case localServingTerminating:
		usedServingTerminating = true
		c.Local = filter(endpoints, func(ep *Endpoint) bool { return isLocal(ep) && servingTerminating(ep) })
	}

	if !sp.UsesClusterEndpoints() {
		c.Reachable = c.Local
		return c
	}
	if topologyMode == "" && !usedServingTerminating {
		// Local endpoints are then a subset of the cluster ones.
		c.Reachable = c.Cluster
		return c
	}
	c.Reachable = union(c.Cluster, c.Local)
	return c
}

func topologyModeFromHints(endpoints []*Endpoint, topo Topology) string {
	hasReady, forNode, allNodeHints, forZone, allZoneHints := false, false, true, false, true
	for _, ep := range endpoints {
		if !ep.Ready {
			continue
		}
		hasReady = true
		if len(ep.NodeHints) == 0 {
			allNodeHints = false
		} else if slices.Contains(ep.NodeHints, topo.NodeName) {
			forNode = true
		}
		if len(ep.ZoneHints) == 0 {
			allZoneHints = false
		} else if slices.Contains(ep.ZoneHints, topo.Zone) {
			forZone = true
		}
	}
	switch {
	case !hasReady:
		return ""
	case allNodeHints && forNode:
		return v1.ServiceTrafficDistributionPreferSameNode
	case allZoneHints && forZone:
		return v1.ServiceTrafficDistributionPreferSameZone
	}
	return ""
}

func availableForTopology(ep *Endpoint, mode string, topo Topology) bool {
	switch mode {
	case "":
		return true
	case v1.ServiceTrafficDistributionPreferSameNode:
		return slices.Contains(ep.NodeHints, topo.NodeName)
	case v1.ServiceTrafficDistributionPreferSameZone:
		return slices.Contains(ep.ZoneHints, topo.Zone)
	}
	return false
}

func filter(endpoints []*Endpoint, keep func(*Endpoint) bool) []*Endpoint {
	var out []*Endpoint
	for _, ep := range endpoints {
		if keep(ep) {
			out = append(out, ep)
		}
	}
	return out
}

// union merges two sorted endpoint lists, dropping duplicates, keeping order.
func union(a, b []*Endpoint) []*Endpoint {
	seen := make(map[string]bool, len(a)+len(b))
	var out []*Endpoint
	for _, ep := range slices.Concat(a, b) {
		if !seen[ep.String()] {
			seen[ep.String()] = true
			out = append(out, ep)
		}
	}
	SortEndpoints(out)
	return out
}
