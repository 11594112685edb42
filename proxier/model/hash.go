package model

import (
	"crypto/sha256"
	"encoding/base32"
	"strings"
)

// hashName is kube-proxy's naming hash: the first 16 characters of the base32
// encoding of sha256(input). Chain names built from it stay under the
// 29-character limit of iptables chain names.
func hashName(input string) string {
	sum := sha256.Sum256([]byte(input))
	return base32.StdEncoding.EncodeToString(sum[:])[:16]
}

// Hash is kube-proxy's hash of "ns/name:port" + lowercase protocol: the
// suffix of the port's KUBE-SVC/SVL/EXT/FW chain names.
func (n ServicePortName) Hash() string {
	return hashName(n.String() + strings.ToLower(string(n.Protocol)))
}

// EndpointHash is kube-proxy's hash of the port name, protocol and
// "ip:port" of one endpoint: the suffix of its KUBE-SEP chain name (and of
// the -m recent list that session affinity keeps for it).
func (n ServicePortName) EndpointHash(endpoint string) string {
	return hashName(n.String() + strings.ToLower(string(n.Protocol)) + endpoint)
}
