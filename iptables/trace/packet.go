package trace

import (
	"net/netip"
	"slices"
)

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
	// InIface is the interface an Incoming packet arrived on. OutIface is
	// the one routing chose, used only when Context.Route is nil (routing
	// changes after DNAT, which Context.Route follows). Each is only
	// needed if a rule the packet reaches tests -i / -o (a Local packet
	// has no input interface).
	InIface, OutIface string
	Origin            Origin
	// Mark is the packet's initial fwmark, usually 0.
	Mark uint32
}

// Context is what the tracer needs to know about the node beyond the rules.
// What it lacks makes tests undecided, never wrong: see the Err* kinds.
type Context struct {
	// LocalAddrs are the node's own addresses, for -m addrtype LOCAL and
	// for deciding between filter INPUT and FORWARD. Loopback addresses
	// (127.0.0.0/8, ::1) are always local.
	LocalAddrs []netip.Addr
	// LocalAddrsPartial says LocalAddrs may miss some of the node's
	// addresses (a saved rule file without the node's addresses): -m
	// addrtype tests of another address are then undecided. (The choice
	// between filter INPUT and FORWARD still takes it as not local.)
	LocalAddrsPartial bool
	// IfaceAddrs are the node's addresses by interface, for -m addrtype
	// --limit-iface-in/out and REDIRECT; nil when not known.
	IfaceAddrs map[string][]netip.Prefix
	// Sets holds ipset contents for -m set, by set name. Only
	// single-dimension (src or dst) set matches can be evaluated.
	Sets map[string][]netip.Prefix
	// ReadSet reads a set that is not in Sets, when a rule the packet
	// reaches first tests it; nil when members can only come from Sets. A
	// set that cannot be read makes the test undecided, with the error.
	ReadSet func(name string) ([]netip.Prefix, error)
	// RecentHits lists -m recent list names that already hold the
	// packet's address, so that --rcheck / --update on them match (session
	// affinity already established). By default they do not.
	RecentHits map[string]bool
	// Route returns the interface the node routes dst out of, false when
	// it has no route; nil when routes are not known (then
	// Packet.OutIface stands for every output interface).
	Route func(dst netip.Addr) (iface string, ok bool)
	// Bridges are the node's bridge interfaces, for -m physdev; only used
	// when BridgesKnown (else physdev tests are undecided).
	Bridges      []string
	BridgesKnown bool
}

// IsLocal reports whether addr is one of the node's addresses.
func (c *Context) IsLocal(addr netip.Addr) bool {
	return addr.IsLoopback() || slices.Contains(c.LocalAddrs, addr)
}

// localness reports whether addr is local, and whether that is known.
func (c *Context) localness(addr netip.Addr) (local, known bool) {
	if c.IsLocal(addr) {
		return true, true
	}
	return false, !c.LocalAddrsPartial
}
