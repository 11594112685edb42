package iptables

import (
	"bytes"
	"slices"
	"strings"
)

// Dump is a whole ruleset as iptables-save shows it: tables in order, each
// with its chains and their rules. It is what the Fake holds, what
// ParseDump returns and what the tracer walks.
type Dump struct {
	Tables []*TableDump
}

// TableDump is one table of a Dump. Change Chains only through this
// package (addChain, removeChains), which keeps the name index in step.
type TableDump struct {
	Name   Table
	Chains []*Chain

	// index finds a chain by name without a scan (tables of 100,000
	// chains); nil until first needed, and dropped when unsure.
	index map[string]*Chain
}

// Chain is one chain of a table. Policy is the built-in chain's policy
// ("ACCEPT", "DROP") or "-" for a user-defined chain.
type Chain struct {
	Name   string
	Policy string
	Rules  []*Rule
}

// Rule is one rule of a chain.
type Rule struct {
	// Raw is the line that created the rule, as written. A rule created by
	// "-I" is recorded in its "-A CHAIN ..." form, as iptables-save would
	// show it.
	Raw string
	// Args are the rule's arguments after "-A CHAIN", unquoted.
	Args []string
	// Line is the 1-based line number of Raw in the input it came from,
	// or 0 when the rule was not parsed from text (e.g. Fake.EnsureRule).
	Line int
}

// builtinChains lists each known table's built-in chains in the order
// iptables-save prints them.
var builtinChains = map[Table][]string{
	TableFilter:   {"INPUT", "FORWARD", "OUTPUT"},
	TableNAT:      {"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"},
	TableMangle:   {"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"},
	TableRaw:      {"PREROUTING", "OUTPUT"},
	TableSecurity: {"INPUT", "FORWARD", "OUTPUT"},
}

// IsBuiltinChain reports whether chain is one of table's built-in chains.
func IsBuiltinChain(table Table, chain string) bool {
	return slices.Contains(builtinChains[table], chain)
}

// newTableDump returns table with only its built-in chains, policy ACCEPT.
func newTableDump(table Table) *TableDump {
	t := &TableDump{Name: table}
	for _, name := range builtinChains[table] {
		t.addChain(&Chain{Name: name, Policy: "ACCEPT"})
	}
	return t
}

// Table returns the named table, or nil if the dump does not have it.
func (d *Dump) Table(name Table) *TableDump {
	if d == nil {
		return nil
	}
	for _, t := range d.Tables {
		if t.Name == name {
			return t
		}
	}
	return nil
}

// Chain returns the named chain, or nil if the table does not have it.
func (t *TableDump) Chain(name string) *Chain {
	if t == nil {
		return nil
	}
	if t.index == nil || len(t.index) != len(t.Chains) {
		t.index = make(map[string]*Chain, len(t.Chains))
		for _, c := range t.Chains {
			t.index[c.Name] = c
		}
	}
	return t.index[name]
}

// addChain appends a chain.
func (t *TableDump) addChain(c *Chain) {
	t.Chains = append(t.Chains, c)
	if t.index != nil {
		t.index[c.Name] = c
	}
}

// removeChains deletes the chains drop selects.
func (t *TableDump) removeChains(drop func(*Chain) bool) {
	t.Chains = slices.DeleteFunc(t.Chains, func(c *Chain) bool {
		if drop(c) {
			if t.index != nil {
				delete(t.index, c.Name)
			}
			return true
		}
		return false
	})
}

// Chain is shorthand for d.Table(table).Chain(chain); nil if either is missing.
func (d *Dump) Chain(table Table, chain string) *Chain {
	return d.Table(table).Chain(chain)
}

// Clone returns a deep copy of d.
func (d *Dump) Clone() *Dump {
	out := &Dump{}
	for _, t := range d.Tables {
		out.Tables = append(out.Tables, t.Clone())
	}
	return out
}

// Clone returns a deep copy of t.
func (t *TableDump) Clone() *TableDump {
	out := &TableDump{Name: t.Name}
	for _, c := range t.Chains {
		nc := &Chain{Name: c.Name, Policy: c.Policy, Rules: make([]*Rule, len(c.Rules))}
		for i, r := range c.Rules {
			nc.Rules[i] = &Rule{Raw: r.Raw, Args: slices.Clone(r.Args), Line: r.Line}
		}
		out.Chains = append(out.Chains, nc)
	}
	return out
}

// String returns the rule in canonical "-A CHAIN args" form for the chain
// it belongs to.
func (r *Rule) String(chain string) string {
	if len(r.Args) == 0 {
		return "-A " + chain
	}
	return "-A " + chain + " " + JoinArgs(r.Args)
}

// String returns the dump as canonical iptables-save text: tables in the
// dump's order; in each table, the built-in chains first in kernel order,
// then the user-defined chains sorted by name; then every chain's rules in
// the same chain order. Counters are always [0:0]. The output is
// deterministic and is valid iptables-restore input.
func (d *Dump) String() string {
	var b strings.Builder
	for _, t := range d.Tables {
		b.WriteString(t.String())
	}
	return b.String()
}

// String returns one table in the canonical form described on Dump.String.
func (t *TableDump) String() string {
	var b strings.Builder
	b.WriteString("*" + string(t.Name) + "\n")
	chains := t.sortedChains()
	for _, c := range chains {
		b.WriteString(":" + c.Name + " " + c.Policy + " [0:0]\n")
	}
	for _, c := range chains {
		for _, r := range c.Rules {
			b.WriteString(r.String(c.Name) + "\n")
		}
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

// sortedChains returns built-in chains in kernel order, then user chains by name.
func (t *TableDump) sortedChains() []*Chain {
	var builtin, user []*Chain
	for _, name := range builtinChains[t.Name] {
		if c := t.Chain(name); c != nil {
			builtin = append(builtin, c)
		}
	}
	for _, c := range t.Chains {
		if !IsBuiltinChain(t.Name, c.Name) {
			user = append(user, c)
		}
	}
	slices.SortFunc(user, func(a, b *Chain) int { return strings.Compare(a.Name, b.Name) })
	return append(builtin, user...)
}

// ChainNames lists the chains declared in iptables-save output (its
// ":NAME POLICY [counters]" lines) without parsing any rule.
func ChainNames(save []byte) []string {
	var names []string
	for _, line := range bytes.Split(save, []byte("\n")) {
		if len(line) > 1 && line[0] == ':' {
			if end := bytes.IndexByte(line, ' '); end > 1 {
				names = append(names, string(line[1:end]))
			}
		}
	}
	return names
}
