package metrics

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/svcproxy/svcproxy/iptables"
)

// TestNFAcctMetrics: kube-proxy's two nfacct metrics are absent until their
// counters exist, then carry the counters' packet counts, as counters with
// kube-proxy's names and [ALPHA] help.
func TestNFAcctMetrics(t *testing.T) {
	acct := &iptables.FakeNFAcct{}
	reg := prometheus.NewRegistry()
	for _, c := range NewNFAcctCollectors(acct) {
		reg.MustRegister(c)
	}
	gather := func() map[string]*dto.MetricFamily {
		t.Helper()
		fams, err := reg.Gather()
		if err != nil {
			t.Fatalf("Gather: %v", err)
		}
		byName := map[string]*dto.MetricFamily{}
		for _, f := range fams {
			byName[f.GetName()] = f
		}
		return byName
	}
	if got := gather(); len(got) != 0 {
		t.Errorf("before the counters exist: %d metric families, want none", len(got))
	}
	for _, name := range []string{iptables.NFAcctInvalidDropped, iptables.NFAcctLocalhostNodePorts} {
		if err := acct.Ensure(name); err != nil {
			t.Fatal(err)
		}
	}
	if err := acct.Count(iptables.NFAcctInvalidDropped, 3, 180); err != nil {
		t.Fatal(err)
	}
	if err := acct.Count(iptables.NFAcctLocalhostNodePorts, 5, 300); err != nil {
		t.Fatal(err)
	}
	got := gather()
	for name, want := range map[string]float64{
		"kubeproxy_iptables_ct_state_invalid_dropped_packets_total":     3,
		"kubeproxy_iptables_localhost_nodeports_accepted_packets_total": 5,
	} {
		f, ok := got[name]
		if !ok {
			t.Errorf("%s not gathered", name)
			continue
		}
		if f.GetType() != dto.MetricType_COUNTER || len(f.GetHelp()) < 8 || f.GetHelp()[:8] != "[ALPHA] " {
			t.Errorf("%s: type %v, help %q; want a counter with [ALPHA] help", name, f.GetType(), f.GetHelp())
		}
		if v := f.GetMetric()[0].GetCounter().GetValue(); v != want {
			t.Errorf("%s = %v, want %v", name, v, want)
		}
	}
}
