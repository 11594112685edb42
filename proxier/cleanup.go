package proxier

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/svcproxy/svcproxy/ipset"
	"github.com/svcproxy/svcproxy/iptables"
)

// ownedChains are the top-level chains svcproxy and kube-proxy (iptables
// mode) create, per table. KUBE-FIREWALL is kubelet's and is left alone.
var ownedChains = map[iptables.Table][]string{
	iptables.TableNAT:    {ChainServices, ChainNodePorts, ChainPostrouting, ChainMarkMasq, ChainProxyCanary, ChainPodEgress},
	iptables.TableFilter: {ChainServices, ChainExternalServices, ChainForward, ChainNodePorts, ChainProxyFirewall, ChainProxyCanary},
	iptables.TableMangle: {ChainProxyCanary},
}

// Cleanup removes every rule, chain and ipset that svcproxy or kube-proxy in
// iptables mode created, so either can take over the node. Jumps go first,
// then the chains (flushed, then deleted, in one restore per table), then
// the sets, which the kernel refuses to destroy while a rule uses them.
// sets may be nil to leave ipsets alone. Every failure is reported; the
// rest is still cleaned.
func Cleanup(ctx context.Context, ipt iptables.Interface, sets ipset.Interface) error {
	var errs []error
	for _, j := range append(Jumps(), PodEgressJump()) {
		if err := ipt.DeleteRule(ctx, iptables.Table(j.Table), j.From, j.Args...); err != nil {
			errs = append(errs, fmt.Errorf("delete jump %s/%s -> %s: %w", j.Table, j.From, j.To, err))
		}
	}
	for _, table := range []iptables.Table{iptables.TableNAT, iptables.TableFilter, iptables.TableMangle} {
		saved, err := ipt.Save(ctx, table)
		if err != nil {
			errs = append(errs, fmt.Errorf("save %s: %w", table, err))
			continue
		}
		if data := cleanupRestore(table, ChainNames(saved)); data != nil {
			if err := ipt.Restore(ctx, data, iptables.RestoreOptions{NoFlush: true}); err != nil {
				errs = append(errs, fmt.Errorf("delete %s chains: %w", table, err))
			}
		}
	}
	if sets != nil {
		if err := ipset.Cleanup(sets, ipset.Prefix); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// cleanupRestore flushes and deletes every chain of ours that exists.
func cleanupRestore(table iptables.Table, existing []string) []byte {
	var ours []string
	for _, c := range existing {
		if slices.Contains(ownedChains[table], c) || (table == iptables.TableNAT && IsServiceChain(c)) {
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

// SyncIPSets writes cfg.IPSets through sets (creating, refilling or
// re-creating each set as needed).
func SyncIPSets(sets ipset.Interface, cfg *NodeConfig) error {
	if len(cfg.IPSets) == 0 {
		return nil
	}
	family := ipset.IPv4
	if cfg.isIPv6() {
		family = ipset.IPv6
	}
	desired := map[string]ipset.Desired{}
	for name, members := range cfg.IPSets {
		desired[name] = ipset.Desired{Type: ipset.HashNet, Family: family, Members: members,
			Comment: "svcproxy " + strings.ToLower(strings.TrimPrefix(name, ipset.Prefix))}
	}
	return ipset.SyncSets(sets, desired)
}
