package trace

import "github.com/svcproxy/svcproxy/iptables"

// Chains is where the tracer reads the rules, one chain at a time, as the
// packet reaches them: the built-in chains of the hooks it passes and the
// chains their rules jump to. A source that reads a live node can so read
// only what the packet can reach (a whole-table save of a big node takes
// minutes, or crashes).
type Chains interface {
	// Chain returns table's chain name, or nil and no error when the table
	// has no such chain (a missing built-in chain accepts; a jump to a
	// missing chain is an error). Any other error means the chain could
	// not be read: the trace stops with it, since its answer would depend
	// on the chain.
	Chain(table iptables.Table, name string) (*iptables.Chain, error)
}

// DumpChains serves the chains of a Dump held in memory (parsed
// iptables-save text, or a Fake's state).
type DumpChains struct{ Dump *iptables.Dump }

// Chain implements Chains.
func (d DumpChains) Chain(table iptables.Table, name string) (*iptables.Chain, error) {
	return d.Dump.Chain(table, name), nil
}
