// Package trace walks a packet through an iptables ruleset and reports every
// way it can end. It is a pure function over data (an iptables.Dump, a
// Context and a Packet), so it serves tests and "svcproxy explain" alike.
//
// The walk follows the first packet of a new connection through the nat and
// filter tables only:
//
//	Local:    nat OUTPUT → filter OUTPUT → nat POSTROUTING
//	          → (destination local after DNAT) filter INPUT → nat INPUT
//	Incoming: nat PREROUTING → destination local after DNAT?
//	          yes: filter INPUT → nat INPUT
//	          no:  filter FORWARD → nat POSTROUTING
//
// A missing table or chain accepts. Random choices (-m statistic) are
// explored both ways, so the result is the set of possible outcomes. The
// tracer never guesses: a rule it cannot evaluate exactly (an unknown match,
// an -i test on a packet without InIface, a set not in the Context) is an
// error naming the rule, as is a jump loop deeper than MaxDepth. An error
// about a test the tracer cannot decide wraps ErrNeedInIface,
// ErrNeedOutIface, ErrNeedSrcPort, ErrUnsupported or ErrUnknownSet, so that
// a caller can tell with errors.Is what would help without reading the
// message (their documentation lists the errors that have no such kind).
package trace

import (
	"fmt"
	"net/netip"

	"github.com/svcproxy/svcproxy/iptables"
)

// MaxDepth bounds nested jumps; deeper means a loop.
const MaxDepth = 64

// hook is one (table, built-in chain) stop of the walk.
type hook struct {
	table iptables.Table
	chain string
}

// state is a packet mid-walk. Branches copy it; path is shared with
// copy-on-append (see step).
type state struct {
	pkt        Packet
	endpoint   netip.AddrPort
	masquerade bool
	path       []Step
}

// step returns st with s appended to its path, never aliasing another branch.
func (st state) step(s Step) state {
	st.path = append(st.path[:len(st.path):len(st.path)], s)
	return st
}

// result is how a chain walk ended: verdict "" means it fell off the end or
// hit RETURN, so the caller continues.
type result struct {
	st      state
	verdict string
}

type tracer struct {
	dump  *iptables.Dump
	ctx   *Context
	specs map[*iptables.Rule]*iptables.RuleSpec
}

// Trace returns the distinct outcomes possible for p under the rules in d,
// in the order they were found (a matching random branch before its
// alternative). Outcomes that differ only in their path are merged, keeping
// the first path.
func Trace(d *iptables.Dump, c Context, p Packet) ([]Outcome, error) {
	if !p.Src.IsValid() || !p.Dst.IsValid() {
		return nil, fmt.Errorf("trace: packet needs valid Src and Dst")
	}
	if p.Src.Is4() != p.Dst.Is4() {
		return nil, fmt.Errorf("trace: Src %s and Dst %s are of different families", p.Src, p.Dst)
	}
	t := &tracer{dump: d, ctx: &c, specs: map[*iptables.Rule]*iptables.RuleSpec{}}
	first := hook{iptables.TableNAT, "OUTPUT"}
	if p.Origin == Incoming {
		first = hook{iptables.TableNAT, "PREROUTING"}
	}
	var outcomes []Outcome
	results, err := t.hook(state{pkt: p}, first)
	if err != nil {
		return nil, err
	}
	for _, r := range results {
		if r.verdict != iptables.TargetAccept {
			outcomes = append(outcomes, r.outcome())
			continue
		}
		more, err := t.hooks(r.st, t.rest(r.st))
		if err != nil {
			return nil, err
		}
		outcomes = append(outcomes, more...)
	}
	return dedupe(outcomes), nil
}

// rest returns the hooks after the first nat hook, which depend on whether
// DNAT left the destination local.
func (t *tracer) rest(st state) []hook {
	local := t.ctx.IsLocal(st.pkt.Dst)
	input := []hook{{iptables.TableFilter, "INPUT"}, {iptables.TableNAT, "INPUT"}}
	switch {
	case st.pkt.Origin == Local && local:
		return append([]hook{{iptables.TableFilter, "OUTPUT"}, {iptables.TableNAT, "POSTROUTING"}}, input...)
	case st.pkt.Origin == Local:
		return []hook{{iptables.TableFilter, "OUTPUT"}, {iptables.TableNAT, "POSTROUTING"}}
	case local:
		return input
	default:
		return []hook{{iptables.TableFilter, "FORWARD"}, {iptables.TableNAT, "POSTROUTING"}}
	}
}

// hooks walks st through hooks in turn; every accepted branch goes on to
// the next hook.
func (t *tracer) hooks(st state, hooks []hook) ([]Outcome, error) {
	if len(hooks) == 0 {
		return []Outcome{result{st, iptables.TargetAccept}.outcome()}, nil
	}
	results, err := t.hook(st, hooks[0])
	if err != nil {
		return nil, err
	}
	var outcomes []Outcome
	for _, r := range results {
		if r.verdict != iptables.TargetAccept {
			outcomes = append(outcomes, r.outcome())
			continue
		}
		more, err := t.hooks(r.st, hooks[1:])
		if err != nil {
			return nil, err
		}
		outcomes = append(outcomes, more...)
	}
	return outcomes, nil
}

