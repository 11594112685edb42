// Package host is svcproxy's window onto the node itself, apart from
// iptables and ipsets: its interface addresses, its sysctls, its routes and
// bridges, and whether its kernel does IPv6. Each is a small function or
// interface with the real implementation here (netlink, /proc/sys), so that
// the code asking — node configuration, family planning, conntrack set-up,
// explain — is tested with fakes.
//
// Everything here acts in the network namespace of the calling thread.
package host

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
)

// InterfaceAddrs lists the addresses of every interface (IPv4-mapped IPv6
// addresses unmapped).
func InterfaceAddrs() ([]netip.Addr, error) {
	addrs, err := IfaceAddrsOfNode()
	if err != nil {
		return nil, err
	}
	return AddrsOf(addrs), nil
}

// KernelIPv6 reports, as kube-proxy checks it, why this network namespace
// cannot do IPv6 (nil if it can): no IPv6 interfaces at all, or IPv6
// disabled (net.ipv6.conf.all.disable_ipv6=1).
func KernelIPv6() error {
	if _, err := os.Stat("/proc/net/if_inet6"); err != nil {
		return fmt.Errorf("no kernel support for IPv6: %w", err)
	}
	if v, err := (ProcSys{}).Sysctl("net.ipv6.conf.all.disable_ipv6"); err == nil && strings.TrimSpace(v) == "1" {
		return errors.New("IPv6 is disabled in the kernel (net.ipv6.conf.all.disable_ipv6=1)")
	}
	return nil
}
