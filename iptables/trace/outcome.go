package trace

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/svcproxy/svcproxy/iptables"
)

// The verdicts an Outcome can have.
const (
	Accept = iptables.TargetAccept
	Drop   = iptables.TargetDrop
	Reject = iptables.TargetReject
)

// Outcome is one possible fate of a packet.
type Outcome struct {
	Verdict string // Accept, Drop or Reject
	// Endpoint is where DNAT sent the packet; the zero value if it was not DNATed.
	Endpoint netip.AddrPort
	// Masquerade is true if MASQUERADE or SNAT applied.
	Masquerade bool
	// Mark is the packet's fwmark at the end of the walk.
	Mark uint32
	// Path lists the rules that matched and acted, in order (and the
	// policy, when a built-in chain's policy decided).
	Path []Step
}

// Step is one rule on an Outcome's path.
type Step struct {
	Table iptables.Table
	Chain string
	// RuleIndex is the rule's 0-based index in the chain (iptables' rule
	// number minus one), or -1 for the chain's policy.
	RuleIndex int
	Raw       string
}

func (s Step) String() string {
	return fmt.Sprintf("%s/%s[%d]: %s", s.Table, s.Chain, s.RuleIndex, s.Raw)
}

// String summarises an outcome on one line, e.g.
// "ACCEPT endpoint=198.51.100.2:8080 masquerade mark=0x0".
func (o Outcome) String() string {
	var b strings.Builder
	b.WriteString(o.Verdict)
	if o.Endpoint.IsValid() {
		b.WriteString(" endpoint=" + o.Endpoint.String())
	}
	if o.Masquerade {
		b.WriteString(" masquerade")
	}
	fmt.Fprintf(&b, " mark=%#x", o.Mark)
	return b.String()
}

// key identifies outcomes that are the same for the caller, whatever the path.
func (o Outcome) key() string {
	return o.String()
}

// dedupe keeps the first outcome of each kind, in order.
func dedupe(outcomes []Outcome) []Outcome {
	seen := map[string]bool{}
	var out []Outcome
	for _, o := range outcomes {
		if k := o.key(); !seen[k] {
			seen[k] = true
			out = append(out, o)
		}
	}
	return out
}

// Endpoints returns the distinct endpoints of accepted, DNATed outcomes as
// "ip:port" strings, sorted by address then port.
func Endpoints(outcomes []Outcome) []string {
	var eps []netip.AddrPort
	for _, o := range outcomes {
		if o.Verdict == Accept && o.Endpoint.IsValid() {
			eps = append(eps, o.Endpoint)
		}
	}
	slices.SortFunc(eps, netip.AddrPort.Compare)
	eps = slices.Compact(eps)
	out := make([]string, len(eps))
	for i, ep := range eps {
		out[i] = ep.String()
	}
	return out
}

// Verdicts returns the distinct verdicts of outcomes, sorted.
func Verdicts(outcomes []Outcome) []string {
	var vs []string
	for _, o := range outcomes {
		vs = append(vs, o.Verdict)
	}
	slices.Sort(vs)
	return slices.Compact(vs)
}
