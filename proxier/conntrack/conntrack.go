// Package conntrack deletes stale UDP conntrack entries through netlink.
package conntrack

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"

	"github.com/svcproxy/svcproxy/proxier"
	"github.com/svcproxy/svcproxy/proxier/model"
)

// Netlink is the kernel's conntrack table for one family, in the network
// namespace of the calling thread.
type Netlink struct{ Family v1.IPFamily }

var _ proxier.ConntrackCleaner = Netlink{}

func (n Netlink) family() netlink.InetFamily {
	if n.Family == v1.IPv6Protocol {
		return unix.AF_INET6
	}
	return unix.AF_INET
}

// ListUDP returns the UDP entries of the table.
func (n Netlink) ListUDP() ([]model.UDPFlow, error) {
	entries, err := netlink.ConntrackTableList(netlink.ConntrackTable, n.family())
	if err != nil {
		return nil, fmt.Errorf("list conntrack entries: %w", err)
	}
	var flows []model.UDPFlow
	for _, e := range entries {
		if e.Forward.Protocol != unix.IPPROTO_UDP {
			continue
		}
		flows = append(flows, model.UDPFlow{
			OrigDst:  addrPort(e.Forward.DstIP, e.Forward.DstPort),
			ReplySrc: addrPort(e.Reverse.SrcIP, e.Reverse.SrcPort),
			Key:      key(e),
		})
	}
	return flows, nil
}

// Delete removes the given entries (matched by their full tuples) and
// returns how many the kernel deleted.
func (n Netlink) Delete(flows []model.UDPFlow) (int, error) {
	if len(flows) == 0 {
		return 0, nil
	}
	want := make(keySet, len(flows))
	for _, f := range flows {
		want[f.Key] = true
	}
	deleted, err := netlink.ConntrackDeleteFilters(netlink.ConntrackTable, n.family(), want)
	if err != nil {
		return int(deleted), fmt.Errorf("delete conntrack entries: %w", err)
	}
	return int(deleted), nil
}

type keySet map[string]bool

func (k keySet) MatchConntrackFlow(flow *netlink.ConntrackFlow) bool { return k[key(flow)] }

func key(f *netlink.ConntrackFlow) string {
	return fmt.Sprintf("%d %s:%d>%s:%d %s:%d>%s:%d", f.Forward.Protocol,
		f.Forward.SrcIP, f.Forward.SrcPort, f.Forward.DstIP, f.Forward.DstPort,
		f.Reverse.SrcIP, f.Reverse.SrcPort, f.Reverse.DstIP, f.Reverse.DstPort)
}

func addrPort(ip net.IP, port uint16) netip.AddrPort {
	a, _ := netip.AddrFromSlice(ip)
	return netip.AddrPortFrom(a.Unmap(), port)
}
