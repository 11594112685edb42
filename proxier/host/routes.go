package host

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
)

// Route is where the node sends packets for an address, as "ip route get"
// says it.
type Route struct {
	Dst     string `json:"dst"`
	Iface   string `json:"iface,omitempty"`
	Gateway string `json:"gateway,omitempty"`
	Src     string `json:"src,omitempty"`
	Error   string `json:"error,omitempty"`
}

func (r Route) String() string {
	if r.Error != "" {
		return fmt.Sprintf("%s: %s", r.Dst, r.Error)
	}
	s := r.Dst + " dev " + r.Iface
	if r.Gateway != "" {
		s = r.Dst + " via " + r.Gateway + " dev " + r.Iface
	}
	if r.Src != "" {
		s += " src " + r.Src
	}
	return s
}

// RouteLookup asks the node's routing table where it sends packets for dst
// (as "ip route get dst"). An error means no route (e.g. ENETUNREACH).
type RouteLookup interface {
	RouteGet(dst netip.Addr) (Route, error)
}

// NetlinkRoutes looks routes up through netlink.
type NetlinkRoutes struct{}

var _ RouteLookup = NetlinkRoutes{}

// RouteGet implements RouteLookup.
func (NetlinkRoutes) RouteGet(dst netip.Addr) (Route, error) {
	routes, err := netlink.RouteGet(dst.AsSlice())
	if err != nil {
		return Route{}, err
	}
	if len(routes) == 0 {
		return Route{}, errors.New("no route")
	}
	r := routes[0]
	out := Route{Dst: dst.String()}
	if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil {
		out.Iface = l.Attrs().Name
	}
	if r.Gw != nil {
		out.Gateway = r.Gw.String()
	}
	if r.Src != nil {
		out.Src = r.Src.String()
	}
	return out, nil
}

// Bridges lists the node's bridge interfaces (pod bridges such as cbr0), sorted.
func Bridges() ([]string, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("listing links: %w", err)
	}
	var bridges []string
	for _, l := range links {
		if l.Type() == "bridge" {
			bridges = append(bridges, l.Attrs().Name)
		}
	}
	slices.Sort(bridges)
	return bridges, nil
}
