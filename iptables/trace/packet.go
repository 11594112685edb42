package trace

import "net/netip"

// Origin says where a packet enters the node's netfilter hooks.
type Origin int

const (
	// Local: sent by a process on the node (nat OUTPUT first).
	Local Origin = iota
	// Incoming: arriving on an interface, from a pod or another host, to be
	// delivered locally or forwarded (nat PREROUTING first).
	Incoming
)

func (o Origin) String() string {
	if o == Incoming {
		return "incoming"
	}
	return "local"
}

// Packet is the first packet of a new connection.
type Packet struct {
	Src, Dst netip.Addr
	// Protocol is "tcp", "udp", "sctp" (or "icmp"); -p compares with it.
	Protocol string
	// SrcPort is only needed if a rule the packet reaches tests --sport.
	SrcPort int
	DstPort int
	// InIface is the interface an Incoming packet arrived on; OutIface the
	// one routing chose. Each is only needed if a rule the packet reaches
	// tests -i / -o (a Local packet has no input interface).
	InIface, OutIface string
	Origin            Origin
	// Mark is the packet's initial fwmark, usually 0.
	Mark uint32
}

// Context is what the tracer needs to know about the node beyond the rules.
type Context struct {
	// LocalAddrs are the node's own addresses, for -m addrtype LOCAL and
	// for deciding between filter INPUT and FORWARD. Loopback addresses
	// (127.0.0.0/8, ::1) are always local.
	LocalAddrs []netip.Addr
	// Sets holds ipset contents for -m set, by set name. Only
	// single-dimension (src or dst) set matches can be evaluated; a set a
	// rule names that is missing here is an error, not a non-match.
	Sets map[string][]netip.Prefix
	// RecentHits lists -m recent list names that already hold the
	// packet's address, so that --rcheck / --update on them match (session
	// affinity already established). By default they do not.
	RecentHits map[string]bool
}

// IsLocal reports whether addr is one of the node's addresses.
func (c *Context) IsLocal(addr netip.Addr) bool {
	if addr.IsLoopback() {
		return true
	}
	for _, a := range c.LocalAddrs {
		if a == addr {
			return true
		}
	}
	return false
}
