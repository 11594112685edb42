package rules

import (
	"bytes"
	"slices"

	"github.com/svcproxy/svcproxy/iptables"
)

// tableWriter collects one table's chain declarations and rules. Rules keep
// their order within a chain, but chains are written sorted by name: the
// nf_tables backend of iptables-restore is several times faster on sorted
// input, and sorted output is deterministic.
type tableWriter struct {
	name     string
	declared map[string]bool
	rules    map[string]*bytes.Buffer
	deleted  []string
	lines    int
	// discard makes the writer count rules without keeping them; partial
	// syncs use it for the chains of services that did not change.
	discard bool
}

func newTableWriter(name string) *tableWriter {
	return &tableWriter{name: name, declared: map[string]bool{}, rules: map[string]*bytes.Buffer{}}
}

func newDiscardWriter(name string) *tableWriter {
	w := newTableWriter(name)
	w.discard = true
	return w
}

// declare writes ":chain - [0:0]", which creates the chain or flushes it.
func (w *tableWriter) declare(chain string) {
	if !w.discard {
		w.declared[chain] = true
	}
}

// rule appends "-A chain args..." to the chain's block.
func (w *tableWriter) rule(chain string, args ...string) {
	w.lines++
	if w.discard {
		return
	}
	buf := w.rules[chain]
	if buf == nil {
		buf = &bytes.Buffer{}
		w.rules[chain] = buf
	}
	buf.WriteString("-A ")
	buf.WriteString(chain)
	for _, a := range args {
		buf.WriteByte(' ')
		buf.WriteString(a)
	}
	buf.WriteByte('\n')
}

// deleteChain flushes (by declaring) and then deletes a stale chain.
func (w *tableWriter) deleteChain(chain string) {
	w.declare(chain)
	w.deleted = append(w.deleted, chain)
}

// writeTo emits "*table", declarations, rules, deletions and COMMIT.
func (w *tableWriter) writeTo(out *bytes.Buffer) {
	out.WriteString("*" + w.name + "\n")
	chains := make([]string, 0, len(w.declared))
	for c := range w.declared {
		chains = append(chains, c)
	}
	slices.Sort(chains)
	for _, c := range chains {
		out.WriteString(":" + c + " - [0:0]\n")
	}
	withRules := make([]string, 0, len(w.rules))
	for c := range w.rules {
		withRules = append(withRules, c)
	}
	slices.Sort(withRules)
	for _, c := range withRules {
		out.Write(w.rules[c].Bytes())
	}
	deleted := slices.Clone(w.deleted)
	slices.Sort(deleted)
	for _, c := range deleted {
		out.WriteString("-X " + c + "\n")
	}
	out.WriteString("COMMIT\n")
}

// comment returns the "-m comment" match for text in restore syntax: quoted
// when it has spaces, which is how kube-proxy writes it.
func comment(text string) []string {
	return []string{"-m", "comment", "--comment", iptables.QuoteArg(text)}
}
