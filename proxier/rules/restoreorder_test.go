package rules_test

import (
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/svcproxy/svcproxy/proxier/model"
	"github.com/svcproxy/svcproxy/proxier/rules"
	"github.com/svcproxy/svcproxy/proxier/rules/rulestest"
)

// restoreTable is one table of restore input: its declarations and, chain
// by chain, its rules in order.
type restoreTable struct {
	declared []string
	rules    map[string][]string
}

func parseRestore(t *testing.T, data []byte) map[string]*restoreTable {
	t.Helper()
	out := map[string]*restoreTable{}
	var cur *restoreTable
	for _, line := range strings.Split(string(data), "\n") {
		switch {
		case strings.HasPrefix(line, "*"):
			cur = &restoreTable{rules: map[string][]string{}}
			out[line[1:]] = cur
		case line == "COMMIT" || line == "":
		case strings.HasPrefix(line, ":"):
			cur.declared = append(cur.declared, strings.Fields(line[1:])[0])
		case strings.HasPrefix(line, "-A "):
			chain := strings.Fields(line)[1]
			cur.rules[chain] = append(cur.rules[chain], line)
		default:
			t.Fatalf("unexpected restore line %q", line)
		}
	}
	return out
}

// chainTarget is the chain a rule line jumps or goes to, "" when its target
// is an extension (DNAT, MARK, REJECT, ...).
func chainTarget(line string) string {
	f := strings.Fields(line)
	for i := len(f) - 2; i >= 0; i-- {
		if f[i] == "-j" || f[i] == "-g" {
			if strings.HasPrefix(f[i+1], "KUBE-") || strings.HasPrefix(f[i+1], "SVCPROXY-") {
				return f[i+1]
			}
			return ""
		}
	}
	return ""
}

// nftListComparisons models what iptables-nft 1.8.x does with --noflush
// for every line it reads: it inserts the chain the line names, and the
// chain a rule jumps to, into a list kept sorted by name, walking it from
// the start (nft-cache.c, cache_chain_list_insert). It returns the number
// of names walked past, the cost that made sorted input slow.
func nftListComparisons(data []byte) (walked, lines int) {
	var list []string
	insert := func(name string) {
		i := sort.SearchStrings(list, name)
		walked += i
		if i == len(list) || list[i] != name {
			list = slices.Insert(list, i, name)
		}
	}
	for _, line := range strings.Split(string(data), "\n") {
		switch {
		case strings.HasPrefix(line, "*"):
			list = nil
		case strings.HasPrefix(line, ":"):
			lines++
			insert(strings.Fields(line[1:])[0])
		case strings.HasPrefix(line, "-A "):
			lines++
			insert(strings.Fields(line)[1])
			if target := chainTarget(line); target != "" {
				insert(target)
			}
		}
	}
	return walked, lines
}

// The compact layout's restore input is written in the order iptables-nft
// restores fastest with --noflush (tableWriter.writeNFTOrder). It must hold
// the same declarations and, chain by chain, the same rules in the same
// order as sorted output; declare every chain before a line names it; and
// cut the walks of iptables-nft's sorted chain list (at 10,000 Services the
// restore took 7.3 s with them, 4.5 s in this order).
//
// Two shapes: a node of a big cluster, whose endpoints are all on other
// nodes (the compact layout DNATs them inline: one chain per Service), and
// a node holding half of all endpoints (a KUBE-SEP chain each: those names
// sort before every KUBE-SVC chain, so each service chain's lines still
// walk past the KUBE-SEP chains written before; the gain is smaller).
func TestRestoreOrderForIPTablesNFT(t *testing.T) {
	snap := manySnapshot(t, 3000, 10)
	for _, tc := range []struct {
		node string
		// the walks in this order must be under sorted output's divided by
		// this
		factor int
	}{{"node9", 10}, {"node1", 1}} {
		t.Run("endpoints-local-to-"+tc.node, func(t *testing.T) {
			cfg := rulestest.NodeConfig()
			cfg.Topology.NodeName = tc.node
			checkRestoreOrder(t, snap, cfg, tc.factor)
		})
	}
}

func checkRestoreOrder(t *testing.T, snap *model.Snapshot, cfg *rules.NodeConfig, factor int) {
	nft := rules.Render(snap, cfg, rules.RenderOptions{Full: true})
	restore := rules.SetNFTOrder(false)
	sorted := rules.Render(snap, cfg, rules.RenderOptions{Full: true})
	restore()

	got, want := parseRestore(t, nft.Data), parseRestore(t, sorted.Data)
	if len(got) != len(want) {
		t.Fatalf("tables: got %d, sorted output has %d", len(got), len(want))
	}
	buckets := 0
	for table, w := range want {
		g := got[table]
		if g == nil {
			t.Fatalf("table %s missing", table)
		}
		if a, b := slices.Sorted(slices.Values(g.declared)), slices.Sorted(slices.Values(w.declared)); !slices.Equal(a, b) {
			t.Errorf("%s: declarations differ from sorted output's (%d against %d)", table, len(a), len(b))
		}
		if len(g.rules) != len(w.rules) {
			t.Errorf("%s: %d chains with rules, sorted output has %d", table, len(g.rules), len(w.rules))
		}
		for chain, lines := range w.rules {
			if strings.HasPrefix(chain, "KUBE-DISPATCH-") {
				buckets++
			}
			if !slices.Equal(g.rules[chain], lines) {
				t.Errorf("%s: chain %s's rules differ from sorted output's (or their order does)", table, chain)
			}
		}
	}
	if buckets == 0 {
		t.Fatal("no dispatch bucket at 3,000 Services: the test does not see the bucket order")
	}

	// Every chain the text declares is declared before a line names it.
	for table := range got {
		declared := map[string]bool{}
		for _, c := range got[table].declared {
			declared[c] = true
		}
		seen := map[string]bool{}
		for _, line := range strings.Split(string(nft.Data), "\n") {
			if strings.HasPrefix(line, ":") {
				seen[strings.Fields(line[1:])[0]] = true
			}
			if !strings.HasPrefix(line, "-A ") {
				continue
			}
			for _, c := range []string{strings.Fields(line)[1], chainTarget(line)} {
				if declared[c] && !seen[c] {
					t.Fatalf("%q names %s before its declaration", line, c)
				}
			}
		}
	}

	nftWalked, lines := nftListComparisons(nft.Data)
	sortedWalked, _ := nftListComparisons(sorted.Data)
	t.Logf("iptables-nft chain list: %d lines; names walked: %d in this order (%.0f per line), %d sorted (%.0f per line)",
		lines, nftWalked, float64(nftWalked)/float64(lines), sortedWalked, float64(sortedWalked)/float64(lines))
	if nftWalked*factor >= sortedWalked {
		t.Errorf("names walked in iptables-nft's chain list: %d, want under 1/%d of sorted output's %d", nftWalked, factor, sortedWalked)
	}
}
