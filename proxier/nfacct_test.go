package proxier

import (
	"errors"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/svcproxy/svcproxy/iptables"
	"github.com/svcproxy/svcproxy/proxier/model"
	"github.com/svcproxy/svcproxy/proxier/rules"
)

// rulesCountingInto lists the rules of table/chain that name nfacct counter.
func rulesCountingInto(ipt *iptables.Fake, table iptables.Table, chain, counter string) []string {
	var out []string
	if c := ipt.Dump().Chain(table, chain); c != nil {
		for _, r := range c.Rules {
			if strings.Contains(r.Raw, "--nfacct-name "+counter) {
				out = append(out, r.Raw)
			}
		}
	}
	return out
}

// TestNFAcctCountersMadeOnFullSyncs: a full sync makes kube-proxy's two
// counters before the rules that count into them; a partial sync keeps
// them without asking the kernel again.
func TestNFAcctCountersMadeOnFullSyncs(t *testing.T) {
	acct := &iptables.FakeNFAcct{}
	p, ipt := newTestProxier(t, func(c *Config) { c.NFAcct = acct })
	listed(p, []*v1.Service{lbService}, []*discovery.EndpointSlice{lbSlice})
	mustSync(t, p)
	for _, name := range []string{iptables.NFAcctInvalidDropped, iptables.NFAcctLocalhostNodePorts} {
		if _, err := acct.Get(name); err != nil {
			t.Errorf("after the first sync: %v", err)
		}
	}
	if got := rulesCountingInto(ipt, iptables.TableFilter, rules.ChainForward, iptables.NFAcctInvalidDropped); len(got) != 1 {
		t.Errorf("KUBE-FORWARD rules counting INVALID drops: %q, want 1", got)
	}
	if got := rulesCountingInto(ipt, iptables.TableNAT, rules.ChainNodePorts, iptables.NFAcctLocalhostNodePorts); len(got) != 1 || !strings.Contains(got[0], "-d 127.0.0.0/8") || !strings.Contains(got[0], "--dport 30040") {
		t.Errorf("KUBE-NODEPORTS rules counting localhost NodePorts: %q, want 1 for 127.0.0.0/8:30040", got)
	}

	ensured := acct.Ensured
	scaled := lbSlice.DeepCopy()
	scaled.Endpoints = scaled.Endpoints[:1]
	p.OnEndpointSliceUpdate(lbSlice, scaled)
	mustSync(t, p)
	if acct.Ensured != ensured {
		t.Errorf("a partial sync asked for the counters again (%d Ensure calls, was %d)", acct.Ensured, ensured)
	}
	if got := rulesCountingInto(ipt, iptables.TableNAT, rules.ChainNodePorts, iptables.NFAcctLocalhostNodePorts); len(got) != 1 {
		t.Errorf("after a partial sync: %q, want the localhost NodePort rule kept", got)
	}
}

// TestNFAcctUnavailableCountsNothing: when the counters cannot be made the
// sync still programs the node, with rules that name no counter (a rule
// naming a missing counter would fail the whole restore).
func TestNFAcctUnavailableCountsNothing(t *testing.T) {
	acct := &iptables.FakeNFAcct{EnsureErr: errors.New("operation not supported")}
	p, ipt := newTestProxier(t, func(c *Config) { c.NFAcct = acct })
	listed(p, []*v1.Service{lbService}, []*discovery.EndpointSlice{lbSlice})
	mustSync(t, p)
	if acct.Ensured == 0 {
		t.Fatal("the full sync did not try to make the counters")
	}
	for _, table := range ipt.Dump().Tables {
		for _, c := range table.Chains {
			for _, r := range c.Rules {
				if strings.Contains(r.Raw, "nfacct") {
					t.Errorf("%s/%s names a counter that does not exist: %s", table.Name, c.Name, r.Raw)
				}
			}
		}
	}
	lbPortName := model.ServicePortName{NamespacedName: types.NamespacedName{Namespace: "demo", Name: "lb"}, Port: "http", Protocol: v1.ProtocolTCP}
	if natChain(ipt, rules.ChainNodePorts) == nil || !hasRuleTo(natChain(ipt, rules.ChainNodePorts), rules.ExternalChain(lbPortName)) {
		t.Errorf("the NodePort was not programmed")
	}
}
