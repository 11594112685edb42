package rules

import (
	"cmp"
	"slices"
	"strings"

	"github.com/svcproxy/svcproxy/proxier/model"
)

// Chain names shared with kube-proxy. Operators' runbooks and dashboards key on
// these, so they are part of svcproxy's compatibility contract.
const (
	ChainServices         = "KUBE-SERVICES"
	ChainExternalServices = "KUBE-EXTERNAL-SERVICES"
	ChainNodePorts        = "KUBE-NODEPORTS"
	ChainPostrouting      = "KUBE-POSTROUTING"
	ChainMarkMasq         = "KUBE-MARK-MASQ"
	ChainForward          = "KUBE-FORWARD"
	ChainProxyFirewall    = "KUBE-PROXY-FIREWALL"
	ChainProxyCanary      = "KUBE-PROXY-CANARY"
	// ChainKubeletFirewall is owned by kubelet; kube-proxy writes an identical
	// rule into it so that localhost NodePorts cannot be reached from outside.
	ChainKubeletFirewall = "KUBE-FIREWALL"
)

// Per-service chain prefixes.
const (
	prefixServiceCluster = "KUBE-SVC-"
	prefixServiceLocal   = "KUBE-SVL-"
	prefixFirewall       = "KUBE-FW-"
	prefixExternal       = "KUBE-EXT-"
	prefixEndpoint       = "KUBE-SEP-"
)

// ClusterPolicyChain is KUBE-SVC-<hash>: dispatch to all usable endpoints.
func ClusterPolicyChain(name model.ServicePortName) string {
	return prefixServiceCluster + name.Hash()
}

// LocalPolicyChain is KUBE-SVL-<hash>: dispatch to this node's endpoints only.
func LocalPolicyChain(name model.ServicePortName) string {
	return prefixServiceLocal + name.Hash()
}

// FirewallChain is KUBE-FW-<hash>: loadBalancerSourceRanges filtering.
func FirewallChain(name model.ServicePortName) string {
	return prefixFirewall + name.Hash()
}

// ExternalChain is KUBE-EXT-<hash>: the entry for NodePort, external IP and
// load-balancer traffic.
func ExternalChain(name model.ServicePortName) string {
	return prefixExternal + name.Hash()
}

// EndpointChain is KUBE-SEP-<hash>, hashing the service port name, protocol
// and "ip:port" of the endpoint.
func EndpointChain(name model.ServicePortName, endpoint string) string {
	return prefixEndpoint + name.EndpointHash(endpoint)
}

// IsServiceChain reports whether chain is a per-service chain (or a
// dispatch bucket) that svcproxy or kube-proxy creates and may therefore
// delete when it goes stale.
func IsServiceChain(chain string) bool {
	return deletionLevel(chain) >= 0
}

// deletionLevels orders our per-service chains for deletion: a chain may be
// deleted only when nothing refers to it, and a chain refers only to chains
// of later levels (bucket → FW → EXT → SVC/SVL → SEP). Top-level chains,
// which only built-in chains refer to, come before all of them.
var deletionLevels = []struct {
	prefix string
	level  int
}{{prefixBucket, 0}, {prefixBucketBefore, 0}, {prefixFirewall, 1}, {prefixExternal, 2}, {prefixServiceCluster, 3}, {prefixServiceLocal, 3}, {prefixEndpoint, 4}}

// deletionLevel is chain's level, or -1 for a chain that is not
// per-service.
func deletionLevel(chain string) int {
	for _, l := range deletionLevels {
		if strings.HasPrefix(chain, l.prefix) {
			return l.level
		}
	}
	return -1
}

// DeletionOrder sorts per-service chains into the order they can be
// deleted in: every chain that may refer to another comes before it. A
// restore that flushes (declares) and deletes a prefix of this order, with
// nothing else referring to those chains, succeeds. Chains that are not
// per-service are left out.
func DeletionOrder(chains []string) []string {
	out := slices.DeleteFunc(slices.Clone(chains), func(c string) bool { return deletionLevel(c) < 0 })
	slices.SortFunc(out, func(a, b string) int {
		if c := cmp.Compare(deletionLevel(a), deletionLevel(b)); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	return out
}

// serviceChains are a service port's KUBE-SVC/SVL/EXT/FW names, built from
// the hash cached in the ServicePort.
type serviceChains struct{ cluster, local, external, firewall string }

func chainsOf(sp *model.ServicePort) serviceChains {
	h := sp.Hash()
	return serviceChains{prefixServiceCluster + h, prefixServiceLocal + h, prefixExternal + h, prefixFirewall + h}
}

// endpointChain is the KUBE-SEP name of ep, a endpoint of service port name.
func endpointChain(name model.ServicePortName, ep *model.Endpoint) string {
	return prefixEndpoint + ep.Hash(name)
}
