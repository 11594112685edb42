package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/svcproxy/svcproxy/hack/lab"
)

// TestNFAcctMetrics: `svcproxy run` makes kube-proxy's nfacct counters and
// serves kube-proxy's two metrics from them: every connection to
// 127.0.0.1:NODEPORT on the node is counted once (nat sees a connection's
// first packet), and the INVALID-drop counter is served.
func TestNFAcctMetrics(t *testing.T) {
	e := setup(t)
	l := e.lab
	const nodePort = 30088
	e.createService(t, svcSpec{name: "nfacct", nodePort: nodePort}, l.Pod(1, 1), l.Pod(2, 1))
	n := l.Node(1)
	g := target{n.NS, "tcp", "127.0.0.1", nodePort}
	reachAll(t, g, "n1-p1", "n2-p1")

	scrape := func() map[string]float64 {
		t.Helper()
		m, err := lab.ScrapeMetrics(context.Background(), n.NS, lab.MetricsURL)
		if err != nil {
			t.Fatalf("%s /metrics: %v", n.Name, err)
		}
		return m.Flat(lab.IPv4)
	}
	const localhost = "kubeproxy_iptables_localhost_nodeports_accepted_packets_total"
	before := scrape()
	for _, name := range []string{localhost, "kubeproxy_iptables_ct_state_invalid_dropped_packets_total"} {
		if _, ok := before[name]; !ok {
			t.Fatalf("%s /metrics lacks %s", n.Name, name)
		}
	}
	const conns = 25
	if _, _, err := lab.Hits(g.spec(3*time.Second), conns); err != nil {
		t.Fatalf("%v: %v", g, err)
	}
	if got := scrape()[localhost] - before[localhost]; got != conns {
		t.Errorf("%s rose by %v over %d connections to 127.0.0.1:%d", localhost, got, conns, nodePort)
	}
}
