package proxier

import (
	"bytes"
	"context"
	"fmt"
	"slices"

	"github.com/svcproxy/svcproxy/iptables"
	"github.com/svcproxy/svcproxy/proxier/rules"
)

// StaleBatch is how many stale chains one sync deletes at most: each sync
// first writes the rules the cluster needs, then deletes one batch, and
// asks for another sync while chains remain, so a change never waits
// behind a long deletion. On iptables-nft, deleting 5,000 unreferenced
// chains from a 110,000-chain table took 0.19 s here, so the 100,000
// KUBE-SEP chains kube-proxy's layout leaves go in ten syncs.
const StaleBatch = 10000

// staleTables are where our per-service chains live (dispatch buckets exist
// in filter too).
var staleTables = []iptables.Table{iptables.TableNAT, iptables.TableFilter}

// staleChains are chains of ours, per table, that no rule uses any more and
// that are still to be deleted, kept in rules.DeletionOrder.
type staleChains map[iptables.Table][]string

// add records chains that a render stopped using.
func (s staleChains) add(byTable map[string][]string) {
	for table, chains := range byTable {
		t := iptables.Table(table)
		s[t] = rules.DeletionOrder(append(s[t], chains...))
	}
}

// replace sets a table's stale chains from a listing of the kernel's
// chains and the ones the rules use.
func (s staleChains) replace(table iptables.Table, existing []string, active map[string]bool) {
	var stale []string
	for _, c := range existing {
		if rules.IsServiceChain(c) && !active[c] {
			stale = append(stale, c)
		}
	}
	s[table] = rules.DeletionOrder(stale)
}

// count is how many chains are waiting.
func (s staleChains) count() int {
	n := 0
	for _, c := range s {
		n += len(c)
	}
	return n
}

// take removes and returns up to n chains (nat first), leaving out any the
// rules use again (a Service deleted and re-created before its chains were).
func (s staleChains) take(n int, active map[string]map[string]bool) map[iptables.Table][]string {
	out := map[iptables.Table][]string{}
	for _, table := range staleTables {
		list := s[table]
		k := min(n, len(list))
		for _, c := range list[:k] {
			if !active[string(table)][c] {
				out[table] = append(out[table], c)
			}
		}
		s[table] = slices.Clone(list[k:])
		n -= k
	}
	return out
}

// deleteChains flushes and deletes chains in one restore per table. The
// chains must be in rules.DeletionOrder and unreferenced by anything
// outside them.
func deleteChains(ctx context.Context, ipt iptables.Interface, byTable map[iptables.Table][]string) error {
	for _, table := range []iptables.Table{iptables.TableNAT, iptables.TableFilter, iptables.TableMangle} {
		chains := byTable[table]
		if len(chains) == 0 {
			continue
		}
		var b bytes.Buffer
		b.WriteString("*" + string(table) + "\n")
		for _, c := range chains {
			b.WriteString(":" + c + " - [0:0]\n")
		}
		for _, c := range chains {
			b.WriteString("-X " + c + "\n")
		}
		b.WriteString("COMMIT\n")
		if err := ipt.Restore(ctx, b.Bytes(), iptables.RestoreOptions{NoFlush: true}); err != nil {
			return fmt.Errorf("deleting %d stale %s chains (%s ... %s): %w", len(chains), table, chains[0], chains[len(chains)-1], err)
		}
	}
	return nil
}
