// Package trace walks a packet through an iptables ruleset and reports every
// way it can end. It is a pure function over data (a Chains source, a
// Context and a Packet), so it serves tests and "svcproxy explain" alike.
//
// The walk follows the first packet of a new connection through the raw,
// mangle, nat and filter tables, hook by hook as the kernel does:
//
//	Local:    raw, mangle, nat, filter OUTPUT → mangle, nat POSTROUTING
//	          → (destination local after DNAT: looped back) raw, mangle
//	          PREROUTING → mangle, filter INPUT
//	Incoming: raw, mangle, nat PREROUTING → destination local after DNAT?
//	          yes: mangle, filter, nat INPUT
//	          no:  mangle, filter FORWARD → mangle, nat POSTROUTING
//
// An untracked packet (NOTRACK, CT --notrack) skips nat. A missing table or
// chain accepts. Chains are read from the source only when the packet
// reaches them.
//
// Random choices (-m statistic) are explored both ways, so the result is
// the set of possible outcomes. The tracer never guesses: a test it cannot
// decide (an -i test on a packet without InIface, a set whose members are
// unknown, a rate limit, a rule the parser does not understand) is also
// followed both ways, and every outcome past it carries an Undecided naming
// the rule, what was unknown (its Kind, one of the Err* errors, says what
// would decide it) and which way that outcome assumed. Trace returns an
// error only when it cannot go on (see errors.go).
package trace

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/svcproxy/svcproxy/iptables"
)

// MaxDepth bounds nested jumps; deeper means a loop.
const MaxDepth = 64

// MaxBranches bounds the ways through the rules a trace follows: each
// random or undecided test doubles the branch that meets it, so rules full
// of undecidable tests could otherwise take forever.
const MaxBranches = 20000

// hook is one (table, built-in chain) stop of the walk.
type hook struct {
	table iptables.Table
	chain string
}

var (
	rawPrerouting     = hook{iptables.TableRaw, "PREROUTING"}
	rawOutput         = hook{iptables.TableRaw, "OUTPUT"}
	manglePrerouting  = hook{iptables.TableMangle, "PREROUTING"}
	mangleInput       = hook{iptables.TableMangle, "INPUT"}
	mangleForward     = hook{iptables.TableMangle, "FORWARD"}
	mangleOutput      = hook{iptables.TableMangle, "OUTPUT"}
	manglePostrouting = hook{iptables.TableMangle, "POSTROUTING"}
	natPrerouting     = hook{iptables.TableNAT, "PREROUTING"}
	natInput          = hook{iptables.TableNAT, "INPUT"}
	natOutput         = hook{iptables.TableNAT, "OUTPUT"}
	natPostrouting    = hook{iptables.TableNAT, "POSTROUTING"}
	filterInput       = hook{iptables.TableFilter, "INPUT"}
	filterForward     = hook{iptables.TableFilter, "FORWARD"}
	filterOutput      = hook{iptables.TableFilter, "OUTPUT"}
)

// state is a packet mid-walk. Branches copy it; path and uncertain are
// shared with copy-on-append (see step and assume).
type state struct {
	pkt Packet
	// hook is the built-in chain being walked: it decides which
	// interfaces a rule can see.
	hook string
	// origDst is the destination before DNAT (conntrack's original tuple).
	origDst     netip.Addr
	origDstPort int
	endpoint    netip.AddrPort
	masquerade  bool
	ctmark      uint32
	untracked   bool
	// local: TPROXY handed the packet to a local socket, so routing
	// delivers it locally whatever its destination.
	local     bool
	note      string
	path      []Step
	uncertain []Undecided
}

// step returns st with s appended to its path, never aliasing another branch.
func (st state) step(s Step) state {
	st.path = append(st.path[:len(st.path):len(st.path)], s)
	return st
}

// assume returns st resting on the assumption that the undecided test at s
// held (matched) or not.
func (st state) assume(u *undecided, s Step, matched bool) state {
	st.uncertain = append(st.uncertain[:len(st.uncertain):len(st.uncertain)],
		Undecided{Step: s, What: u.what, Kind: u.kind, Matched: matched})
	return st
}

// assumeHere is assume for the rule st's path ends with (the one acting).
func (st state) assumeHere(u *undecided) state {
	return st.assume(u, st.path[len(st.path)-1], true)
}

// result is how a chain walk ended: verdict "" means it fell off the end or
// hit RETURN, so the caller continues.
type result struct {
	st      state
	verdict string
}

type chainKey struct {
	table iptables.Table
	name  string
}

type setMembers struct {
	members []netip.Prefix
	err     error
}

type tracer struct {
	rules    Chains
	ctx      *Context
	specs    map[*iptables.Rule]*iptables.RuleSpec
	bad      map[*iptables.Rule]error
	chains   map[chainKey]*iptables.Chain
	sets     map[string]setMembers
	branches int
}

// Trace returns the distinct outcomes possible for p under the rules in d;
// see TraceChains.
func Trace(d *iptables.Dump, c Context, p Packet) ([]Outcome, error) {
	return TraceChains(DumpChains{d}, c, p)
}

