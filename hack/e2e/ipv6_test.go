package e2e

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/svcproxy/svcproxy/hack/lab"
)

// IPv6 and dual-stack Services end to end. The lab is dual-stack (hack/lab):
//
//	node1: 2001:db8::11  pods n1-p1 2001:db8:1:1::2  n1-p2 ::3  n1-p3 ::4
//	node2: 2001:db8::12  pods n2-p1 2001:db8:1:2::2  n2-p2 ::3  n2-p3 ::4
//	client 2001:db8::100; cluster IPs from 2001:db8:5::/108
//
// Every pod runs an IPv6 echo server next to its IPv4 one (same name and
// port), the Nodes carry both families and svcproxy runs with both pod
// networks in --cluster-cidr, as in a dual-stack cluster.

var (
	ipv6Only  = []corev1.IPFamily{corev1.IPv6Protocol}
	dualStack = []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}
)

// setupIPv6 is setup for a test that needs the lab's IPv6 half.
func setupIPv6(t *testing.T) *env {
	t.Helper()
	e := setup(t)
	if !e.lab.IPv6 {
		t.Skip("the lab is IPv4 only (the kernel has no IPv6)")
	}
	if !e.lab.BridgeNetfilter6 {
		t.Log("warning: bridge-nf-call-ip6tables is off in the node namespaces; same-node IPv6 traffic may misbehave")
	}
	return e
}

// clusterIPOf returns svc's cluster IP of family, failing t if it has none.
func clusterIPOf(t *testing.T, svc *corev1.Service, family lab.Family) string {
	t.Helper()
	for _, s := range svc.Spec.ClusterIPs {
		if ip, err := netip.ParseAddr(s); err == nil && (ip.Is6() == (family == lab.IPv6)) {
			return s
		}
	}
	t.Fatalf("service %s: no %s cluster IP in %v", svc.Name, family, svc.Spec.ClusterIPs)
	return ""
}

// podIP is p's address of family.
func podIP(p *lab.Pod, family lab.Family) string {
	if family == lab.IPv6 {
		return p.IP6
	}
	return p.IP
}

// expectMasqueraded fails t unless node n masqueraded the traffic each
// backend saw (byBackend, from reachAllByBackend) to the address of its way
// out, in family: the node's own endpoints see its pod bridge address, the
// other node's see its node-network address; never the real client's.
func expectMasqueraded(t *testing.T, what string, n *lab.Node, family lab.Family, byBackend map[string]map[string]bool) {
	t.Helper()
	bridge, eth0 := n.BridgeIP, n.IP
	if family == lab.IPv6 {
		bridge, eth0 = n.BridgeIP6, n.IP6
	}
	for backend, seen := range byBackend {
		want := eth0
		if strings.HasPrefix(backend, fmt.Sprintf("n%d-", n.Index)) { // on n
			want = bridge
		}
		if len(seen) != 1 || !seen[want] {
			t.Errorf("%s: %s saw client %v, want %s (masqueraded by %s)", what, backend, keys(seen), want, n.Name)
		}
	}
}

// dnatTo is how iptables-save writes a DNAT to pod p's port echoPort in
// family ("[2001:db8:1:1::2]:8080" for IPv6).
func dnatTo(p *lab.Pod, family lab.Family) string {
	return net.JoinHostPort(podIP(p, family), itoa(echoPort))
}

// expectClients fails t unless every client address the backends saw (seen)
// is one of want.
func expectClients(t *testing.T, what string, seen map[string]bool, want ...string) {
	t.Helper()
	for c := range seen {
		if !slices.Contains(want, c) {
			t.Errorf("%s: backends saw client %s, want one of %v (saw %v)", what, c, want, keys(seen))
		}
	}
}

