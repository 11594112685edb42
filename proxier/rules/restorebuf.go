package rules

import (
	"bytes"
	"container/heap"
	"slices"
	"strings"

	"github.com/svcproxy/svcproxy/iptables"
)

// tableWriter collects one table's chain declarations and rules. Rules keep
// their order within a chain; the order of the chains in the output is the
// writer's (see writeTo).
type tableWriter struct {
	name     string
	declared map[string]bool
	rules    map[string][]string // chain -> its "-A ..." lines, in order
	lines    int
	// nftOrder writes the chains in the order iptables-nft restores
	// fastest with --noflush (see nftOrder); otherwise sorted by name.
	nftOrder bool
}

func newTableWriter(name string, nftOrder bool) *tableWriter {
	return &tableWriter{name: name, declared: map[string]bool{}, rules: map[string][]string{}, nftOrder: nftOrder}
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
	w.rules[chain] = append(w.rules[chain], line)
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

// jumpTarget is the chain or target a rule line jumps or goes to ("" when
// it has none).
func jumpTarget(line string) string {
	i := max(strings.LastIndex(line, " -j "), strings.LastIndex(line, " -g "))
	if i < 0 {
		return ""
	}
	t := line[i+4:]
	if j := strings.IndexAny(t, " \n"); j >= 0 {
		t = t[:j]
	}
	return t
}

// writeTo emits "*table", declarations, rules and COMMIT.
func (w *tableWriter) writeTo(out *bytes.Buffer) {
	out.WriteString("*" + w.name + "\n")
	if w.nftOrder {
		w.writeNFTOrder(out)
	} else {
		w.writeSorted(out)
	}
	out.WriteString("COMMIT\n")
}

// writeSorted writes every declaration, sorted by name, then every chain's
// rules, chains sorted by name: kube-proxy's layout, as kube-proxy writes
// it but sorted (the nf_tables backend of iptables-restore is several times
// faster on sorted input than on kube-proxy's map order).
func (w *tableWriter) writeSorted(out *bytes.Buffer) {
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
		for _, line := range w.rules[c] {
			out.WriteString(line)
		}
	}
}

// writeNFTOrder writes the chains in the order iptables-nft (1.8.x)
// restores fastest with --noflush. For every line it reads, iptables-nft
// adds the chain it names (and the chain a rule jumps to) to a list kept
// sorted by name, walking the list from its start: each line costs one
// string comparison per listed chain that sorts before its own. With every
// chain declared first, as sorted output does, that is half the table per
// line — at 10,000 Services about 7·10⁸ comparisons, more than the restore
// itself (7.3 s with --noflush against 4.3 s without, which skips that
// list). So chains come in descending order of name, each declared right
// before its rules, after the chains it jumps to (a target must exist
// before a rule names it): then a chain's name sorts before almost all
// listed chains. Chains that are not per-service (KUBE-MARK-MASQ,
// KUBE-POSTROUTING, …) go as soon as what they jump to is written, and
// dispatch buckets, whose names sort first, are declared at the start and
// their rules written as soon as their targets are (a bucket's rules are
// in descending order of target, see Index.entriesOf): the bucket rule
// that names a service chain then comes right after it.
func (w *tableWriter) writeNFTOrder(out *bytes.Buffer) {
	present := map[string]bool{}
	for c := range w.declared {
		present[c] = true
	}
	for c := range w.rules {
		present[c] = true
	}
	written := map[string]bool{}
	// Buckets: declared up front, their rules released in order.
	var buckets []string
	next := map[string]int{}            // bucket -> index of its next unwritten rule
	waiting := map[string][]string{}    // chain -> buckets whose next rule targets it
	pending := map[string]int{}         // chain -> unwritten chains it jumps to
	dependents := map[string][]string{} // chain -> chains jumping to it
	for c := range present {
		if isBucketChain(c) {
			buckets = append(buckets, c)
			continue
		}
		targets := map[string]bool{}
		for _, line := range w.rules[c] {
			if t := jumpTarget(line); t != c && present[t] && !isBucketChain(t) && !targets[t] {
				targets[t] = true
				dependents[t] = append(dependents[t], c)
			}
		}
		pending[c] = len(targets)
	}
	slices.Sort(buckets)
	slices.Reverse(buckets)
	for _, b := range buckets {
		if w.declared[b] {
			out.WriteString(":" + b + " - [0:0]\n")
		}
		written[b] = true
	}
	// release writes bucket b's rules from its next one on, up to the
	// first whose target is a chain still to be written.
	release := func(b string) {
		lines := w.rules[b]
		i := next[b]
		for ; i < len(lines); i++ {
			if t := jumpTarget(lines[i]); present[t] && !written[t] {
				waiting[t] = append(waiting[t], b)
				break
			}
			out.WriteString(lines[i])
		}
		next[b] = i
	}
	for _, b := range buckets {
		release(b)
	}
	ready := &chainHeap{}
	for c, n := range pending {
		if n == 0 {
			heap.Push(ready, c)
		}
	}
	for ready.Len() > 0 {
		c := heap.Pop(ready).(string)
		if w.declared[c] {
			out.WriteString(":" + c + " - [0:0]\n")
		}
		for _, line := range w.rules[c] {
			out.WriteString(line)
		}
		written[c] = true
		for _, d := range dependents[c] {
			if pending[d]--; pending[d] == 0 {
				heap.Push(ready, d)
			}
		}
		blocked := waiting[c]
		delete(waiting, c)
		for _, b := range blocked {
			release(b)
		}
	}
	// Whatever is left is part of a cycle, which iptables rejects anyway:
	// write it sorted, declarations first, so the error names a real line.
	var left []string
	for c := range present {
		if !written[c] {
			left = append(left, c)
		}
	}
	slices.Sort(left)
	for _, c := range left {
		if w.declared[c] {
			out.WriteString(":" + c + " - [0:0]\n")
		}
	}
	for _, c := range left {
		for _, line := range w.rules[c] {
			out.WriteString(line)
		}
	}
	for _, b := range buckets {
		for _, line := range w.rules[b][next[b]:] {
			out.WriteString(line)
		}
	}
}

// chainHeap pops chains that are not per-service first (they are few and
// many chains jump to them), then per-service chains in descending order
// of name.
type chainHeap []string

func (h chainHeap) Len() int { return len(h) }
func (h chainHeap) Less(i, j int) bool {
	si, sj := IsServiceChain(h[i]), IsServiceChain(h[j])
	if si != sj {
		return !si
	}
	return h[i] > h[j]
}
func (h chainHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *chainHeap) Push(x any)   { *h = append(*h, x.(string)) }
func (h *chainHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// comment returns the "-m comment" match for text in restore syntax: quoted
// when it has spaces, which is how kube-proxy writes it.
func comment(text string) []string {
	return []string{"-m", "comment", "--comment", iptables.QuoteArg(text)}
}
