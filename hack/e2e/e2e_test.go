package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/svcproxy/svcproxy/hack/lab"
)

// Pods of the lab (3 per node), each running an echo server named after it:
//
//	node1: n1-p1 198.51.100.2   n1-p2 .3    n1-p3 .4
//	node2: n2-p1 198.51.100.66  n2-p2 .67   n2-p3 .68
//
// Tests use p3 of each node as the client pod and p1/p2 as backends.

// TestClusterIP: a ClusterIP Service with local and remote backends is
// reachable over TCP and UDP from pods on both nodes (which keep their source
// address) and from both nodes themselves (masqueraded to a node address).
func TestClusterIP(t *testing.T) {
	e := setup(t)
	l := e.lab
	svc := e.createService(t, svcSpec{name: "web", udp: true}, l.Pod(1, 1), l.Pod(1, 2), l.Pod(2, 1), l.Pod(2, 2))
	want := []string{"n1-p1", "n1-p2", "n2-p1", "n2-p2"}
	ip := svc.Spec.ClusterIP

	for _, client := range []*lab.Pod{l.Pod(1, 3), l.Pod(2, 3)} {
		seen := reachAll(t, target{client.NS, "tcp", ip, 80}, want...)
		if len(seen) != 1 || !seen[client.IP] {
			t.Errorf("pod %s -> cluster IP: backends saw %v, want the pod's own address %s (no masquerade)", client.Name, keys(seen), client.IP)
		}
		reachAll(t, target{client.NS, "udp", ip, 53}, want...)
	}
	for _, n := range l.Nodes {
		seen := reachAll(t, target{n.NS, "tcp", ip, 80}, want...)
		for c := range seen {
			if c != n.IP && c != n.BridgeIP {
				t.Errorf("node %s -> cluster IP: backends saw %s, want a %s address (%s or %s)", n.Name, c, n.Name, n.IP, n.BridgeIP)
			}
		}
	}
}

// TestNodePortOnEveryNode: a NodePort answers the outside client on every
// node's IP, with backends on both nodes, and the backends see a node address
// of the node that was hit (masquerade), never the client's.
func TestNodePortOnEveryNode(t *testing.T) {
	e := setup(t)
	l := e.lab
	e.createService(t, svcSpec{name: "np", nodePort: 30080}, l.Pod(1, 1), l.Pod(2, 2))
	for _, n := range l.Nodes {
		seen := reachAll(t, target{l.Client.NS, "tcp", n.IP, 30080}, "n1-p1", "n2-p2")
		for c := range seen {
			if c == lab.ClientIP || (c != n.IP && c != n.BridgeIP) {
				t.Errorf("NodePort via %s: backends saw client %s, want %s's address (%s or %s): not masqueraded", n.Name, c, n.Name, n.IP, n.BridgeIP)
			}
		}
	}
}

// TestScaleEndpoints: adding an endpoint to the slice brings traffic to it;
// removing one stops all traffic to it once the rules have converged.
func TestScaleEndpoints(t *testing.T) {
	e := setup(t)
	l := e.lab
	// Service first, slice later (as in a real cluster): briefly without
	// endpoints. The other tests create the slice first.
	svc := e.createService(t, svcSpec{name: "scale"})
	ip := svc.Spec.ClusterIP
	e.setEndpoints(t, svc, l.Pod(1, 1), l.Pod(2, 1))
	reachAll(t, target{l.Pod(1, 3).NS, "tcp", ip, 80}, "n1-p1", "n2-p1")

	// Scale up.
	e.setEndpoints(t, svc, l.Pod(1, 1), l.Pod(2, 1), l.Pod(2, 2))
	for _, client := range []*lab.Pod{l.Pod(1, 3), l.Pod(2, 3)} {
		reachAll(t, target{client.NS, "tcp", ip, 80}, "n1-p1", "n2-p1", "n2-p2")
	}

	// Scale down: n2-p1 goes.
	removed := l.Pod(2, 1)
	e.setEndpoints(t, svc, l.Pod(1, 1), l.Pod(2, 2))
	wantDNAT := map[string]bool{l.Pod(1, 1).IP + ":8080": true, l.Pod(2, 2).IP + ":8080": true}
	e.waitRules(t, "scale-down programmed", func(nat string) error {
		if got := dnatTargets(nat, "scale"); !maps.Equal(got, wantDNAT) {
			return fmt.Errorf("DNAT targets %v, want %v", keys(got), keys(wantDNAT))
		}
		if stale := orphanChains(nat); len(stale) > 0 {
			return fmt.Errorf("stale chains nothing jumps to: %v", stale)
		}
		return nil
	})
	for _, client := range []*lab.Pod{l.Pod(1, 3), l.Pod(2, 3)} {
		got, _ := hits(t, target{client.NS, "tcp", ip, 80}, 40)
		if got[removed.Name] > 0 {
			t.Errorf("from %s: %d of 40 requests still reached removed endpoint %s", client.Name, got[removed.Name], removed.Name)
		}
		if got["n1-p1"] == 0 || got["n2-p2"] == 0 {
			t.Errorf("from %s: remaining endpoints not all used: %v", client.Name, got)
		}
	}

	// An endpoint that stops being ready gets no new traffic either.
	e.setSlice(t, svc, endpoint{l.Pod(1, 1), false}, endpoint{l.Pod(2, 2), true})
	e.waitRules(t, "not-ready endpoint dropped", func(nat string) error {
		if got := dnatTargets(nat, "scale"); len(got) != 1 || !got[l.Pod(2, 2).IP+":8080"] {
			return fmt.Errorf("DNAT targets %v, want only n2-p2", keys(got))
		}
		return nil
	})
	for _, client := range []*lab.Pod{l.Pod(1, 3), l.Pod(2, 3)} {
		if got, _ := hits(t, target{client.NS, "tcp", ip, 80}, 20); got["n2-p2"] != 20 {
			t.Errorf("from %s with n1-p1 not ready: answers %v, want n2-p2 only", client.Name, got)
		}
	}
}

