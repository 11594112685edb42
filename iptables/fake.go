package iptables

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
)

// Fake is an in-memory Interface for tests. It holds a Dump and applies
// restore input to it with iptables-restore's semantics (see Dump.Apply),
// atomically, reporting failures as *RestoreError like the real thing.
// Methods are safe for concurrent use.
type Fake struct {
	mu          sync.Mutex
	family      Family
	dump        *Dump
	restores    int
	saves       int
	lastRestore []byte
	inputs      [][]byte
	failNext    error

	// BeforeRestore, when set, runs at the start of every Restore, with
	// its context; an error fails that Restore without applying anything.
	// Tests use it to make a restore slow (waiting on a fake clock) or to
	// watch cancellation.
	BeforeRestore func(ctx context.Context) error

	// RandomFully is what HasRandomFully reports; true by default.
	RandomFully bool
	// BackendName is what Backend reports; "nft" by default.
	BackendName Backend
}

var _ Interface = &Fake{}

// NewFake returns a Fake for family whose filter, nat and mangle tables
// hold only their built-in chains with policy ACCEPT.
func NewFake(family Family) *Fake {
	d := &Dump{}
	for _, t := range []Table{TableFilter, TableNAT, TableMangle} {
		d.Tables = append(d.Tables, newTableDump(t))
	}
	return &Fake{family: family, dump: d, RandomFully: true, BackendName: BackendNFT}
}

// Restore implements Interface. With opts.Test nothing changes.
func (f *Fake) Restore(ctx context.Context, data []byte, opts RestoreOptions) error {
	if hook := f.BeforeRestore; hook != nil {
		if err := hook(ctx); err != nil {
			f.mu.Lock()
			f.restores++
			f.lastRestore = slices.Clone(data)
			f.mu.Unlock()
			return &RestoreError{Err: err}
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.restores++
	f.lastRestore = slices.Clone(data)
	f.inputs = append(f.inputs, f.lastRestore)
	if err := f.failNext; err != nil {
		f.failNext = nil
		return err
	}
	r, err := ParseRestore(data)
	if err == nil {
		next := f.dump.Clone()
		if err = next.Apply(r, opts.NoFlush); err == nil && !opts.Test {
			f.dump = next
		}
	}
	if err == nil {
		return nil
	}
	rerr := &RestoreError{Err: err, Stderr: err.Error()}
	if le, ok := err.(*LineError); ok {
		rerr.Line = le.Line
		rerr.Lines = ExtractLines(data, le.Line, 3)
	}
	return rerr
}

// Save implements Interface, returning the table in canonical form
// (TableDump.String). A table the fake does not have is an error, as with
// iptables-save.
func (f *Fake) Save(_ context.Context, table Table) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.saves++
	t := f.dump.Table(table)
	if t == nil {
		return nil, fmt.Errorf("fake iptables-save: table %q does not exist", table)
	}
	return []byte(t.String()), nil
}

// EnsureChain implements Interface.
func (f *Fake) EnsureChain(_ context.Context, table Table, chain string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, err := f.table(table)
	if err != nil {
		return err
	}
	if t.Chain(chain) != nil {
		return nil
	}
	if err := validChainName(chain); err != nil {
		return fmt.Errorf("fake iptables -t %s -N: %w", table, err)
	}
	t.addChain(&Chain{Name: chain, Policy: "-"})
	return nil
}

// EnsureRule implements Interface. The rule must parse with ParseRuleArgs
// and its jump target must exist, as with Restore.
func (f *Fake) EnsureRule(_ context.Context, position Position, table Table, chain string, args ...string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, c, err := f.chain(table, chain)
	if err != nil {
		return false, err
	}
	if slices.ContainsFunc(c.Rules, func(r *Rule) bool { return slices.Equal(r.Args, args) }) {
		return true, nil
	}
	if err := t.checkRule(args); err != nil {
		return false, fmt.Errorf("fake iptables -t %s %s %s: %w", table, position, chain, err)
	}
	r := &Rule{Args: slices.Clone(args)}
	r.Raw = r.String(chain)
	switch position {
	case Prepend:
		c.Rules = slices.Insert(c.Rules, 0, r)
	case Append:
		c.Rules = append(c.Rules, r)
	default:
		return false, fmt.Errorf("fake iptables: unknown rule position %q", position)
	}
	return false, nil
}

// HasRule implements Interface.
func (f *Fake) HasRule(_ context.Context, table Table, chain string, args ...string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, c, err := f.chain(table, chain)
	if err != nil {
		return false, nil
	}
	return slices.ContainsFunc(c.Rules, func(r *Rule) bool { return slices.Equal(r.Args, args) }), nil
}

// DeleteRule implements Interface.
func (f *Fake) DeleteRule(_ context.Context, table Table, chain string, args ...string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.dump.Chain(table, chain)
	if c == nil {
		return nil
	}
	if i := slices.IndexFunc(c.Rules, func(r *Rule) bool { return slices.Equal(r.Args, args) }); i >= 0 {
		c.Rules = slices.Delete(c.Rules, i, i+1)
	}
	return nil
}

// ChainExists implements Interface.
func (f *Fake) ChainExists(_ context.Context, table Table, chain string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.dump.Chain(table, chain) != nil, nil
}

// FlushChain implements Interface.
func (f *Fake) FlushChain(_ context.Context, table Table, chain string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c := f.dump.Chain(table, chain); c != nil {
		c.Rules = nil
	}
	return nil
}

// DeleteChain implements Interface, with iptables -X's rules: built-in,
// non-empty and referenced chains cannot be deleted.
func (f *Fake) DeleteChain(_ context.Context, table Table, chain string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := f.dump.Table(table)
	if t.Chain(chain) == nil {
		return nil
	}
	if err := t.apply(Op{Kind: OpDeleteChain, Chain: chain}, true); err != nil {
		return fmt.Errorf("fake iptables -t %s -X %s: %w", table, chain, err)
	}
	return nil
}

// HasRandomFully implements Interface.
func (f *Fake) HasRandomFully() bool { return f.RandomFully }

// Backend implements Interface.
func (f *Fake) Backend() Backend { return f.BackendName }

// IsIPv6 implements Interface.
func (f *Fake) IsIPv6() bool { return f.family == IPv6 }

// ListChains implements Interface.
func (f *Fake) ListChains(_ context.Context, table Table) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := f.dump.Table(table)
	if t == nil {
		return nil, nil
	}
	names := make([]string, 0, len(t.Chains))
	for _, c := range t.Chains {
		names = append(names, c.Name)
	}
	return names, nil
}

