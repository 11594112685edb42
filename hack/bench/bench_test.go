package main

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/svcproxy/svcproxy/proxier/model"
)

func testVariants() []variant {
	return []variant{
		{label: "svcproxy", short: "svp", svcproxy: true},
		{label: "svp-kplayout", short: "svpK", svcproxy: true},
		{label: "kp-iptables", short: "kpI"},
		{label: "kp-nftables", short: "kpN", nft: true},
	}
}

// The report: a value column per variant, a ratio column per (kube-proxy
// mode, svcproxy layout) pair; lower bounds (capped runs) print ">", and
// their ratios ">" or "<".
func TestTableFormat(t *testing.T) {
	tb := &table{}
	tb.columns(testVariants())
	tb.note("N=%d Services", 200)
	tb.sec("a. cold start")
	tb.addBounded("start → programmed (s)", "%.2f", []float64{1, 2, 480, 4}, []bool{false, false, true, false})
	tb.add("syncs", "%.0f", 0, 4, math.NaN(), 8)
	tb.sec("b. µs")
	tb.add("latency median (ms)", "%.0f", 10, 20)
	tb.after = []string{"Targets:", "  x → MET"}
	want := `svcproxy (compact and kube-proxy rule layouts) vs kube-proxy v1.36.3 (iptables and nftables modes), same lab, same API server, same flags
  N=200 Services

a. cold start
  metric                     svcproxy svp-kplayout  kp-iptables  kp-nftables   kpI/svp   kpN/svp  kpI/svpK  kpN/svpK
  start → programmed (s)           1.00         2.00      >480.00         4.00   >480.00      4.00   >240.00      2.00
  syncs                             0            4          n/a            8         -         -         -      2.00

b. µs
  metric                     svcproxy svp-kplayout  kp-iptables  kp-nftables   kpI/svp   kpN/svp  kpI/svpK  kpN/svpK
  latency median (ms)              10           20          n/a          n/a         -         -         -         -

Targets:
  x → MET
`
	if got := tb.String(); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

func TestRatioBounds(t *testing.T) {
	r := row{values: []float64{2, 4}, lower: []bool{true, false}}
	if got := r.ratio(1, 0); got != "<2.00" {
		t.Errorf("ratio over a lower bound = %q", got)
	}
	r.lower = []bool{true, true}
	if got := r.ratio(1, 0); got != "?" {
		t.Errorf("ratio of two lower bounds = %q", got)
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
}

// kube-proxy's own test values: KUBE-SVC-XPGD46QRK7WJZT7O is ns1/svc1:p80
// tcp in its iptables tests; ULMVA6XW-ns1/svc1/tcp/p80 its nftables
// chain-name example.
func TestChainName(t *testing.T) {
	if got := chainName(false, "ns1", "svc1", "p80"); got != "KUBE-SVC-XPGD46QRK7WJZT7O" {
		t.Errorf("iptables chain = %s", got)
	}
	if got := chainName(true, "ns1", "svc1", "p80"); got != "service-ULMVA6XW-ns1/svc1/tcp/p80" {
		t.Errorf("nftables chain = %s", got)
	}
}

func TestHasEndpoint(t *testing.T) {
	ipt := `-A KUBE-SVC-X -m comment --comment "bench/svc-00001:p0 -> [2001:db8:9::1:3]:10000" -m tcp -p tcp -j DNAT --to-destination [2001:db8:9::1:3]:10000`
	if !hasEndpoint(ipt, "svc-00001", "2001:db8:9::1:3", false) || hasEndpoint(ipt, "svc-00001", "2001:db8:9::1:30", false) {
		t.Error("iptables listing")
	}
	// kube-proxy's layout: the endpoint is in its KUBE-SEP chain's name
	// (seen in a lab: bench/svc-00000:p0's first endpoint).
	kpl := "-A KUBE-SVC-WSUVVLHLG4AV5L2A -m statistic --mode random --probability 0.10000000009 -j KUBE-SEP-4UNIJ76PK553KDWN\n"
	if got := sepChainName("bench", "svc-00000", "p0", "2001:db8:9::1", 10000); got != "KUBE-SEP-4UNIJ76PK553KDWN" {
		t.Errorf("sepChainName = %s", got)
	}
	if !hasEndpoint(kpl, "svc-00000", "2001:db8:9::1", false) || hasEndpoint(kpl, "svc-00000", "2001:db8:9::2", false) {
		t.Error("kube-proxy layout listing")
	}
	nft := "\t\tnumgen random mod 2 vmap { 0 : goto endpoint-ABCDEFGH-bench/svc-00001/tcp/p0__2001.db8.9..1.3/10000, 1 : goto x }"
	if !hasEndpoint(nft, "svc-00001", "2001:db8:9::1:3", true) || hasEndpoint(nft, "svc-00001", "2001:db8:9::1:30", true) {
		t.Error("nftables listing")
	}
	// kube-proxy 1.36's nftables mode DNATs through a map in the service chain (seen in a lab).
	nftMap := "\t\tmeta l4proto tcp dnat ip6 to numgen random mod 10 map { 0 : 2001:db8:9::1 . 10000, 1 : 2001:db8:9::2 . 10000, 9 : 2001:db8:9::a . 10000 }"
	if !hasEndpoint(nftMap, "svc-00000", "2001:db8:9::a", true) || hasEndpoint(nftMap, "svc-00000", "2001:db8:9::", true) || hasEndpoint(nftMap, "svc-00000", "2001:db8:9::b", true) {
		t.Error("nftables map listing")
	}
}

func TestAddresses(t *testing.T) {
	if got := endpointAddr(0, 0); got != "2001:db8:9::1" {
		t.Errorf("endpointAddr(0, 0) = %s", got)
	}
	if got := endpointAddr(9999, 9); got != "2001:db8:9::270f:a" {
		t.Errorf("endpointAddr(9999, 9) = %s", got)
	}
	if got := updateAddr(3); got != "2001:db8:9:1::3:1" {
		t.Errorf("updateAddr(3) = %s", got)
	}
	b := newBench(config{N: 3, M: 2}, &table{})
	if got := b.endpoints(1); len(got) != 2 || got[1] != "2001:db8:9::1:2" {
		t.Errorf("endpoints(1) = %v", got)
	}
	svc, sl := b.objects(2)
	if svc.Name != "svc-00002" || len(sl.Endpoints) != 2 || *sl.Endpoints[0].NodeName != "fake-node-04" || svc.Spec.IPFamilies[0] != "IPv6" {
		t.Errorf("objects(2) = %+v %+v", svc, sl)
	}
}

func TestRulesWalked(t *testing.T) {
	flat := "-N KUBE-SERVICES\n" +
		`-A KUBE-SERVICES -d 2001:db8:5::1:0/128 -p tcp -m comment --comment "bench/a-first-1:tcp cluster IP" -j KUBE-SVC-A` + "\n" +
		`-A KUBE-SERVICES -d 2001:db8:5::77/128 -p tcp -m comment --comment "bench/svc-00000:p0 cluster IP" -j KUBE-SVC-B` + "\n" +
		`-A KUBE-SERVICES -d 2001:db8:5::1:ffff/128 -p tcp -m comment --comment "bench/zz-last-1:tcp cluster IP" -j KUBE-SVC-C` + "\n"
	none := func(string) (string, error) { return "", errors.New("no bucket listing expected") }
	if pos, err := rulesWalked(flat, none, `"bench/zz-last-1:tcp cluster IP"`, "2001:db8:5::1:ffff"); err != nil || pos != 3 {
		t.Errorf("flat: %v, %v", pos, err)
	}
	if countRules(flat, "KUBE-SERVICES") != 3 {
		t.Error("countRules")
	}
	dispatched := "-N KUBE-SERVICES\n" +
		`-A KUBE-SERVICES -d ::/::f -m comment --comment "services dispatch 0" -j KUBE-DISPATCH-0` + "\n" +
		`-A KUBE-SERVICES -d ::e/::f -m comment --comment "services dispatch E" -j KUBE-DISPATCH-E` + "\n" +
		`-A KUBE-SERVICES -d ::f/::f -m comment --comment "services dispatch F" -j KUBE-DISPATCH-F` + "\n" +
		`-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS` + "\n"
	buckets := map[string]string{
		"KUBE-DISPATCH-F": "-N KUBE-DISPATCH-F\n" +
			`-A KUBE-DISPATCH-F -d 2001:db8:5::3f/128 -m comment --comment "bench/svc-00001:p0 cluster IP" -j KUBE-SVC-D` + "\n" +
			`-A KUBE-DISPATCH-F -d 2001:db8:5::1:ffff/128 -m comment --comment "bench/zz-last-1:tcp cluster IP" -j KUBE-SVC-C` + "\n",
	}
	list := func(c string) (string, error) {
		if s, ok := buckets[c]; ok {
			return s, nil
		}
		return "", errors.New("unexpected listing of " + c)
	}
	if pos, err := rulesWalked(dispatched, list, `"bench/zz-last-1:tcp cluster IP"`, "2001:db8:5::1:ffff"); err != nil || pos != 5 {
		t.Errorf("dispatched: %v, %v (want 3 + 2)", pos, err)
	}
	if _, err := rulesWalked(dispatched, list, `"bench/nope:tcp cluster IP"`, "2001:db8:5::1"); err == nil {
		t.Error("a missing rule was found")
	}
}

func TestPartialRestoreBytes(t *testing.T) {
	log := `I1202 11:50:00.1 1 proxier.go:311] "Synced all proxy rules" layout="compact" servicePorts=9 natRules=10 restoreBytes=99999 staleChainsDeleted=0
I1202 11:50:01.1 1 proxier.go:313] "Synced proxy rules" ipFamily="IPv6" changedServices=1 restoreBytes=1234 staleChainsDeleted=0 elapsed="5ms"
I1202 11:50:01.2 1 proxier.go:313] "Synced proxy rules" changedServices=0 restoreBytes=200 staleChainsDeleted=0 elapsed="1ms"
I1202 11:50:02.1 1 proxier.go:313] "Synced proxy rules" changedServices=2 restoreBytes=2345 staleChainsDeleted=0 elapsed="5ms"
`
	got := partialRestoreBytes(log)
	if len(got) != 2 || got[0] != 1234 || got[1] != 2345 {
		t.Errorf("partialRestoreBytes = %v", got)
	}
	if l := lastN(got, 1); len(l) != 1 || l[0] != 2345 {
		t.Errorf("lastN = %v", l)
	}
}

func TestStartOrder(t *testing.T) {
	if got := startOrder(testVariants()); len(got) != 4 || got[3] != 2 || got[2] != 3 {
		t.Errorf("startOrder = %v: kube-proxy's iptables mode starts last", got)
	}
}

func TestTargets(t *testing.T) {
	r := newResults(testVariants())
	r.cold = []float64{10, 100, 480, 40}
	r.coldCapped = []bool{false, false, true, false}
	r.fullSync = []float64{10, 100, nan, 30}
	r.bare = []float64{8, 50, nan, nan}
	r.update = []float64{50, 300, nan, 4000}
	r.cpuPerUpdate = []float64{100, 200, nan, 50}
	r.firstP50 = []float64{100, 100, 100, 100}
	r.lastP50 = []float64{105, 400, 150, 100}
	r.rss = []float64{40, 60, 300, 100}
	got := strings.Join(r.targets(10000), "\n")
	for _, want := range []string{
		"svcproxy     full sync (metric) ≤ 0.2× kube-proxy nftables mode's: 10.00 s / 30.00 s = 0.33× → MISSED by 67%",
		"svcproxy     cold start (process start → programmed) ≤ 0.2× kube-proxy nftables mode's: 10.00 s / 40.00 s = 0.25× → MISSED by 25%",
		"svp-kplayout cold start (process start → programmed) ≤ 0.2× kube-proxy nftables mode's: 100.00 s / 40.00 s = 2.50× → MISSED by 1150%",
		"svcproxy     full sync (metric) ≤ 1.5× the bare ip6tables-restore of its text: 10.00 s / 8.00 s = 1.25× → MET",
		"svp-kplayout full sync (metric) ≤ 1.5× the bare ip6tables-restore of its text: 100.00 s / 50.00 s = 2.00× → MISSED by 33%",
		"svcproxy     one-endpoint change ≤ 100 ms: 50 ms → MET",
		"svcproxy     one-endpoint change ≤ 0.02× nftables mode's: 50 ms / 4000 ms = 0.013× → MET",
		"svp-kplayout new connection, last / first p50 ≤ 1.1: 400 µs / 100 µs = 4.00 → MISSED by 264%",
		// the capped kube-proxy's RSS does not count: 100 MiB is the better mode's
		"svcproxy     RSS ≤ 0.5× the better kube-proxy mode's: 40 MiB / 100 MiB = 0.40× → MET",
		"svcproxy     CPU per update ≤ kube-proxy iptables mode's: 100.0 ms / NaN ms = NaN× → n/a (not measured)",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("targets lack %q:\n%s", want, got)
		}
	}
	if v := verdict(240.0/218, 1.1, false, false); v != "MISSED by 0.1%" {
		t.Errorf("just above the limit: %s", v)
	}
	if v := verdict(0.4, 0.5, false, true); !strings.HasPrefix(v, "undecided") {
		t.Errorf("a lower bound below the limit: %s", v)
	}
	if v := verdict(0.6, 0.5, true, false); !strings.HasPrefix(v, "undecided") {
		t.Errorf("an upper bound above the limit: %s", v)
	}
}

func TestParseConfig(t *testing.T) {
	bin := t.TempDir() + "/bin"
	for _, args := range [][]string{
		{"-m", "1001", "-svcproxy", bin, "-kube-proxy", bin},
		{"-n", "0", "-svcproxy", bin, "-kube-proxy", bin},
		{"-n", "50001", "-svcproxy", bin, "-kube-proxy", bin},
		{"-conns", "4", "-svcproxy", bin, "-kube-proxy", bin},
		{"-cap", "1s", "-svcproxy", bin, "-kube-proxy", bin},
		{"-cap", "10m", "-timeout", "5m", "-svcproxy", bin, "-kube-proxy", bin},
		{"-svcproxy", "/nonexistent/svcproxy", "-kube-proxy", "/nonexistent/kube-proxy"},
	} {
		if _, err := parseConfig(args); err == nil {
			t.Errorf("parseConfig(%q) accepted", args)
		}
	}
	c, err := parseConfig([]string{"-n", "200", "-k", "5", "-conns", "200", "-svcproxy", t.TempDir(), "-kube-proxy", t.TempDir(), "-min-sync", "2s", "-cap", "6m"})
	if err != nil {
		t.Fatal(err)
	}
	if c.N != 200 || c.K != 5 || c.Conns != 200 || c.M != 10 || c.MinSync != 2*time.Second || c.Prefix != "svpbn" || c.Cap != 6*time.Minute || !c.Restore {
		t.Errorf("config = %+v", c)
	}
}

// The per-connection targets sit first and last in their dispatch
// buckets, which the compact layout orders by KUBE-SVC chain name,
// descending.
func TestEchoTargetsAreFirstAndLastByChainName(t *testing.T) {
	b := &bench{}
	for _, e := range b.echoTargets(3) {
		pn := model.ServicePortName{NamespacedName: types.NamespacedName{Namespace: kns, Name: e.name}, Port: "tcp", Protocol: corev1.ProtocolTCP}
		want := map[string]string{"first": "ZZZ", "last": "222"}[e.which]
		if !strings.HasPrefix(pn.Hash(), want) {
			t.Errorf("%s target %s: chain hash %s, want one beginning %s", e.which, e.name, pn.Hash(), want)
		}
	}
}