// TestServiceUpdate: changing a Service in place (its port, and its type
// from ClusterIP to NodePort) moves the traffic: the new port and the
// NodePort answer, the old port no longer DNATs.
func TestServiceUpdate(t *testing.T) {
	e := setup(t)
	l := e.lab
	svc := e.createService(t, svcSpec{name: "upd"}, l.Pod(1, 2), l.Pod(2, 2))
	ip := svc.Spec.ClusterIP
	client := l.Pod(2, 3)
	reachAll(t, target{client.NS, "tcp", ip, 80}, "n1-p2", "n2-p2")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cur, err := e.cs.CoreV1().Services(ns).Get(ctx, "upd", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cur.Spec.Type = "NodePort"
	cur.Spec.Ports[0].Port = 81
	cur.Spec.Ports[0].NodePort = 30088
	if _, err := e.cs.CoreV1().Services(ns).Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("update service: %v", err)
	}
	reachAll(t, target{client.NS, "tcp", ip, 81}, "n1-p2", "n2-p2")
	for _, n := range l.Nodes {
		reachAll(t, target{l.Client.NS, "tcp", n.IP, 30088}, "n1-p2", "n2-p2")
	}
	e.waitRules(t, "old port gone", func(nat string) error {
		for _, line := range linesMentioning(nat, svcKey("upd")) {
			if strings.Contains(line, "--dport 80 ") {
				return fmt.Errorf("rule for the old port left: %s", line)
			}
		}
		if stale := orphanChains(nat); len(stale) > 0 {
			return fmt.Errorf("stale chains nothing jumps to: %v", stale)
		}
		return nil
	})
	unanswered(t, target{client.NS, "tcp", ip, 80}, 500*time.Millisecond)
}

// TestNodePortLocalPolicy: with externalTrafficPolicy Local, a NodePort
// answers only on nodes with a local endpoint, keeps the client's source
// address there, and drops (not rejects) on the other node.
func TestNodePortLocalPolicy(t *testing.T) {
	e := setup(t)
	l := e.lab
	e.createService(t, svcSpec{name: "local", nodePort: 30087, local: true}, l.Pod(1, 1), l.Pod(1, 2))
	seen := reachAll(t, target{l.Client.NS, "tcp", l.Node(1).IP, 30087}, "n1-p1", "n1-p2")
	if len(seen) != 1 || !seen[lab.ClientIP] {
		t.Errorf("externalTrafficPolicy Local: backends saw %v, want the client's own address %s", keys(seen), lab.ClientIP)
	}
	// Without rules node2 would refuse (closed port): wait for the DROP.
	e.waitNodeTable(t, l.Node(2), "filter", "no-local-endpoints verdict", func(filter string) error {
		for _, line := range linesMentioning(filter, svcKey("local")) {
			if strings.Contains(line, "--dport 30087") && strings.Contains(line, "-j DROP") {
				return nil
			}
		}
		return errors.New("no DROP rule for the NodePort yet")
	})
	err := unanswered(t, target{l.Client.NS, "tcp", l.Node(2).IP, 30087}, 700*time.Millisecond)
	if !lab.IsTimeout(err) {
		t.Errorf("NodePort on node2 (no local endpoints): %v; want a timeout (DROP)", err)
	}
}

