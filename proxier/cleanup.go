package proxier

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/svcproxy/svcproxy/ipset"
	"github.com/svcproxy/svcproxy/iptables"
	"github.com/svcproxy/svcproxy/proxier/rules"
)

// ownedChains are the top-level chains svcproxy and kube-proxy (iptables
// mode) create, per table. KUBE-FIREWALL is kubelet's and is left alone.
var ownedChains = map[iptables.Table][]string{
	iptables.TableNAT:    {rules.ChainServices, rules.ChainNodePorts, rules.ChainPostrouting, rules.ChainMarkMasq, rules.ChainProxyCanary, rules.ChainPodEgress},
	iptables.TableFilter: {rules.ChainServices, rules.ChainExternalServices, rules.ChainForward, rules.ChainNodePorts, rules.ChainProxyFirewall, rules.ChainProxyCanary},
	iptables.TableMangle: {rules.ChainProxyCanary},
}

// Cleanup removes every rule, chain and ipset that svcproxy or kube-proxy in
// iptables mode created, so either can take over the node. Per table, the
// rules in built-in chains that jump into our chains go first (found by
// target, whatever their comment, so other kube-proxy versions' jumps go
// too), then our chains (flushed, then deleted, in one restore); the sets go
// last, since the kernel refuses to destroy a set a rule uses. sets may be
// nil to leave ipsets alone. Every failure is reported; the rest is still
// cleaned.
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
	saved, err := ipt.Save(ctx, table)
	if err != nil {
		return fmt.Errorf("save %s: %w", table, err)
	}
	dump, err := iptables.ParseDump(saved)
	if err != nil {
		return fmt.Errorf("parse %s: %w", table, err)
	}
	t := dump.Table(table)
	if t == nil {
		return nil
	}
	var errs []error
	for _, c := range t.Chains {
		if !iptables.IsBuiltinChain(table, c.Name) {
			continue
		}
		for _, r := range c.Rules {
			if target := jumpTarget(r.Args); target != "" && isOwnedChain(table, target) {
				if err := ipt.DeleteRule(ctx, table, c.Name, r.Args...); err != nil {
					errs = append(errs, fmt.Errorf("delete %s/%s rule %q: %w", table, c.Name, r.Raw, err))
				}
			}
		}
	}
	var names []string
	for _, c := range t.Chains {
		names = append(names, c.Name)
	}
	if data := cleanupRestore(table, names); data != nil {
		if err := ipt.Restore(ctx, data, iptables.RestoreOptions{NoFlush: true}); err != nil {
			errs = append(errs, fmt.Errorf("delete %s chains: %w", table, err))
		}
	}
	return errors.Join(errs...)
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
	return slices.Contains(ownedChains[table], chain) || (table == iptables.TableNAT && rules.IsServiceChain(chain))
}

// cleanupRestore flushes and deletes every chain of ours that exists.
func cleanupRestore(table iptables.Table, existing []string) []byte {
	var ours []string
	for _, c := range existing {
		if isOwnedChain(table, c) {
			ours = append(ours, c)
		}
	}
	if len(ours) == 0 {
		return nil
	}
	slices.Sort(ours)
	var b bytes.Buffer
	b.WriteString("*" + string(table) + "\n")
	for _, c := range ours {
		b.WriteString(":" + c + " - [0:0]\n")
	}
	for _, c := range ours {
		b.WriteString("-X " + c + "\n")
	}
	b.WriteString("COMMIT\n")
	return b.Bytes()
}