// SaveChain implements Interface, in iptables -S form.
func (f *Fake) SaveChain(_ context.Context, table Table, chain string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := f.dump.Table(table)
	var c *Chain
	if t != nil {
		c = t.Chain(chain)
	}
	if c == nil {
		return nil, fmt.Errorf("fake iptables -t %s -S %s: %w", table, chain, ErrNoChain)
	}
	var b strings.Builder
	if IsBuiltinChain(table, chain) {
		fmt.Fprintf(&b, "-P %s %s\n", chain, c.Policy)
	} else {
		fmt.Fprintf(&b, "-N %s\n", chain)
	}
	for _, r := range c.Rules {
		b.WriteString(r.String(chain))
		b.WriteByte('\n')
	}
	return []byte(b.String()), nil
}

// Saves returns how many times the whole-table Save has been called: the
// daemon's paths must never call it (a whole-table save fails on big
// nodes).
func (f *Fake) Saves() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.saves
}

// FailNextRestore makes the next Restore return err without applying
// anything (it still counts, and is still recorded as the last input).
func (f *Fake) FailNextRestore(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failNext = err
}

// Restores returns how many times Restore has been called.
func (f *Fake) Restores() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.restores
}

// RestoreInputs returns the input of every Restore call so far, oldest
// first.
func (f *Fake) RestoreInputs() [][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.inputs)
}

// LastRestore returns the input of the most recent Restore call, or nil.
func (f *Fake) LastRestore() []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.lastRestore)
}

// Dump returns a deep copy of the fake's current ruleset, e.g. for the
// tracer or for comparing with Dump().String().
func (f *Fake) Dump() *Dump {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.dump.Clone()
}

// FlushTable simulates someone else (a firewall reload, an admin running
// "iptables -t table -F; iptables -t table -X") wiping a table: every chain
// is flushed and every user-defined chain deleted; policies stay.
func (f *Fake) FlushTable(table Table) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if t := f.dump.Table(table); t != nil {
		t.removeChains(func(c *Chain) bool { return !IsBuiltinChain(table, c.Name) })
		for _, c := range t.Chains {
			c.Rules = nil
		}
	}
}

// table returns a table that must exist.
func (f *Fake) table(table Table) (*TableDump, error) {
	t := f.dump.Table(table)
	if t == nil {
		return nil, fmt.Errorf("fake iptables: table %q does not exist", table)
	}
	return t, nil
}

// chain returns a chain that must exist, with its table.
func (f *Fake) chain(table Table, chain string) (*TableDump, *Chain, error) {
	t, err := f.table(table)
	if err != nil {
		return nil, nil, err
	}
	c := t.Chain(chain)
	if c == nil {
		return nil, nil, fmt.Errorf("fake iptables: chain %s does not exist in table %s", chain, table)
	}
	return t, c, nil
}