// TestServiceDeletion: deleting a Service and its slice removes every rule
// and per-service chain for it on every node; the cluster IP and the
// NodePort stop answering.
func TestServiceDeletion(t *testing.T) {
	e := setup(t)
	l := e.lab
	svc := e.createService(t, svcSpec{name: "gone", nodePort: 30081}, l.Pod(1, 1), l.Pod(2, 1))
	ip := svc.Spec.ClusterIP
	reachAll(t, target{l.Pod(1, 3).NS, "tcp", ip, 80}, "n1-p1", "n2-p1")

	before := map[string]map[string]bool{}
	for _, n := range l.Nodes {
		nat, err := e.save(n.NS, "nat")
		if err != nil {
			t.Fatal(err)
		}
		chains := serviceChains(nat, "gone")
		var svcChains, sepChains int
		for c := range chains {
			switch {
			case strings.HasPrefix(c, "KUBE-SVC-"):
				svcChains++
			case strings.HasPrefix(c, "KUBE-SEP-"):
				sepChains++
			}
		}
		// The compact layout (the default) keeps a KUBE-SEP chain for the
		// node's own endpoint only (n1-p1 on node1, n2-p1 on node2).
		if svcChains != 1 || sepChains != 1 {
			t.Fatalf("%s: chains of the service before deletion: %v; want 1 KUBE-SVC and 1 KUBE-SEP", n.Name, keys(chains))
		}
		before[n.Name] = chains
	}

	e.deleteService(t, "gone")
	e.waitRules(t, "service gone", func(nat string) error {
		if lines := linesMentioning(nat, svcKey("gone"), ip, "--dport 30081"); len(lines) > 0 {
			return fmt.Errorf("rules left for the deleted service:\n%s", strings.Join(lines, "\n"))
		}
		if stale := orphanChains(nat); len(stale) > 0 {
			return fmt.Errorf("stale chains nothing jumps to: %v", stale)
		}
		return nil
	})
	for _, n := range l.Nodes {
		nat, err := e.save(n.NS, "nat")
		if err != nil {
			t.Fatal(err)
		}
		for c := range before[n.Name] {
			if strings.Contains(nat, c) {
				t.Errorf("%s: stale chain %s of the deleted service is still in the nat table:\n%s", n.Name, c, strings.Join(linesMentioning(nat, c), "\n"))
			}
		}
		filter, err := e.save(n.NS, "filter")
		if err != nil {
			t.Fatal(err)
		}
		if lines := linesMentioning(filter, svcKey("gone"), ip, "--dport 30081"); len(lines) > 0 {
			t.Errorf("%s: filter rules left for the deleted service:\n%s", n.Name, strings.Join(lines, "\n"))
		}
	}
	err := unanswered(t, target{l.Pod(1, 3).NS, "tcp", ip, 80}, time.Second)
	t.Logf("deleted cluster IP from a pod: %v", err)
	for _, n := range l.Nodes {
		err := unanswered(t, target{l.Client.NS, "tcp", n.IP, 30081}, time.Second)
		t.Logf("deleted NodePort via %s: %v", n.Name, err)
	}
}

// TestNoEndpointsRejects: a Service without endpoints (no slice at all, or a
// slice with no endpoints) is rejected at once (REJECT: connection refused,
// not a timeout), for its cluster IP from a pod and from a node, and for its
// NodePort from outside.
//
// The node answers a REJECT with an ICMP error, which the kernel rate-limits
// per destination host (net.ipv4.icmp_ratelimit: a burst of 6, then 1/s), so
// each client host gets only 3 probes here, and a single slow answer (the
// SYN retransmitted after 1s) is tolerated.
func TestNoEndpointsRejects(t *testing.T) {
	e := setup(t)
	l := e.lab
	noSlice := e.createService(t, svcSpec{name: "empty", nodePort: 30082})
	emptySlice := e.createService(t, svcSpec{name: "empty2", nodePort: 30085})
	e.setEndpoints(t, emptySlice)

	// A closed NodePort is refused (RST) even without rules, so wait for
	// the REJECT rules themselves (cluster IP and NodePort) on both nodes.
	for _, name := range []string{"empty", "empty2"} {
		e.waitTable(t, "filter", "REJECT rules for "+name, func(filter string) error {
			if n := len(linesMentioning(filter, svcKey(name))); n < 2 {
				return fmt.Errorf("%d filter rules for %s, want 2 (cluster IP and NodePort REJECT)", n, name)
			}
			return nil
		})
	}
	check := func(g target) {
		t.Helper()
		var took []time.Duration
		for i := 0; i < 3; i++ {
			start := time.Now()
			_, err := g.probe(3 * time.Second)
			took = append(took, time.Since(start).Round(time.Microsecond))
			if !lab.IsRefused(err) {
				t.Fatalf("%s: attempt %d: %v after %s; want connection refused", g, i+1, err, took[i])
			}
		}
		// Refused (not timed out, as a DROP would) is the verdict; the
		// times are the machine's business and only logged.
		t.Logf("%s: refused after %v", g, took)
	}
	check(target{l.Pod(1, 3).NS, "tcp", noSlice.Spec.ClusterIP, 80})
	check(target{l.Node(2).NS, "tcp", noSlice.Spec.ClusterIP, 80})
	check(target{l.Client.NS, "tcp", l.Node(1).IP, 30082})
	check(target{l.Pod(2, 3).NS, "tcp", emptySlice.Spec.ClusterIP, 80})
	check(target{l.Node(1).NS, "tcp", emptySlice.Spec.ClusterIP, 80})
	check(target{l.Client.NS, "tcp", l.Node(2).IP, 30085})
}

