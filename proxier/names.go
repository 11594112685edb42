package proxier

import (
	"crypto/sha256"
	"encoding/base32"
	"strings"
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

// hashName is kube-proxy's naming hash: the first 16 characters of the base32
// encoding of sha256(input). Chain names must stay under 29 characters.
func hashName(input string) string {
	sum := sha256.Sum256([]byte(input))
	return base32.StdEncoding.EncodeToString(sum[:])[:16]
}

// portProtoHash hashes "ns/name:port" + lowercase protocol, as kube-proxy does.
func portProtoHash(name ServicePortName) string {
	return hashName(name.String() + strings.ToLower(string(name.Protocol)))
}

// ClusterPolicyChain is KUBE-SVC-<hash>: dispatch to all usable endpoints.
func ClusterPolicyChain(name ServicePortName) string {
	return prefixServiceCluster + portProtoHash(name)
}

// LocalPolicyChain is KUBE-SVL-<hash>: dispatch to this node's endpoints only.
func LocalPolicyChain(name ServicePortName) string {
	return prefixServiceLocal + portProtoHash(name)
}

// FirewallChain is KUBE-FW-<hash>: loadBalancerSourceRanges filtering.
func FirewallChain(name ServicePortName) string {
	return prefixFirewall + portProtoHash(name)
}

// ExternalChain is KUBE-EXT-<hash>: the entry for NodePort, external IP and
// load-balancer traffic.
func ExternalChain(name ServicePortName) string {
	return prefixExternal + portProtoHash(name)
}

// EndpointChain is KUBE-SEP-<hash>, hashing the service port name, protocol
// and "ip:port" of the endpoint.
func EndpointChain(name ServicePortName, endpoint string) string {
	return prefixEndpoint + hashName(name.String()+strings.ToLower(string(name.Protocol))+endpoint)
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
