package iptables

import (
	"fmt"
	"strconv"
	"strings"
)

// protocolNumbers are the protocol names -p accepts besides numbers: the
// ones iptables knows itself and the common ones of /etc/protocols, which
// iptables-save prints for rules of tunnels and IPsec (Calico's IP-in-IP
// is "-p ipencap" or "-p 4").
var protocolNumbers = map[string]int{
	"all": 0, "icmp": 1, "igmp": 2, "ipencap": 4, "ipv4": 4, "tcp": 6, "udp": 17,
	"ipv6": 41, "gre": 47, "esp": 50, "ah": 51, "icmpv6": 58, "ipv6-icmp": 58,
	"ospf": 89, "ipip": 94, "pim": 103, "vrrp": 112, "l2tp": 115, "sctp": 132,
	"mh": 135, "ipv6-mh": 135, "udplite": 136, "dccp": 33,
}

// canonicalProtocols are the names a number is written as, so that "-p 6"
// and "-p tcp" compare equal; other numbers stay numbers.
var canonicalProtocols = map[int]string{0: "all", 1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp"}

// parseProtocol reads -p's value: a name of protocolNumbers (any case) or a
// number 0-255. It returns the canonical name for the protocols the rest
// of the package compares with ("tcp", "udp", "sctp", "icmp", "icmpv6",
// "all"), else the name or number as written in lower case.
func parseProtocol(v string) (string, error) {
	v = strings.ToLower(v)
	n, err := strconv.Atoi(v)
	switch {
	case err == nil && n >= 0 && n <= 255:
	case err == nil:
		return "", fmt.Errorf("protocol number %d is out of range 0-255", n)
	default:
		known, ok := protocolNumbers[v]
		if !ok {
			return "", fmt.Errorf("unsupported protocol %q", v)
		}
		n = known
	}
	if name, ok := canonicalProtocols[n]; ok {
		if v == "ipv6-icmp" {
			return v, nil // the same protocol, kept as written for ip6tables' sake
		}
		return name, nil
	}
	return v, nil
}