// TestIPv6ClusterIPAndNodePort: an IPv6 single-stack Service with an
// endpoint on each node answers over TCP and UDP on its IPv6 cluster IP from
// a pod on each node (the backends see the pod's own IPv6 address), from an
// endpoint pod itself (hairpin: masqueraded when it reaches itself), from
// each node (masqueraded to an IPv6 address of that node), and on its
// NodePort on each node's IPv6 address from the outside client
// (masqueraded: never 2001:db8::100) and from the node itself. svcproxy writes its rules in
// ip6tables only.
func TestIPv6ClusterIPAndNodePort(t *testing.T) {
	e := setupIPv6(t)
	l := e.lab
	svc := e.createService(t, svcSpec{name: "web6", udp: true, nodePort: 30090, families: ipv6Only}, l.Pod(1, 1), l.Pod(2, 1))
	ip := clusterIPOf(t, svc, lab.IPv6)
	if !netip.MustParsePrefix(lab.ServiceCIDR6).Contains(netip.MustParseAddr(ip)) || len(svc.Spec.ClusterIPs) != 1 {
		t.Fatalf("cluster IPs %v, want one from %s", svc.Spec.ClusterIPs, lab.ServiceCIDR6)
	}
	want := []string{"n1-p1", "n2-p1"}

	for _, client := range []*lab.Pod{l.Pod(1, 3), l.Pod(2, 3)} {
		seen := reachAll(t, target{client.NS, "tcp", ip, 80}, want...)
		expectClients(t, "pod "+client.Name+" -> IPv6 cluster IP (tcp)", seen, client.IP6)
		seen = reachAll(t, target{client.NS, "udp", ip, 53}, want...)
		expectClients(t, "pod "+client.Name+" -> IPv6 cluster IP (udp)", seen, client.IP6)
	}
	self := l.Pod(1, 1)
	byBackend := reachAllByBackend(t, converge, target{self.NS, "tcp", ip, 80}, want...)
	if seen := byBackend[self.Name]; len(seen) != 1 || !seen[l.Node(1).BridgeIP6] {
		t.Errorf("hairpin: %s reaching itself saw client %v, want %s (masqueraded by node1)", self.Name, keys(seen), l.Node(1).BridgeIP6)
	}
	if seen := byBackend["n2-p1"]; len(seen) != 1 || !seen[self.IP6] {
		t.Errorf("%s -> n2-p1 saw client %v, want the pod's own %s", self.Name, keys(seen), self.IP6)
	}

	// A node's own traffic to a cluster IP comes from outside the pod
	// network (--cluster-cidr): masqueraded, as is all NodePort traffic
	// with externalTrafficPolicy Cluster.
	for _, n := range l.Nodes {
		byBackend := reachAllByBackend(t, converge, target{n.NS, "tcp", ip, 80}, want...)
		expectMasqueraded(t, "node "+n.Name+" -> IPv6 cluster IP", &n, lab.IPv6, byBackend)
	}
	for _, n := range l.Nodes {
		byBackend := reachAllByBackend(t, converge, target{l.Client.NS, "tcp", n.IP6, 30090}, want...)
		expectMasqueraded(t, "client -> NodePort on "+n.Name+"'s IPv6 address", &n, lab.IPv6, byBackend)
		byBackend = reachAllByBackend(t, converge, target{n.NS, "tcp", n.IP6, 30090}, want...)
		expectMasqueraded(t, n.Name+" -> its own IPv6 NodePort", &n, lab.IPv6, byBackend)
	}

	for _, n := range l.Nodes {
		nat6, err := e.saveFamily(lab.IPv6, n.NS, "nat")
		if err != nil {
			t.Fatal(err)
		}
		wantDNAT := map[string]bool{dnatTo(l.Pod(1, 1), lab.IPv6): true, dnatTo(l.Pod(2, 1), lab.IPv6): true}
		if got := dnatTargets(nat6, "web6"); !maps.Equal(got, wantDNAT) {
			t.Errorf("%s: ip6tables DNAT targets %v, want %v", n.Name, keys(got), keys(wantDNAT))
		}
		nat4, err := e.save(n.NS, "nat")
		if err != nil {
			t.Fatal(err)
		}
		if lines := linesMentioning(nat4, svcKey("web6"), "--dport 30090"); len(lines) > 0 {
			t.Errorf("%s: IPv4 rules for an IPv6-only Service:\n%s", n.Name, strings.Join(lines, "\n"))
		}
	}
}