// TraceChains returns the distinct outcomes possible for p under the rules
// rules serves, in the order they were found (a matching random or
// undecided branch before its alternative). Outcomes that differ only in
// their path are merged, keeping the path with the fewest undecided tests.
func TraceChains(rules Chains, c Context, p Packet) ([]Outcome, error) {
	if !p.Src.IsValid() || !p.Dst.IsValid() {
		return nil, fmt.Errorf("trace: packet needs valid Src and Dst")
	}
	if p.Src.Is4() != p.Dst.Is4() {
		return nil, fmt.Errorf("trace: Src %s and Dst %s are of different families", p.Src, p.Dst)
	}
	t := &tracer{rules: rules, ctx: &c, specs: map[*iptables.Rule]*iptables.RuleSpec{},
		bad: map[*iptables.Rule]error{}, chains: map[chainKey]*iptables.Chain{}, sets: map[string]setMembers{}}
	first := []hook{rawOutput, mangleOutput, natOutput}
	if p.Origin == Incoming {
		first = []hook{rawPrerouting, manglePrerouting, natPrerouting}
	}
	outcomes, err := t.hooks(state{pkt: p, origDst: p.Dst, origDstPort: p.DstPort}, first, true)
	if err != nil {
		return nil, err
	}
	return dedupe(outcomes), nil
}

// hooks walks st through hooks in turn; every accepted branch goes on to
// the next hook. With routing set, the hooks after the routing decision
// (see afterRouting) follow the last one.
func (t *tracer) hooks(st state, hooks []hook, routing bool) ([]Outcome, error) {
	if len(hooks) == 0 {
		if !routing {
			return []Outcome{outcome(st, Accept)}, nil
		}
		var outcomes []Outcome
		for _, r := range t.afterRouting(st) {
			more, err := t.hooks(r.st, r.hooks, false)
			if err != nil {
				return nil, err
			}
			outcomes = append(outcomes, more...)
		}
		return outcomes, nil
	}
	results, err := t.hook(st, hooks[0])
	if err != nil {
		return nil, err
	}
	var outcomes []Outcome
	for _, r := range results {
		if r.verdict != Accept {
			outcomes = append(outcomes, outcome(r.st, r.verdict))
			continue
		}
		more, err := t.hooks(r.st, hooks[1:], routing)
		if err != nil {
			return nil, err
		}
		outcomes = append(outcomes, more...)
	}
	return outcomes, nil
}

// route is one way on after the routing decision.
type route struct {
	st    state
	hooks []hook
}

// afterRouting returns the hooks after the routing decision, which depend
// on whether the destination is local after DNAT. An address not known to
// be local is taken as not local even when Context.LocalAddrsPartial (a
// packet for a service is forwarded; the caller says the addresses were
// unknown): branching there would double every trace.
func (t *tracer) afterRouting(st state) []route {
	return []route{{st, routedHooks(st.pkt.Origin, st.local || t.ctx.IsLocal(st.pkt.Dst))}}
}

// routedHooks lists the hooks after routing. A local packet to a local
// address is looped back: its connection was confirmed in POSTROUTING, so
// nat is not consulted again.
func routedHooks(origin Origin, local bool) []hook {
	switch {
	case origin == Local && local:
		return []hook{filterOutput, manglePostrouting, natPostrouting, rawPrerouting, manglePrerouting, mangleInput, filterInput}
	case origin == Local:
		return []hook{filterOutput, manglePostrouting, natPostrouting}
	case local:
		return []hook{mangleInput, filterInput, natInput}
	default:
		return []hook{mangleForward, filterForward, manglePostrouting, natPostrouting}
	}
}

// hook walks one built-in chain and applies its policy to branches that
// fall off the end. Every result has a verdict.
func (t *tracer) hook(st state, h hook) ([]result, error) {
	if h.table == iptables.TableNAT && st.untracked {
		return []result{{st, Accept}}, nil // nat works on connections; an untracked packet has none
	}
	chain, err := t.chainOf(h.table, h.chain)
	if err != nil {
		return nil, err
	}
	if chain == nil {
		return []result{{st, Accept}}, nil
	}
	st.hook = h.chain
	results, err := t.chain(st, h.table, chain, 0, 0)
	if err != nil {
		return nil, err
	}
	for i, r := range results {
		if r.verdict == "" {
			policy := Accept
			if chain.Policy == Drop {
				policy = Drop
				r.st = r.st.step(Step{Table: h.table, Chain: h.chain, RuleIndex: -1, Raw: ":" + h.chain + " DROP"})
			}
			results[i] = result{r.st, policy}
		}
	}
	return results, nil
}

// chainOf reads a chain from the source, once per trace.
func (t *tracer) chainOf(table iptables.Table, name string) (*iptables.Chain, error) {
	k := chainKey{table, name}
	if c, ok := t.chains[k]; ok {
		return c, nil
	}
	c, err := t.rules.Chain(table, name)
	if err != nil {
		return nil, fmt.Errorf("trace: reading chain %s/%s: %w", table, name, err)
	}
	t.chains[k] = c
	return c, nil
}

