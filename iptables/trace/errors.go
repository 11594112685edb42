package trace

import (
	"errors"
	"fmt"
)

// The kinds of error Trace returns when it cannot decide a packet's fate
// from what it was given. The error names the rule ("trace:
// TABLE/CHAIN rule N (RULE): ...") and wraps one of these; test it with
// errors.Is. A rule's test that cannot be decided is only an error when no
// other test of the same rule certainly fails, since then the answer depends
// on it.
//
// Other errors have no kind: a packet without valid Src and Dst, or of mixed
// families; a rule ParseRuleArgs rejects (such as an unsupported -m module);
// a jump to a chain the table does not have; jumps nested deeper than
// MaxDepth.
var (
	// ErrNeedInIface: an Incoming packet without Packet.InIface reached a
	// rule that tests the input interface (-i). Set InIface and trace
	// again. A Local packet never needs it: it has no input interface.
	ErrNeedInIface = errors.New("the packet's input interface (Packet.InIface) is needed")

	// ErrNeedOutIface: a packet without Packet.OutIface reached a rule that
	// tests the output interface (-o). Set OutIface and trace again.
	ErrNeedOutIface = errors.New("the packet's output interface (Packet.OutIface) is needed")

	// ErrNeedSrcPort: a packet with Packet.SrcPort 0 reached a rule that
	// tests the source port (--sport). Set SrcPort and trace again.
	ErrNeedSrcPort = errors.New("the packet's source port (Packet.SrcPort) is needed")

	// ErrUnsupported: a rule the packet reached uses something ParseRuleArgs
	// accepts but the tracer cannot evaluate: a match type it does not know,
	// -m addrtype with --limit-iface-in/out or a type other than LOCAL,
	// -m set on a set of more than one dimension, a target extension it
	// does not model (such as REDIRECT), or DNAT to a range of addresses or
	// ports. Tracing again with other input will not help.
	ErrUnsupported = errors.New("not supported by the tracer")

	// ErrUnknownSet: a rule the packet reached tests an ipset (-m set
	// --match-set) that is not in Context.Sets. The tracer does not take a
	// missing set as empty; add its members to Context.Sets.
	ErrUnknownSet = errors.New("set not in the trace Context")
)

// kindError is an error of one of the kinds above whose message is the
// tracer's own sentence: the kind is for errors.Is and adds no words,
// so callers print exactly what the tracer says about the rule.
type kindError struct {
	kind error
	msg  string
}

func (e *kindError) Error() string { return e.msg }
func (e *kindError) Unwrap() error { return e.kind }

// errorOf returns an error of the given kind with the formatted message.
func errorOf(kind error, format string, a ...any) error {
	return &kindError{kind: kind, msg: fmt.Sprintf(format, a...)}
}