// TestIPv6NodePortLocalPolicy: with externalTrafficPolicy Local, an IPv6
// NodePort is answered only by the endpoints on the node that was hit, and
// they see the outside client's own address 2001:db8::100 (no masquerade),
// on both nodes. A pod (source in --cluster-cidr) is not an external
// client: as with kube-proxy, its traffic to the NodePort of its own node
// goes to every endpoint of the Service, keeping its address. Once node2
// has no endpoint left, its IPv6 NodePort drops (ip6tables filter).
func TestIPv6NodePortLocalPolicy(t *testing.T) {
	e := setupIPv6(t)
	l := e.lab
	svc := e.createService(t, svcSpec{name: "local6", nodePort: 30091, local: true, families: ipv6Only}, l.Pod(1, 1), l.Pod(1, 2), l.Pod(2, 1))
	local := map[int][]string{1: {"n1-p1", "n1-p2"}, 2: {"n2-p1"}}
	for _, n := range l.Nodes {
		g := target{l.Client.NS, "tcp", n.IP6, 30091}
		seen := reachAll(t, g, local[n.Index]...) // fails on any non-local answer
		got, more := hits(t, g, 20)
		for name := range got {
			if !slices.Contains(local[n.Index], name) {
				t.Errorf("%s: answered by %s, want only %s's endpoints %v (all answers: %v)", g, name, n.Name, local[n.Index], got)
			}
		}
		maps.Copy(seen, more)
		expectClients(t, "externalTrafficPolicy Local via "+n.Name, seen, lab.ClientIP6)
		t.Logf("%s: 20 requests answered by %v, client seen as %v", g, got, keys(seen))
	}
	client := l.Pod(2, 3)
	seen := reachAll(t, target{client.NS, "tcp", l.Node(2).IP6, 30091}, "n1-p1", "n1-p2", "n2-p1")
	expectClients(t, "pod "+client.Name+" -> Local NodePort of its node", seen, client.IP6)

	e.setEndpoints(t, svc, l.Pod(1, 1), l.Pod(1, 2))
	// Without rules node2 would refuse (closed port): wait for the DROP.
	e.waitNodeFamilyTable(t, lab.IPv6, l.Node(2), "filter", "no-local-endpoints verdict", func(filter string) error {
		for _, line := range linesMentioning(filter, svcKey("local6")) {
			if strings.Contains(line, "--dport 30091") && strings.Contains(line, "-j DROP") {
				return nil
			}
		}
		return fmt.Errorf("no DROP rule for the NodePort yet")
	})
	err := unanswered(t, target{l.Client.NS, "tcp", l.Node(2).IP6, 30091}, 700*time.Millisecond)
	if !lab.IsTimeout(err) {
		t.Errorf("IPv6 NodePort on node2 (no local endpoints): %v; want a timeout (DROP)", err)
	}
	t.Logf("IPv6 NodePort on node2 without local endpoints: %v", err)
	seen = reachAll(t, target{l.Client.NS, "tcp", l.Node(1).IP6, 30091}, "n1-p1", "n1-p2")
	expectClients(t, "externalTrafficPolicy Local via node1 after the change", seen, lab.ClientIP6)
}

// TestDualStackService: a RequireDualStack Service gets a cluster IP of each
// family; with one EndpointSlice per family, both cluster IPs answer from
// pods on both nodes (each backend sees the pod's address of that family),
// and its NodePort answers the outside client on every node's IPv4 and IPv6
// address, masqueraded in each family. Each family's DNAT rules name that
// family's pod addresses. An endpoint change (both slices updated) moves
// the traffic of both cluster IPs.
func TestDualStackService(t *testing.T) {
	e := setupIPv6(t)
	l := e.lab
	svc := e.createService(t, svcSpec{name: "dual", nodePort: 30092, families: dualStack}, l.Pod(1, 1), l.Pod(2, 2))
	if len(svc.Spec.ClusterIPs) != 2 {
		t.Fatalf("dual-stack Service got cluster IPs %v, want one per family", svc.Spec.ClusterIPs)
	}
	want := []string{"n1-p1", "n2-p2"}
	for _, family := range []lab.Family{lab.IPv4, lab.IPv6} {
		ip := clusterIPOf(t, svc, family)
		for _, client := range []*lab.Pod{l.Pod(1, 3), l.Pod(2, 3)} {
			seen := reachAll(t, target{client.NS, "tcp", ip, 80}, want...)
			expectClients(t, fmt.Sprintf("pod %s -> %s cluster IP", client.Name, family), seen, podIP(client, family))
		}
	}
	for _, n := range l.Nodes {
		for _, family := range []lab.Family{lab.IPv4, lab.IPv6} {
			addr := n.IP
			if family == lab.IPv6 {
				addr = n.IP6
			}
			byBackend := reachAllByBackend(t, converge, target{l.Client.NS, "tcp", addr, 30092}, want...)
			expectMasqueraded(t, fmt.Sprintf("client -> NodePort on %s's %s address", n.Name, family), &n, family, byBackend)
		}
	}
	waitDNAT := func(pods ...*lab.Pod) {
		t.Helper()
		for _, family := range []lab.Family{lab.IPv4, lab.IPv6} {
			wantDNAT := map[string]bool{}
			for _, p := range pods {
				wantDNAT[dnatTo(p, family)] = true
			}
			e.waitFamilyTable(t, family, "nat", "dual-stack DNAT targets", func(nat string) error {
				if got := dnatTargets(nat, "dual"); !maps.Equal(got, wantDNAT) {
					return fmt.Errorf("DNAT targets %v, want %v", keys(got), keys(wantDNAT))
				}
				if stale := orphanChains(nat); len(stale) > 0 {
					return fmt.Errorf("stale chains nothing jumps to: %v", stale)
				}
				return nil
			})
		}
	}
	waitDNAT(l.Pod(1, 1), l.Pod(2, 2))

	e.setEndpoints(t, svc, l.Pod(1, 2), l.Pod(2, 1))
	waitDNAT(l.Pod(1, 2), l.Pod(2, 1))
	for _, family := range []lab.Family{lab.IPv4, lab.IPv6} {
		g := target{l.Pod(1, 3).NS, "tcp", clusterIPOf(t, svc, family), 80}
		got, _ := hits(t, g, 30)
		if got["n1-p1"]+got["n2-p2"] > 0 || got["n1-p2"] == 0 || got["n2-p1"] == 0 {
			t.Errorf("%s after the endpoint change: answers %v, want n1-p2 and n2-p1 only, both used", g, got)
		}
		t.Logf("%s after the endpoint change: 30 requests answered by %v", g, got)
	}
}

