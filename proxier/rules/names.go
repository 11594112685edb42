package rules

import (
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

// IsServiceChain reports whether chain is a per-service chain that svcproxy
// (or kube-proxy) creates and may therefore delete when it goes stale.
func IsServiceChain(chain string) bool {
	for _, p := range []string{prefixServiceCluster, prefixServiceLocal, prefixEndpoint, prefixFirewall, prefixExternal} {
		if strings.HasPrefix(chain, p) {
			return true
		}
	}
	return false
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
