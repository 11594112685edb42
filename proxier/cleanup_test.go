package proxier

import (
	"context"
	"net/netip"
	"testing"

	"github.com/svcproxy/svcproxy/ipset"
	"github.com/svcproxy/svcproxy/iptables"
	"github.com/svcproxy/svcproxy/proxier/rules"
	"github.com/svcproxy/svcproxy/proxier/rules/rulestest"
	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
)

func TestCleanupRemovesEverythingOurs(t *testing.T) {
	ctx := context.Background()
	ipt := applyToFake(t, []*v1.Service{lbService}, []*discovery.EndpointSlice{lbSlice})
	if err := EnsureCanaries(ctx, ipt); err != nil {
		t.Fatal(err)
	}
	// A jump written by another kube-proxy version, with another comment.
	if _, err := ipt.EnsureRule(ctx, iptables.Append, iptables.TableNAT, "OUTPUT", "-m", "comment", "--comment", "old comment", "-j", rules.ChainServices); err != nil {
		t.Fatal(err)
	}
	// Someone else's chain and rule must survive.
	if err := ipt.EnsureChain(ctx, iptables.TableNAT, "CNI-HOSTPORT-DNAT"); err != nil {
		t.Fatal(err)
	}
	if _, err := ipt.EnsureRule(ctx, iptables.Append, iptables.TableNAT, "PREROUTING", "-j", "CNI-HOSTPORT-DNAT"); err != nil {
		t.Fatal(err)
	}
	sets := ipset.NewFake()
	cfg := rulestest.NodeConfig()
	cfg.IPSets = map[string][]netip.Prefix{ipset.PodCIDRsSet: {netip.MustParsePrefix("198.51.100.0/24")}}
	if err := SyncIPSets(sets, cfg); err != nil {
		t.Fatal(err)
	}

	if err := Cleanup(ctx, ipt, sets); err != nil {
		t.Fatalf("cleanup: %v", err)
	}
	d := ipt.Dump()
	for _, table := range []iptables.Table{iptables.TableNAT, iptables.TableFilter, iptables.TableMangle} {
		for _, c := range d.Table(table).Chains {
			if isOwnedChain(table, c.Name) {
				t.Errorf("%s/%s survived cleanup", table, c.Name)
			}
			for _, r := range c.Rules {
				if isOwnedChain(table, jumpTarget(r.Args)) {
					t.Errorf("%s/%s: rule %q survived cleanup", table, c.Name, r.Raw)
				}
			}
		}
	}
	if d.Chain(iptables.TableNAT, "CNI-HOSTPORT-DNAT") == nil || len(d.Chain(iptables.TableNAT, "PREROUTING").Rules) != 1 {
		t.Errorf("cleanup touched someone else's rules:\n%s", d.Table(iptables.TableNAT))
	}
	if names, _ := sets.ListSets(); len(names) != 0 {
		t.Errorf("sets left: %v", names)
	}
	// Idempotent.
	if err := Cleanup(ctx, ipt, sets); err != nil {
		t.Fatalf("second cleanup: %v", err)
	}
}
