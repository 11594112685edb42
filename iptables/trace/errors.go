package trace

import (
	"errors"
	"fmt"
)

// The kinds of test the tracer cannot decide from what it was given. It
// does not stop on them: it follows both ways and records an Undecided,
// whose Kind is one of these (test it with errors.Is), on every outcome
// that depends on the test. Each says what would decide it.
var (
	// ErrNeedInIface: an Incoming packet without Packet.InIface reached a
	// rule that tests the input interface (-i). A Local packet never
	// needs it: it has no input interface.
	ErrNeedInIface = errors.New("the packet's input interface (Packet.InIface) is needed")

	// ErrNeedOutIface: the output interface is not known (no
	// Context.Route, or it has no route, and no Packet.OutIface) and a
	// rule tests it (-o).
	ErrNeedOutIface = errors.New("the packet's output interface is needed (Context.Route or Packet.OutIface)")

	// ErrNeedRoutes: a test depends on the node's routes (-m rpfilter)
	// and Context.Route is nil.
	ErrNeedRoutes = errors.New("the node's routes are needed (Context.Route)")

	// ErrNeedSrcPort: a packet with Packet.SrcPort 0 reached a rule that
	// tests the source port.
	ErrNeedSrcPort = errors.New("the packet's source port (Packet.SrcPort) is needed")

	// ErrNeedLocalAddrs: Context.LocalAddrsPartial is set and a test
	// depends on whether an address not in Context.LocalAddrs is the
	// node's own (or REDIRECT needs the input interface's address).
	ErrNeedLocalAddrs = errors.New("the node's own addresses are needed (Context.LocalAddrs)")

	// ErrUnknownSet: a rule tests an ipset whose members are not known (not
	// in Context.Sets, and Context.ReadSet is nil or failed).
	ErrUnknownSet = errors.New("the set's members are needed (Context.Sets)")

	// ErrNeedBridges: a -m physdev test depends on whether the interfaces
	// are bridges, and Context.BridgesKnown is false.
	ErrNeedBridges = errors.New("the node's bridges are needed (Context.Bridges)")

	// ErrUndecidable: the result depends on something no description of
	// one packet holds: traffic rates, local sockets, MAC addresses, a
	// userspace program (NFQUEUE), set counters, the address DNAT picks
	// from a range, a bridged packet's ports.
	ErrUndecidable = errors.New("not decidable from one packet")

	// ErrUnsupported: a rule the parser (iptables.ParseRuleArgs) rejects,
	// such as one with a match module it does not know, or an address type
	// the tracer does not model.
	ErrUnsupported = errors.New("not supported by the tracer")
)

// Errors Trace returns stop the trace: a packet without valid Src and
// Dst, or of mixed families; a chain the Chains source could not read; a
// jump to a chain the table does not have; jumps nested deeper than
// MaxDepth; more than MaxBranches ways through the rules.

// undecided is a test the tracer could not decide: a sentence saying what
// is unknown, and its kind.
type undecided struct {
	kind error
	what string
}

func undecidedf(kind error, format string, a ...any) *undecided {
	return &undecided{kind: kind, what: fmt.Sprintf(format, a...)}
}
