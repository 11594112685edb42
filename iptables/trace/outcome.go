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
	// Uncertain lists the tests on the way that the tracer could not
	// decide, each with the assumption this outcome rests on; empty when
	// the outcome is certain (random choices are not uncertain: every one
	// of them happens).
	Uncertain []Undecided
	// Note says how the packet was diverted when that is more than a DNAT:
	// "REDIRECT to a local port", "TPROXY to a local socket",
	// "NFQUEUE: a userspace program decides".
	Note string
}

// Undecided is a test the tracer could not decide, and the assumption an
// outcome made about it.
type Undecided struct {
	// Step is the rule with the test.
	Step Step
	// What says what was unknown, e.g. "the members of set cali40s are
	// unknown".
	What string
	// Kind is one of the Err* kinds: what would decide the test.
	Kind error
	// Matched is the assumption: the test held (the rule matched).
	Matched bool
}

// String describes the undecided test and the assumption, e.g.
// "filter/cali-FORWARD[2] (the members of set cali40s are unknown): assumed it matched".
func (u Undecided) String() string {
	assumed := "assumed it did not match"
	if u.Matched {
		assumed = "assumed it matched"
	}
	return fmt.Sprintf("%s/%s[%d] (%s): %s", u.Step.Table, u.Step.Chain, u.Step.RuleIndex, u.What, assumed)
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
	if len(o.Uncertain) > 0 {
		b.WriteString(" uncertain")
	}
	return b.String()
}

// key identifies outcomes that are the same for the caller, whatever the
// path and whatever they are uncertain about.
func (o Outcome) key() string {
	return fmt.Sprintf("%s %s %v %#x %s", o.Verdict, o.Endpoint, o.Masquerade, o.Mark, o.Note)
}

// dedupe keeps one outcome of each kind (see key), in the order of their
// first appearance. Outcomes of one kind reached under different
// assumptions are merged where, between them, they answer a test both ways:
// the fate does not depend on that test. Of what remains, the variant
// resting on the fewest undecided tests is kept, with its path.
func dedupe(outcomes []Outcome) []Outcome {
	var order []string
	variants := map[string][]Outcome{}
	for _, o := range outcomes {
		k := o.key()
		if _, seen := variants[k]; !seen {
			order = append(order, k)
		}
		variants[k] = append(variants[k], o)
	}
	out := make([]Outcome, 0, len(order))
	for _, k := range order {
		vs := mergeVariants(variants[k])
		best := vs[0]
		for _, v := range vs[1:] {
			if len(v.Uncertain) < len(best.Uncertain) {
				best = v
			}
		}
		out = append(out, best)
	}
	return out
}

// mergeVariants merges, until nothing changes, any two variants whose
// assumptions differ only in the answer to one test.
func mergeVariants(vs []Outcome) []Outcome {
	for merged := true; merged; {
		merged = false
		for i := 0; i < len(vs) && !merged; i++ {
			for j := i + 1; j < len(vs) && !merged; j++ {
				if u, ok := withoutComplement(vs[i].Uncertain, vs[j].Uncertain); ok {
					vs[i].Uncertain = u
					vs = slices.Delete(vs, j, j+1)
					merged = true
				}
			}
		}
	}
	return vs
}

// withoutComplement returns a without the one test that a and b answer
// differently, when that is their only difference (or a itself when they
// do not differ).
func withoutComplement(a, b []Undecided) ([]Undecided, bool) {
	if len(a) != len(b) {
		return nil, false
	}
	diff := -1
	for i := range a {
		x, y := a[i], b[i]
		if x == y {
			continue
		}
		if diff >= 0 || x.Step != y.Step || x.What != y.What || x.Matched == y.Matched {
			return nil, false
		}
		diff = i
	}
	if diff < 0 {
		return a, true
	}
	return slices.Delete(slices.Clone(a), diff, diff+1), true
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