// hook walks one built-in chain and applies its policy to branches that
// fall off the end. Every result has a verdict.
func (t *tracer) hook(st state, h hook) ([]result, error) {
	table := t.dump.Table(h.table)
	chain := table.Chain(h.chain)
	if chain == nil {
		return []result{{st, iptables.TargetAccept}}, nil
	}
	results, err := t.chain(st, table, chain, 0, 0)
	if err != nil {
		return nil, err
	}
	for i, r := range results {
		if r.verdict == "" {
			policy := chain.Policy
			if policy != iptables.TargetDrop {
				policy = iptables.TargetAccept
			}
			if policy == iptables.TargetDrop {
				r.st = r.st.step(Step{Table: h.table, Chain: h.chain, RuleIndex: -1, Raw: ":" + h.chain + " DROP"})
			}
			results[i] = result{r.st, policy}
		}
	}
	return results, nil
}

// chain walks chain's rules from index from.
func (t *tracer) chain(st state, table *iptables.TableDump, chain *iptables.Chain, from, depth int) ([]result, error) {
	for i := from; i < len(chain.Rules); i++ {
		rule := chain.Rules[i]
		where := func(err error) error {
			return fmt.Errorf("trace: %s/%s rule %d (%s): %w", table.Name, chain.Name, i, rule.Raw, err)
		}
		spec, err := t.spec(rule)
		if err != nil {
			return nil, where(err)
		}
		canMatch, canMiss, err := t.matches(st, spec.Matches)
		if err != nil {
			return nil, where(err)
		}
		if !canMatch {
			continue
		}
		step := Step{Table: table.Name, Chain: chain.Name, RuleIndex: i, Raw: rule.Raw}
		results, err := t.target(st.step(step), table, chain, i, spec.Target, depth)
		if err != nil {
			return nil, where(err)
		}
		if canMiss { // a random match: also follow the packet that did not match
			rs, err := t.chain(st, table, chain, i+1, depth)
			if err != nil {
				return nil, err
			}
			results = append(results, rs...)
		}
		return results, nil
	}
	return []result{{st, ""}}, nil
}

// target applies rule i's target to a packet that matched it.
func (t *tracer) target(st state, table *iptables.TableDump, chain *iptables.Chain, i int, tg iptables.Target, depth int) ([]result, error) {
	next := func(st state) ([]result, error) { return t.chain(st, table, chain, i+1, depth) }
	switch tg.Name {
	case "", "LOG", "NOTRACK":
		return next(st)
	case iptables.TargetAccept, iptables.TargetDrop, iptables.TargetReject:
		return []result{{st, tg.Name}}, nil
	case iptables.TargetReturn:
		return []result{{st, ""}}, nil
	case "MARK":
		st.pkt.Mark = (st.pkt.Mark &^ tg.MarkMask) ^ tg.MarkValue
		return next(st)
	case "DNAT":
		r := tg.NAT
		if r.MinAddr != r.MaxAddr || r.MinPort != r.MaxPort {
			return nil, errorOf(ErrUnsupported, "DNAT to a range (%s) is not supported", r)
		}
		st.pkt.Dst = r.MinAddr
		if r.MinPort != 0 {
			st.pkt.DstPort = int(r.MinPort)
		}
		st.endpoint = netip.AddrPortFrom(st.pkt.Dst, uint16(st.pkt.DstPort))
		return []result{{st, iptables.TargetAccept}}, nil
	case "SNAT", "MASQUERADE":
		st.masquerade = true
		return []result{{st, iptables.TargetAccept}}, nil
	}
	if !tg.IsChain() {
		return nil, errorOf(ErrUnsupported, "target %s is not supported by the tracer", tg.Name)
	}
	sub := table.Chain(tg.Name)
	if sub == nil {
		return nil, fmt.Errorf("jump to chain %s, which does not exist", tg.Name)
	}
	if depth+1 > MaxDepth {
		return nil, fmt.Errorf("jumps nested deeper than %d: a loop through chain %s?", MaxDepth, tg.Name)
	}
	results, err := t.chain(st, table, sub, 0, depth+1)
	if err != nil || tg.Goto {
		// A RETURN from a goto'd chain returns to our caller, as it does in iptables.
		return results, err
	}
	var out []result
	for _, r := range results {
		if r.verdict != "" {
			out = append(out, r)
			continue
		}
		rs, err := next(r.st)
		if err != nil {
			return nil, err
		}
		out = append(out, rs...)
	}
	return out, nil
}

// spec returns the parsed rule, parsing each rule once per trace.
func (t *tracer) spec(r *iptables.Rule) (*iptables.RuleSpec, error) {
	if s, ok := t.specs[r]; ok {
		return s, nil
	}
	s, err := iptables.ParseRuleArgs(r.Args)
	if err != nil {
		return nil, err
	}
	t.specs[r] = s
	return s, nil
}

func (r result) outcome() Outcome {
	return Outcome{Verdict: r.verdict, Endpoint: r.st.endpoint, Masquerade: r.st.masquerade, Mark: r.st.pkt.Mark, Path: r.st.path}
}
