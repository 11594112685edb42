package main

import (
	"math"
	"testing"
	"time"
)

// The report prints as the single-file bench printed it (expected output
// made by the old table code from the same rows).
func TestTableFormat(t *testing.T) {
	tb := &table{}
	tb.columns([]variant{{label: "svcproxy", short: "svp"}, {label: "kube-proxy", short: "kp"}})
	tb.note("N=%d service ports", 200)
	tb.sec("a. bulk: something")
	tb.add("create → all KUBE-SVC chains present (s)", "%.2f", 1.5, 3)
	tb.add("syncs", "%.0f", 0, 4)
	tb.sec("b. latency")
	tb.add("latency median (ms)", "%.0f", math.NaN(), 39)
	tb.add("ClusterIP − pod IP (µs)", "%.0f", -12, 7)
	tb.note("A note at the end.")
	if got := tb.String(); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

const want = `svcproxy vs kube-proxy v1.36.3 (iptables mode), same lab, same API server, same flags
  N=200 service ports
  A note at the end.

a. bulk: something
  metric                                       svcproxy   kube-proxy   kp/svp
  create → all KUBE-SVC chains present (s)           1.50         3.00     2.00
  syncs                                               0            4        -

b. latency
  metric                                       svcproxy   kube-proxy   kp/svp
  latency median (ms)                               n/a           39        -
  ClusterIP − pod IP (µs)                              -12            7        -
`

// A third variant adds a value and a ratio column.
func TestTableThreeVariants(t *testing.T) {
	tb := &table{}
	tb.columns([]variant{{label: "svcproxy", short: "svp"}, {label: "kube-proxy", short: "kp"}, {label: "kp-nft", short: "kpn"}})
	tb.sec("s")
	tb.add("x", "%.0f", 10, 20, 5)
	want := "svcproxy vs kube-proxy v1.36.3 (iptables mode), same lab, same API server, same flags\n" +
		"\ns\n  metric     svcproxy   kube-proxy       kp-nft   kp/svp  kpn/svp\n" +
		"  x           10           20            5     2.00     0.50\n"
	if got := tb.String(); got != want {
		t.Errorf("got:\n%q\nwant:\n%q", got, want)
	}
}

func TestMeanDelta(t *testing.T) {
	before := []map[string]float64{{"d_sum": 1, "d_count": 2}, {"d_sum": 5, "d_count": 1}}
	after := []map[string]float64{{"d_sum": 4, "d_count": 5}, {"d_sum": 5, "d_count": 1}}
	if got := delta(before, after, "d_count"); got[0] != 3 || got[1] != 0 {
		t.Errorf("delta = %v", got)
	}
	got := mean(before, after, "d")
	if got[0] != 1 || !math.IsNaN(got[1]) {
		t.Errorf("mean = %v, want [1 NaN]", got)
	}
	if q := quantile([]float64{3, 1, 2, 4, 5}, 0.5); q != 3 {
		t.Errorf("median = %v", q)
	}
	if q := quantile([]float64{3, 1, 2, 4, 5}, 1); q != 5 {
		t.Errorf("max = %v", q)
	}
	if !math.IsNaN(quantile(nil, 0.5)) {
		t.Error("quantile of nothing is not NaN")
	}
	if s := secondsOf([]time.Duration{1500 * time.Millisecond}); s[0] != 1.5 {
		t.Errorf("secondsOf = %v", s)
	}
}

func TestRulePosition(t *testing.T) {
	nat := "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-A - [0:0]\n" +
		"-A KUBE-SERVICES -m comment --comment \"bench/a:p0 cluster IP\" -j KUBE-SVC-A\n" +
		"-A KUBE-SERVICES -m comment --comment \"bench/svc-0001-echo1:tcp cluster IP\" -j KUBE-SVC-B\n" +
		"-A KUBE-SVC-A -j KUBE-SEP-X\n" +
		"-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports\" -j KUBE-NODEPORTS\nCOMMIT\n"
	if pos, total := rulePosition(nat, "bench/svc-0001-echo1:tcp cluster IP"); pos != 2 || total != 3 {
		t.Errorf("rulePosition = %v of %v, want 2 of 3", pos, total)
	}
	if n := countSvcChains(nat); n != 1 {
		t.Errorf("countSvcChains = %d", n)
	}
	if n := countRules(nat); n != 4 {
		t.Errorf("countRules = %d", n)
	}
}

func TestParseConfig(t *testing.T) {
	bin := t.TempDir() + "/bin"
	for _, args := range [][]string{
		{"-m", "121", "-svcproxy", bin, "-kube-proxy", bin},
		{"-n", "0", "-svcproxy", bin, "-kube-proxy", bin},
		{"-conns", "4", "-svcproxy", bin, "-kube-proxy", bin},
		{"-svcproxy", "/nonexistent/svcproxy", "-kube-proxy", "/nonexistent/kube-proxy"},
	} {
		if _, err := parseConfig(args); err == nil {
			t.Errorf("parseConfig(%q) accepted", args)
		}
	}
	c, err := parseConfig([]string{"-n", "200", "-k", "5", "-conns", "200", "-svcproxy", t.TempDir(), "-kube-proxy", t.TempDir(), "-min-sync", "2s"})
	if err != nil {
		t.Fatal(err)
	}
	if c.N != 200 || c.K != 5 || c.Conns != 200 || c.M != 10 || c.MinSync != 2*time.Second || c.Prefix != "svpbn" {
		t.Errorf("config = %+v", c)
	}
	b := newBench(c, &table{})
	if b.ports != 2 || b.svcs != 100 || b.servicePorts() != 200 {
		t.Errorf("N=200: %d Services × %d ports", b.svcs, b.ports)
	}
}