// chain walks chain's rules from index from.
func (t *tracer) chain(st state, table iptables.Table, chain *iptables.Chain, from, depth int) ([]result, error) {
	for i := from; i < len(chain.Rules); i++ {
		rule := chain.Rules[i]
		where := func(err error) error {
			return fmt.Errorf("trace: %s/%s rule %d (%s): %w", table, chain.Name, i, rule.Raw, err)
		}
		here := Step{Table: table, Chain: chain.Name, RuleIndex: i, Raw: rule.Raw}
		spec, canMatch, canMiss, u := t.evaluate(st, table, rule)
		if !canMatch {
			if u != nil {
				st = st.assume(u, here, false)
			}
			continue
		}
		matched, missed := st, st
		if u != nil {
			matched, missed = st.assume(u, here, true), st.assume(u, here, false)
		}
		if canMiss {
			if t.branches++; t.branches > MaxBranches {
				return nil, where(fmt.Errorf("more than %d ways through the rules (each random or undecided test doubles them)", MaxBranches))
			}
		}
		results, err := t.target(matched.step(here), table, chain, i, spec.Target, depth)
		if err != nil {
			return nil, where(err)
		}
		if canMiss { // a random or undecided match: also follow the packet that did not match
			rs, err := t.chain(missed, table, chain, i+1, depth)
			if err != nil {
				return nil, err
			}
			results = append(results, rs...)
		}
		return results, nil
	}
	return []result{{st, ""}}, nil
}

// evaluate decides whether rule can match st and whether it can fail to
// (both for a random or undecided test, which u then describes). A rule
// the parser rejects is undecided: it is followed both ways when its
// target is a verdict or a chain, else assumed not to match.
func (t *tracer) evaluate(st state, table iptables.Table, rule *iptables.Rule) (spec *iptables.RuleSpec, canMatch, canMiss bool, u *undecided) {
	spec, err := t.spec(rule)
	if err == nil {
		canMatch, canMiss, u = t.matches(st, spec.Matches)
		return spec, canMatch, canMiss, u
	}
	target, followable := targetOf(rule.Args)
	if followable && target.IsChain() {
		// An unknown target extension looks like a chain; only a chain
		// the table has can be followed.
		c, err := t.chainOf(table, target.Name)
		followable = err == nil && c != nil
	}
	if !followable {
		return nil, false, true, undecidedf(ErrUnsupported, "the tracer does not understand this rule (%v), nor its target %s, and assumed it did not match", err, target.Name)
	}
	return &iptables.RuleSpec{Target: target}, true, true, undecidedf(ErrUnsupported, "the tracer does not understand this rule: %v", err)
}

// targetOf finds the target of a rule the parser rejected; followable when
// it is a verdict or a chain, which take no options (iptables-save writes
// a target's options after it).
func targetOf(args []string) (iptables.Target, bool) {
	for i := len(args) - 2; i >= 0; i-- {
		if args[i] == "-j" || args[i] == "--jump" || args[i] == "-g" || args[i] == "--goto" {
			tg := iptables.Target{Name: args[i+1], Goto: args[i] == "-g" || args[i] == "--goto"}
			verdict := slices.Contains([]string{Accept, Drop, iptables.TargetReturn}, tg.Name)
			// REJECT's --reject-with changes only the ICMP error sent.
			return tg, tg.Name == Reject || i+2 == len(args) && (verdict || tg.IsChain())
		}
	}
	return iptables.Target{}, true // no target: the rule only counts packets
}

// spec returns the parsed rule, parsing each rule once per trace.
func (t *tracer) spec(r *iptables.Rule) (*iptables.RuleSpec, error) {
	if s, ok := t.specs[r]; ok {
		return s, nil
	}
	if err, ok := t.bad[r]; ok {
		return nil, err
	}
	s, err := iptables.ParseRuleArgs(r.Args)
	if err != nil {
		t.bad[r] = err
		return nil, err
	}
	t.specs[r] = s
	return s, nil
}

// set returns the members of a set, reading it at most once per trace.
func (t *tracer) set(name string) ([]netip.Prefix, error) {
	if members, ok := t.ctx.Sets[name]; ok {
		return members, nil
	}
	if got, ok := t.sets[name]; ok {
		return got.members, got.err
	}
	var got setMembers
	if t.ctx.ReadSet == nil {
		got.err = errors.New("its members are unknown")
	} else if got.members, got.err = t.ctx.ReadSet(name); got.err != nil {
		got.err = fmt.Errorf("reading it failed: %w", got.err)
	}
	t.sets[name] = got
	return got.members, got.err
}

func outcome(st state, verdict string) Outcome {
	return Outcome{Verdict: verdict, Endpoint: st.endpoint, Masquerade: st.masquerade, Mark: st.pkt.Mark,
		Path: st.path, Uncertain: st.uncertain, Note: st.note}
}