// healthzBody is kube-proxy's /healthz JSON.
type healthzBody struct {
	LastUpdated  time.Time `json:"lastUpdated"`
	CurrentTime  time.Time `json:"currentTime"`
	NodeEligible *bool     `json:"nodeEligible"`
	Healthy      bool      `json:"healthy"`
	Status       map[string]struct {
		LastUpdated time.Time `json:"lastUpdated"`
		Healthy     bool      `json:"healthy"`
	} `json:"status"`
}

// TestHealthzAndMetrics: /healthz on <node IP>:10256 answers 200 with
// kube-proxy's JSON (healthy, node eligible) from outside the node; the
// metrics server answers only on the node's 127.0.0.1:10249 with the sync
// timestamp metric (recent) and /proxyMode "iptables".
func TestHealthzAndMetrics(t *testing.T) {
	e := setup(t)
	l := e.lab
	lastSync := map[string]float64{}
	for _, n := range l.Nodes {
		code, ctype, body, err := httpGetHeader(l.Client.NS, "http://"+n.IP+":10256/healthz")
		if err != nil || code != 200 {
			t.Fatalf("%s /healthz from the client: %d %q %v", n.Name, code, body, err)
		}
		if !strings.HasPrefix(ctype, "application/json") {
			t.Errorf("%s /healthz Content-Type %q, want application/json", n.Name, ctype)
		}
		var h healthzBody
		if err := json.Unmarshal([]byte(body), &h); err != nil {
			t.Fatalf("%s /healthz body %q: %v", n.Name, body, err)
		}
		if !h.Healthy || h.NodeEligible == nil || !*h.NodeEligible || h.CurrentTime.IsZero() || !h.Status["IPv4"].Healthy {
			t.Errorf("%s /healthz: %s; want healthy, nodeEligible, IPv4 healthy, currentTime set", n.Name, body)
		}
		if l.IPv6 && !h.Status["IPv6"].Healthy {
			t.Errorf("%s /healthz: %s; want IPv6 healthy too (dual-stack lab)", n.Name, body)
		}
		if code, body, err := httpGet(l.Client.NS, "http://"+n.IP+":10256/livez"); err != nil || code != 200 {
			t.Errorf("%s /livez: %d %q %v", n.Name, code, body, err)
		}

		metrics, err := lab.ScrapeMetrics(context.Background(), n.NS, lab.MetricsURL)
		if err != nil {
			t.Fatalf("%s /metrics: %v", n.Name, err)
		}
		ts, ok := metrics.Flat(lab.IPv4)["kubeproxy_sync_proxy_rules_last_timestamp_seconds"]
		if !ok {
			t.Fatalf("%s /metrics lacks kubeproxy_sync_proxy_rules_last_timestamp_seconds; it has %v", n.Name, slices.Sorted(maps.Keys(metrics)))
		}
		if age := time.Since(time.Unix(0, int64(ts*1e9))); age < -time.Second {
			t.Errorf("%s: last sync %s in the future", n.Name, -age.Round(time.Millisecond))
		}
		lastSync[n.Name] = ts
		for _, metric := range []string{"kubeproxy_sync_proxy_rules_duration_seconds", "kubeproxy_sync_proxy_rules_iptables_total"} {
			if metrics[metric] == nil {
				t.Errorf("%s /metrics lacks %s", n.Name, metric)
			}
		}
		code, body, err = httpGet(n.NS, "http://127.0.0.1:10249/proxyMode")
		if err != nil || code != 200 || body != "iptables" {
			t.Errorf("%s /proxyMode: %d %q %v; want 200 \"iptables\"", n.Name, code, body, err)
		}
		if code, _, err := httpGet(l.Client.NS, "http://"+n.IP+":10249/metrics"); err == nil {
			t.Errorf("%s: metrics reachable from outside on %s:10249 (%d); want bound to 127.0.0.1 only", n.Name, n.IP, code)
		}
	}
	// Syncs run with no changes too (every sync period): the timestamp
	// moves on. Whether within one period is the machine's business; the
	// wait is bounded only against a sync that never comes.
	for _, n := range l.Nodes {
		start := time.Now()
		err := lab.Poll(context.Background(), converge+3*syncPeriod, 200*time.Millisecond, func() error {
			metrics, err := lab.ScrapeMetrics(context.Background(), n.NS, lab.MetricsURL)
			if err != nil {
				return err
			}
			if ts := metrics.Flat(lab.IPv4)["kubeproxy_sync_proxy_rules_last_timestamp_seconds"]; ts <= lastSync[n.Name] {
				return fmt.Errorf("last sync still at %v", time.Unix(0, int64(ts*1e9)).UTC())
			}
			return nil
		})
		if err != nil {
			t.Errorf("%s: no periodic sync: %v", n.Name, err)
		}
		t.Logf("%s: a periodic sync %s later", n.Name, time.Since(start).Round(time.Millisecond))
	}
}