// TestIPv6EndpointChange: endpoint changes made through the API reach the
// IPv6 side. Replacing both endpoints rewrites the ip6tables rules (new
// DNAT targets, no stale chains) and moves all new traffic; a UDP flow
// pinned to a removed endpoint (same source port, same conntrack entry)
// moves to the remaining one once svcproxy has deleted its IPv6 conntrack
// entry.
func TestIPv6EndpointChange(t *testing.T) {
	e := setupIPv6(t)
	l := e.lab
	svc := e.createService(t, svcSpec{name: "move6", udp: true, families: ipv6Only}, l.Pod(1, 1), l.Pod(2, 1))
	ip := clusterIPOf(t, svc, lab.IPv6)
	clients := []*lab.Pod{l.Pod(1, 3), l.Pod(2, 3)}
	for _, client := range clients {
		reachAll(t, target{client.NS, "tcp", ip, 80}, "n1-p1", "n2-p1")
	}

	// Replace both endpoints.
	e.setEndpoints(t, svc, l.Pod(1, 2), l.Pod(2, 2))
	wantDNAT := map[string]bool{dnatTo(l.Pod(1, 2), lab.IPv6): true, dnatTo(l.Pod(2, 2), lab.IPv6): true}
	e.waitFamilyTable(t, lab.IPv6, "nat", "new IPv6 endpoints programmed", func(nat string) error {
		if got := dnatTargets(nat, "move6"); !maps.Equal(got, wantDNAT) {
			return fmt.Errorf("DNAT targets %v, want %v", keys(got), keys(wantDNAT))
		}
		if stale := orphanChains(nat); len(stale) > 0 {
			return fmt.Errorf("stale chains nothing jumps to: %v", stale)
		}
		return nil
	})
	for _, client := range clients {
		got, seen := hits(t, target{client.NS, "tcp", ip, 80}, 40)
		if got["n1-p1"]+got["n2-p1"] > 0 || got["n1-p2"] == 0 || got["n2-p2"] == 0 {
			t.Errorf("from %s after the change: answers %v, want n1-p2 and n2-p2 only, both used", client.Name, got)
		}
		expectClients(t, "pod "+client.Name+" after the change", seen, client.IP6)
		t.Logf("from %s after the change: 40 requests answered by %v", client.Name, got)
	}

	// A pinned UDP flow moves off a removed endpoint.
	client := l.Pod(1, 3)
	pinned := func() string {
		t.Helper()
		r, err := lab.ProbeWith(lab.ProbeSpec{NS: client.NS, Proto: "udp", Addr: ip, Port: 53, SourcePort: 40653, Timeout: 2 * time.Second})
		if err != nil {
			t.Fatalf("udp probe from [%s]:40653: %v", client.IP6, err)
		}
		return r.Backend
	}
	first := pinned()
	keep := map[string]*lab.Pod{"n1-p2": l.Pod(2, 2), "n2-p2": l.Pod(1, 2)}[first]
	if keep == nil {
		t.Fatalf("pinned flow answered by %q, not one of the service's pods", first)
	}
	for i := 0; i < 3; i++ {
		if got := pinned(); got != first {
			t.Fatalf("pinned flow answered by %s, then %s: not pinned", first, got)
		}
	}
	e.setEndpoints(t, svc, keep)
	moved := time.Now()
	err := lab.Poll(context.Background(), converge, 100*time.Millisecond, func() error {
		if got := pinned(); got != keep.Name {
			return fmt.Errorf("flow from source port 40653 still answered by %s", got)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("stale IPv6 UDP flow never moved off the removed endpoint %s: %v", first, err)
	}
	t.Logf("pinned UDP flow moved from %s to %s %s after the endpoint change", first, keep.Name, time.Since(moved).Round(time.Millisecond))
	for i := 0; i < 5; i++ {
		if got := pinned(); got != keep.Name {
			t.Fatalf("flow went back to %s", got)
		}
	}
}
