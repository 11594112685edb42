package rules

import (
	"bytes"
	"slices"
	"strings"

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
	lines    int
}

func newTableWriter(name string) *tableWriter {
	return &tableWriter{name: name, declared: map[string]bool{}, rules: map[string]*bytes.Buffer{}}
}

// declare writes ":chain - [0:0]", which creates the chain or flushes it.
func (w *tableWriter) declare(chain string) {
	w.declared[chain] = true
}

// rule appends "-A chain args..." to the chain's block.
func (w *tableWriter) rule(chain string, args ...string) {
	w.raw(chain, ruleLine(chain, args))
}

// raw appends a rule already in restore form ("-A chain args\n").
func (w *tableWriter) raw(chain, line string) {
	w.lines++
	buf := w.rules[chain]
	if buf == nil {
		buf = &bytes.Buffer{}
		w.rules[chain] = buf
	}
	buf.WriteString(line)
}

// ruleLine is "-A chain args...\n".
func ruleLine(chain string, args []string) string {
	var b strings.Builder
	b.WriteString("-A ")
	b.WriteString(chain)
	for _, a := range args {
		b.WriteByte(' ')
		b.WriteString(a)
	}
	b.WriteByte('\n')
	return b.String()
}

// writeTo emits "*table", declarations, rules and COMMIT.
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
	out.WriteString("COMMIT\n")
}

// comment returns the "-m comment" match for text in restore syntax: quoted
// when it has spaces, which is how kube-proxy writes it.
func comment(text string) []string {
	return []string{"-m", "comment", "--comment", iptables.QuoteArg(text)}
}