// TestForeignProxyNameIgnored: a Service labelled
// service.kubernetes.io/service-proxy-name=other (and its slice, as the
// EndpointSlice controller copies the label) gets no rules at all, while
// svcproxy keeps programming other Services. Removing the label hands it to
// svcproxy; putting it back takes it away again.
func TestForeignProxyNameIgnored(t *testing.T) {
	e := setup(t)
	l := e.lab
	const proxyLabel = "service.kubernetes.io/service-proxy-name"
	other := e.createService(t, svcSpec{name: "other", nodePort: 30083, labels: map[string]string{proxyLabel: "other"}}, l.Pod(1, 1), l.Pod(2, 1))
	// A Service created afterwards proves svcproxy has processed events
	// past the foreign one.
	mine := e.createService(t, svcSpec{name: "mine"}, l.Pod(1, 2))
	reachAll(t, target{l.Pod(1, 3).NS, "tcp", mine.Spec.ClusterIP, 80}, "n1-p2")
	reachAll(t, target{l.Pod(2, 3).NS, "tcp", mine.Spec.ClusterIP, 80}, "n1-p2")

	noRules := func(stage string) {
		t.Helper()
		for _, n := range l.Nodes {
			for _, table := range []string{"nat", "filter"} {
				save, err := e.save(n.NS, table)
				if err != nil {
					t.Fatal(err)
				}
				if lines := linesMentioning(save, svcKey("other"), other.Spec.ClusterIP+"/32", "--dport 30083"); len(lines) > 0 {
					t.Fatalf("%s: %s %s rules for the foreign-proxy service:\n%s", stage, n.Name, table, strings.Join(lines, "\n"))
				}
			}
		}
		unanswered(t, target{l.Pod(1, 3).NS, "tcp", other.Spec.ClusterIP, 80}, 500*time.Millisecond)
	}
	noRules("labelled")

	// Hand it over to svcproxy.
	setLabel := func(value string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		svc, err := e.cs.CoreV1().Services(ns).Get(ctx, "other", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if value == "" {
			delete(svc.Labels, proxyLabel)
		} else {
			if svc.Labels == nil {
				svc.Labels = map[string]string{}
			}
			svc.Labels[proxyLabel] = value
		}
		if svc, err = e.cs.CoreV1().Services(ns).Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		e.setEndpoints(t, svc, l.Pod(1, 1), l.Pod(2, 1)) // copies the labels
	}
	setLabel("")
	reachAll(t, target{l.Pod(1, 3).NS, "tcp", other.Spec.ClusterIP, 80}, "n1-p1", "n2-p1")
	reachAll(t, target{l.Client.NS, "tcp", l.Node(2).IP, 30083}, "n1-p1", "n2-p1")

	setLabel("other")
	// The Service and its slices are relabelled by two updates the
	// informers may deliver in either order: slices first leaves the
	// Service with no endpoints for a sync (nat rules gone, filter's
	// REJECT written), so wait for both tables.
	for _, table := range []string{"nat", "filter"} {
		e.waitTable(t, table, "foreign service's rules removed", func(save string) error {
			if lines := linesMentioning(save, svcKey("other")); len(lines) > 0 {
				return fmt.Errorf("%s: %d rules left", table, len(lines))
			}
			return nil
		})
	}
	noRules("labelled again")
	reachAll(t, target{l.Pod(2, 3).NS, "tcp", mine.Spec.ClusterIP, 80}, "n1-p2")
}

// TestNatFlushIsRepaired: `iptables -t nat -F` (chains emptied, canary chain
// still there) and `-F` + `-X` (every chain deleted) inside node1 are both
// repaired within one sync period: ClusterIP traffic and masqueraded NodePort
// traffic work again.
func TestNatFlushIsRepaired(t *testing.T) {
	e := setup(t)
	l := e.lab
	n := l.Node(1)
	svc := e.createService(t, svcSpec{name: "flush", nodePort: 30084}, l.Pod(1, 1), l.Pod(2, 1))
	ip := svc.Spec.ClusterIP
	clusterIP := target{l.Pod(1, 3).NS, "tcp", ip, 80}
	nodePort := target{l.Client.NS, "tcp", n.IP, 30084}
	reachAll(t, clusterIP, "n1-p1", "n2-p1")
	reachAll(t, nodePort, "n1-p1", "n2-p1")

	for _, tc := range []struct {
		name string
		cmds [][]string
	}{
		{"flush", [][]string{{"iptables", "-t", "nat", "-F"}}},
		{"flush-and-delete-chains", [][]string{{"iptables", "-t", "nat", "-F"}, {"iptables", "-t", "nat", "-X"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			for _, argv := range tc.cmds {
				if out, err := lab.Exec(context.Background(), n.NS, argv...); err != nil {
					t.Fatalf("%v: %v: %s", argv, err, out)
				}
			}
			if nat, err := e.save(n.NS, "nat"); err == nil {
				t.Logf("right after %v: %d KUBE- lines in nat", tc.cmds, len(linesMentioning(nat, "KUBE-")))
			}
			var repaired time.Duration
			err := lab.Poll(context.Background(), converge, 20*time.Millisecond, func() error {
				if _, err := clusterIP.probe(300 * time.Millisecond); err != nil {
					return err
				}
				repaired = time.Since(start)
				return nil
			})
			if err != nil {
				t.Fatalf("not repaired: %v", err)
			}
			// Repaired at all (within converge) is the verdict: without
			// the canary only the hourly full sync would repair it. How
			// soon is the machine's business, and only logged.
			t.Logf("traffic back %s after the flush (sync period %s)", repaired.Round(time.Millisecond), syncPeriod)
			reachAll(t, clusterIP, "n1-p1", "n2-p1")
			seen := reachAll(t, nodePort, "n1-p1", "n2-p1")
			if seen[lab.ClientIP] {
				t.Errorf("NodePort after repair not masqueraded: backends saw %v", keys(seen))
			}
			nat, err := e.save(n.NS, "nat")
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(nat, ":KUBE-PROXY-CANARY ") {
				t.Errorf("canary chain not recreated in nat")
			}
		})
	}
}

// TestFilterFlushIsRepaired: "iptables -t filter -F" takes the REJECT rule
// of a Service without endpoints with it; svcproxy notices the missing jump
// into KUBE-SERVICES and puts everything back within one sync period. The
// rule is watched in iptables-save rather than by repeated probes, because
// the kernel rate-limits the ICMP errors a REJECT sends.
func TestFilterFlushIsRepaired(t *testing.T) {
	e := setup(t)
	l := e.lab
	n := l.Node(1)
	svc := e.createService(t, svcSpec{name: "ffempty"})
	e.setEndpoints(t, svc)
	hasReject := func(filter string) error {
		if len(linesMentioning(filter, svcKey("ffempty"))) == 0 {
			return fmt.Errorf("no REJECT rule for %s", svcKey("ffempty"))
		}
		return nil
	}
	e.waitTable(t, "filter", "REJECT rule for ffempty", hasReject)

	start := time.Now()
	if out, err := lab.Exec(context.Background(), n.NS, "iptables", "-t", "filter", "-F"); err != nil {
		t.Fatalf("flush: %v: %s", err, out)
	}
	var repaired time.Duration
	err := lab.Poll(context.Background(), converge, 50*time.Millisecond, func() error {
		filter, err := e.save(n.NS, "filter")
		if err != nil {
			return err
		}
		if err := hasReject(filter); err != nil {
			return err
		}
		if !strings.Contains(filter, "-j KUBE-SERVICES") {
			return fmt.Errorf("filter jumps into KUBE-SERVICES not restored")
		}
		repaired = time.Since(start)
		return nil
	})
	if err != nil {
		t.Fatalf("filter table not repaired: %v", err)
	}
	// Repaired at all (within converge) is the verdict: without the canary
	// only the hourly full sync would; how soon is only logged.
	t.Logf("filter rules back %s after the flush (sync period %s)", repaired.Round(time.Millisecond), syncPeriod)
	if _, err := (target{l.Pod(1, 3).NS, "tcp", svc.Spec.ClusterIP, 80}).probe(3 * time.Second); !lab.IsRefused(err) {
		t.Fatalf("after repair the empty service answers %v, want connection refused", err)
	}
}

// TestAPIServerRestart: with kube-apiserver killed (-9), existing rules keep
// working across more than a sync period; once it is back, svcproxy's
// informers catch up and a Service created then is programmed.
func TestAPIServerRestart(t *testing.T) {
	e := setup(t)
	l := e.lab
	svc := e.createService(t, svcSpec{name: "before"}, l.Pod(1, 1), l.Pod(2, 1))
	doomed := e.createService(t, svcSpec{name: "doomed"}, l.Pod(1, 2))
	for _, client := range []*lab.Pod{l.Pod(1, 3), l.Pod(2, 3)} {
		reachAll(t, target{client.NS, "tcp", svc.Spec.ClusterIP, 80}, "n1-p1", "n2-p1")
		reachAll(t, target{client.NS, "tcp", doomed.Spec.ClusterIP, 80}, "n1-p2")
	}

	if err := e.cp.KillAPIServer(); err != nil {
		t.Fatalf("kill apiserver: %v", err)
	}
	restarted := false
	t.Cleanup(func() {
		if !restarted { // leave a working control plane for the other tests
			if err := e.cp.StartAPIServer(context.Background()); err != nil {
				t.Errorf("restart apiserver: %v", err)
			}
		}
	})
	if err := e.cp.Ready(context.Background()); err == nil {
		t.Fatal("apiserver still ready after kill -9")
	}
	// Keep sending traffic for longer than a sync period: periodic syncs
	// and failing watches must not disturb the rules.
	down := time.Now()
	requests := 0
	for i := 0; i < 200 && time.Since(down) < syncPeriod+2*time.Second; i++ {
		for _, client := range []*lab.Pod{l.Pod(1, 3), l.Pod(2, 3)} {
			r, err := target{client.NS, "tcp", svc.Spec.ClusterIP, 80}.probe(2 * time.Second)
			if err != nil {
				t.Fatalf("apiserver down %s: request from %s failed: %v", time.Since(down).Round(time.Millisecond), client.Name, err)
			}
			if r.Backend != "n1-p1" && r.Backend != "n2-p1" {
				t.Fatalf("apiserver down: answered by %s", r.Backend)
			}
			requests++
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.checkDaemons(t)
	t.Logf("apiserver down for %s: %d requests all answered", time.Since(down).Round(time.Millisecond), requests)
	// Nothing is queued, so the proxy stays healthy without its API server.
	for _, n := range l.Nodes {
		if code, body, err := httpGet(l.Client.NS, "http://"+n.IP+":10256/healthz"); err != nil || code != 200 {
			t.Errorf("%s /healthz with the apiserver down: %d %s %v", n.Name, code, body, err)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := e.cp.StartAPIServer(ctx); err != nil {
		t.Fatalf("start apiserver: %v", err)
	}
	restarted = true
	back := time.Now()
	// Deleted before svcproxy's informers have reconnected: the deletion
	// reaches them by the watch's resumption or by a re-list.
	e.deleteService(t, "doomed")
	after := e.createService(t, svcSpec{name: "after", nodePort: 30086}, l.Pod(1, 2), l.Pod(2, 2))
	// The informers reconnect with client-go's reflector backoff (0.8s
	// doubling to 30s, jittered up to 2x): seen 8-21s after readiness.
	for _, client := range []*lab.Pod{l.Pod(1, 3), l.Pod(2, 3)} {
		reachAllWithin(t, 90*time.Second, target{client.NS, "tcp", after.Spec.ClusterIP, 80}, "n1-p2", "n2-p2")
	}
	t.Logf("new service programmed on both nodes %s after the apiserver was ready", time.Since(back).Round(time.Millisecond))
	// The API server may give doomed's freed cluster IP to the next
	// Service (seen: "after" got it), so the IP is only a sign of doomed's
	// rules when it was not reused.
	doomedMarks := []string{svcKey("doomed")}
	if doomed.Spec.ClusterIP != after.Spec.ClusterIP {
		doomedMarks = append(doomedMarks, doomed.Spec.ClusterIP+"/32")
	}
	e.waitRules(t, "service deleted during the outage removed", func(nat string) error {
		if lines := linesMentioning(nat, doomedMarks...); len(lines) > 0 {
			return fmt.Errorf("%d rules left", len(lines))
		}
		return nil
	})
	reachAll(t, target{l.Pod(1, 3).NS, "tcp", svc.Spec.ClusterIP, 80}, "n1-p1", "n2-p1")
}

// TestGracefulShutdown: SIGTERM makes svcproxy exit 0 and leave its rules
// in place (traffic keeps flowing, even with an endpoint change it missed);
// started again, it catches up with that change.
func TestGracefulShutdown(t *testing.T) {
	e := setup(t)
	l := e.lab
	n := l.Node(1)
	svc := e.createService(t, svcSpec{name: "term"}, l.Pod(1, 1), l.Pod(2, 1))
	ip := svc.Spec.ClusterIP
	client := target{l.Pod(1, 3).NS, "tcp", ip, 80}
	reachAll(t, client, "n1-p1", "n2-p1")
	// The rules at rest: earlier tests' deleted Services leave stale chains
	// that the periodic full syncs delete, which must not be mistaken for
	// rules lost on shutdown.
	natBefore := e.quietSave(t, n, "nat")

	t.Cleanup(func() { // leave a running daemon for the other tests
		if exited, _ := e.daemon(1).Exited(); exited {
			err := e.startDaemon(1)
			if err == nil {
				err = e.waitDaemonReady(1)
			}
			if err != nil {
				t.Errorf("restarting svcproxy: %v", err)
			}
		}
	})
	p := e.daemon(1)
	if err := syscall.Kill(p.Pid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done():
	case <-time.After(15 * time.Second):
		t.Fatalf("svcproxy did not exit within 15s of SIGTERM; log tail:\n%s", p.LogTail(3000))
	}
	if _, err := p.Exited(); err != nil {
		t.Fatalf("svcproxy exit after SIGTERM: %v, want status 0; log tail:\n%s", err, p.LogTail(3000))
	}
	natAfter, err := e.save(n.NS, "nat")
	if err != nil {
		t.Fatal(err)
	}
	if b, a := serviceChains(natBefore, "term"), serviceChains(natAfter, "term"); !maps.Equal(a, b) || len(a) == 0 {
		t.Errorf("service chains before SIGTERM %v, after %v", keys(b), keys(a))
	}
	if lost, added := lineDiff(kubeLines(natBefore), kubeLines(natAfter)); len(lost)+len(added) > 0 {
		t.Errorf("nat table changed on shutdown: lost %d KUBE- lines %q, gained %d %q", len(lost), lost, len(added), added)
	}

	// While node1's proxy is down, traffic flows on its old rules, even
	// though the endpoints change (n2-p1, still running, is replaced).
	e.setEndpoints(t, svc, l.Pod(1, 1), l.Pod(2, 2))
	got, _ := hits(t, client, 20)
	for name := range got {
		if name != "n1-p1" && name != "n2-p1" {
			t.Errorf("node1 proxy down: answered by %s; want the old endpoints only", name)
		}
	}

	if err := e.startDaemon(1); err != nil {
		t.Fatal(err)
	}
	if err := e.waitDaemonReady(1); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{l.Pod(1, 1).IP + ":8080": true, l.Pod(2, 2).IP + ":8080": true}
	e.waitRules(t, "restarted daemon caught up", func(nat string) error {
		if got := dnatTargets(nat, "term"); !maps.Equal(got, want) {
			return fmt.Errorf("DNAT targets %v, want %v", keys(got), keys(want))
		}
		return nil
	})
	got, _ = hits(t, client, 40)
	if got["n2-p1"] > 0 || got["n1-p1"] == 0 || got["n2-p2"] == 0 {
		t.Errorf("after restart: answers %v, want n1-p1 and n2-p2 only", got)
	}
}

// TestStaleUDPFlowMovesAfterEndpointRemoval: a UDP client that keeps its
// source port keeps its conntrack entry. When its endpoint is removed
// through the API, svcproxy deletes the stale entry after the sync, so the
// same flow is answered by a remaining endpoint instead of the removed one
// (whose server is still running, so a stale flow would still get answers).
func TestStaleUDPFlowMovesAfterEndpointRemoval(t *testing.T) {
	e := setup(t)
	l := e.lab
	svc := e.createService(t, svcSpec{name: "udpflow", udp: true}, l.Pod(1, 1), l.Pod(2, 1))
	client := l.Pod(1, 3)
	reachAll(t, target{client.NS, "udp", svc.Spec.ClusterIP, 53}, "n1-p1", "n2-p1")

	pinned := func() string {
		t.Helper()
		r, err := lab.ProbeWith(lab.ProbeSpec{NS: client.NS, Proto: "udp", Addr: svc.Spec.ClusterIP, Port: 53, SourcePort: 40153, Timeout: 2 * time.Second})
		if err != nil {
			t.Fatalf("udp probe from %s:40153: %v", client.IP, err)
		}
		return r.Backend
	}
	first := pinned()
	keep := map[string]*lab.Pod{"n1-p1": l.Pod(2, 1), "n2-p1": l.Pod(1, 1)}[first]
	if keep == nil {
		t.Fatalf("answered by %q, not one of the service's pods", first)
	}
	e.setEndpoints(t, svc, keep)

	err := lab.Poll(context.Background(), converge, 100*time.Millisecond, func() error {
		if got := pinned(); got != keep.Name {
			return fmt.Errorf("flow from source port 40153 still answered by %s", got)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("stale UDP flow never moved off the removed endpoint: %v", err)
	}
	for i := 0; i < 5; i++ {
		if got := pinned(); got != keep.Name {
			t.Fatalf("flow went back to %s", got)
		}
	}
}
