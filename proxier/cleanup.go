package proxier

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/svcproxy/svcproxy/ipset"
	"github.com/svcproxy/svcproxy/iptables"
	"github.com/svcproxy/svcproxy/proxier/rules"
)

// ownedChains are the top-level chains svcproxy and kube-proxy (iptables
// mode) create, per table, in the order they can be deleted once the
// per-service chains are gone (KUBE-MARK-MASQ, which they all jump to,
// last). KUBE-FIREWALL is kubelet's and is left alone.
var ownedChains = map[iptables.Table][]string{
	iptables.TableNAT:    {rules.ChainServices, rules.ChainNodePorts, rules.ChainPostrouting, rules.ChainProxyCanary, rules.ChainPodEgress, rules.ChainMarkMasq},
	iptables.TableFilter: {rules.ChainServices, rules.ChainExternalServices, rules.ChainForward, rules.ChainNodePorts, rules.ChainProxyFirewall, rules.ChainProxyCanary},
	iptables.TableMangle: {rules.ChainProxyCanary},
}

// builtinChains are where jumps into our chains can be.
var builtinChains = map[iptables.Table][]string{
	iptables.TableNAT:    {"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"},
	iptables.TableFilter: {"INPUT", "FORWARD", "OUTPUT"},
	iptables.TableMangle: {"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"},
}

// CleanupBatch is how many chains one restore of Cleanup deletes.
const CleanupBatch = 5000

// Cleanup removes every rule, chain and ipset that svcproxy or kube-proxy in
// iptables mode created, so either can take over the node. Per table, the
// rules in built-in chains that jump into our chains go first (found by
// target, whatever their comment, so other kube-proxy versions' jumps go
// too), then our chains: flushed and deleted in batches, in an order where
// nothing left refers to a deleted chain (top-level chains, then
// rules.DeletionOrder, KUBE-MARK-MASQ last). The sets go last, since the
// kernel refuses to destroy a set a rule uses. sets may be nil to leave
// ipsets alone. Every failure is reported; the rest is still cleaned.
//
// It never saves a whole table: the chains are listed by name
// (ListChains) and only the built-in chains are read rule by rule, so it
// works on a node holding 100,000 chains.
func Cleanup(ctx context.Context, ipt iptables.Interface, sets ipset.Interface) error {
	var errs []error
	for _, table := range []iptables.Table{iptables.TableNAT, iptables.TableFilter, iptables.TableMangle} {
		errs = append(errs, cleanupTable(ctx, ipt, table))
	}
	if sets != nil {
		if err := ipset.Cleanup(sets, ipset.Prefix); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func cleanupTable(ctx context.Context, ipt iptables.Interface, table iptables.Table) error {
	existing, err := ipt.ListChains(ctx, table)
	if err != nil {
		return fmt.Errorf("list %s chains: %w", table, err)
	}
	var errs []error
	for _, chain := range builtinChains[table] {
		if !slices.Contains(existing, chain) {
			continue
		}
		errs = append(errs, deleteJumps(ctx, ipt, table, chain))
	}
	order := ownedInDeletionOrder(table, existing)
	for start := 0; start < len(order); start += CleanupBatch {
		batch := order[start:min(start+CleanupBatch, len(order))]
		if err := deleteChains(ctx, ipt, map[iptables.Table][]string{table: batch}); err != nil {
			errs = append(errs, err)
			break // later chains may be referenced by these
		}
	}
	return errors.Join(errs...)
}

// deleteJumps deletes the rules of a built-in chain that jump into ours.
func deleteJumps(ctx context.Context, ipt iptables.Interface, table iptables.Table, chain string) error {
	text, err := ipt.SaveChain(ctx, table, chain)
	if errors.Is(err, iptables.ErrNoChain) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s/%s: %w", table, chain, err)
	}
	c, err := iptables.ParseChain(table, text)
	if err != nil {
		return fmt.Errorf("parse %s/%s: %w", table, chain, err)
	}
	var errs []error
	for _, r := range c.Rules {
		if target := jumpTarget(r.Args); target != "" && isOwnedChain(table, target) {
			if err := ipt.DeleteRule(ctx, table, chain, r.Args...); err != nil {
				errs = append(errs, fmt.Errorf("delete %s/%s rule %q: %w", table, chain, r.Raw, err))
			}
		}
	}
	return errors.Join(errs...)
}

// ownedInDeletionOrder lists the chains of ours among existing in an order
// they can be deleted in.
func ownedInDeletionOrder(table iptables.Table, existing []string) []string {
	top := ownedChains[table]
	var order []string
	for _, c := range top[:len(top)-boolInt(table == iptables.TableNAT)] {
		if slices.Contains(existing, c) {
			order = append(order, c)
		}
	}
	if table != iptables.TableMangle {
		order = append(order, rules.DeletionOrder(existing)...)
	}
	if table == iptables.TableNAT && slices.Contains(existing, rules.ChainMarkMasq) {
		order = append(order, rules.ChainMarkMasq)
	}
	return order
}

func jumpTarget(args []string) string {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "-j" || args[i] == "-g" {
			return args[i+1]
		}
	}
	return ""
}

func isOwnedChain(table iptables.Table, chain string) bool {
	return slices.Contains(ownedChains[table], chain) || (table != iptables.TableMangle && rules.IsServiceChain(chain))
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
