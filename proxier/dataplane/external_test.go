package dataplane

import (
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"

	"github.com/svcproxy/svcproxy/hack/lab"
	"github.com/svcproxy/svcproxy/proxier/model/testobj"
)

// An external IP on a ClusterIP Service, from a real outside client that
// routes the address through one node (as a router in front of the
// cluster would). externalTrafficPolicy: Cluster reaches every endpoint,
// masqueraded; Local reaches only the receiving node's endpoints with the
// client's own address kept, and a node without one drops the packet
// (kube-proxy's behaviour: the router is expected to stop sending there).
// Pods are "internal" even when they use the external IP, so a pod on a
// node without a local endpoint still reaches the cluster's.
func TestExternalIPTrafficPolicy(t *testing.T) {
	e := setup(t)
	const clusterIP, externalIP = "203.0.113.41", "203.0.113.141"
	webC := e.lab.Pod(2, 1) // web-c, node2
	webA := e.lab.Pod(1, 1) // web-a, node1
	port := testobj.TCPPort("http", 8080)
	syncBoth := func(policy v1.ServiceExternalTrafficPolicy, eps ...discovery.Endpoint) {
		t.Helper()
		svc := testobj.Service("demo", "edge", clusterIP, testobj.Port("http", v1.ProtocolTCP, 80), testobj.ExternalIPs(externalIP))
		svc.Spec.ExternalTrafficPolicy = policy
		slice := testobj.Slice("demo", "edge", "edge-1", port, eps...)
		services := append(e.objs.Services[:len(e.objs.Services):len(e.objs.Services)], svc)
		slices := append(e.objs.EndpointSlices[:len(e.objs.EndpointSlices):len(e.objs.EndpointSlices)], slice)
		for _, n := range e.lab.Nodes {
			e.sync(n.Index, services, slices, nil)
		}
	}
	via := func(node int) {
		t.Helper()
		if out, err := e.lab.Exec(e.lab.Client.NS, "ip", "route", "replace", externalIP+"/32", "via", e.lab.Node(node).IP); err != nil {
			t.Fatalf("route %s via node%d: %v: %s", externalIP, node, err, out)
		}
	}
	client := e.lab.Client.NS
	onlyC := testobj.Endpoint(webC.IP, testobj.OnNode("node2"))
	alsoA := testobj.Endpoint(webA.IP, testobj.OnNode("node1"))

	// Control: Cluster policy through node1 reaches node2's endpoint,
	// masqueraded (the reply must come back through node1).
	syncBoth(v1.ServiceExternalTrafficPolicyCluster, onlyC)
	via(1)
	got, seen := hits(t, client, "tcp", externalIP, 80, 10)
	assertNames(t, got, "web-c")
	if seen[lab.ClientIP] {
		t.Errorf("Cluster policy: web-c saw the client's own address; want it masqueraded (saw %v)", keys(seen))
	}

	// Local policy: node1 has no endpoint and drops (no answer, not a
	// refusal); node2 answers with the client's address kept.
	syncBoth(v1.ServiceExternalTrafficPolicyLocal, onlyC)
	if _, _, err := lab.Probe(client, "tcp", externalIP, 80, 2*time.Second); !lab.IsTimeout(err) {
		t.Errorf("Local policy via node1 (no local endpoint): want the packet dropped (timeout), got %v", err)
	}
	via(2)
	got, seen = hits(t, client, "tcp", externalIP, 80, 10)
	assertNames(t, got, "web-c")
	if !seen[lab.ClientIP] || len(seen) != 1 {
		t.Errorf("Local policy via node2: web-c should see the client %s, saw %v", lab.ClientIP, keys(seen))
	}

	// A pod on node1 still reaches the service by its external IP, at
	// node2's endpoint: pod traffic is short-circuited to the cluster
	// endpoints whatever the external policy.
	got, _ = hits(t, e.lab.Pod(1, 4).NS, "tcp", externalIP, 80, 10)
	assertNames(t, got, "web-c")

	// With an endpoint on node1 too, node1 sends outside traffic only to
	// its own, and node2 only to its own.
	syncBoth(v1.ServiceExternalTrafficPolicyLocal, onlyC, alsoA)
	via(1)
	got, seen = hits(t, client, "tcp", externalIP, 80, 20)
	assertNames(t, got, "web-a")
	if !seen[lab.ClientIP] || len(seen) != 1 {
		t.Errorf("Local policy via node1: web-a should see the client %s, saw %v", lab.ClientIP, keys(seen))
	}
	via(2)
	got, _ = hits(t, client, "tcp", externalIP, 80, 20)
	assertNames(t, got, "web-c")
	// Inside the cluster the service's ClusterIP still reaches both.
	got, _ = hits(t, e.lab.Pod(1, 4).NS, "tcp", clusterIP, 80, 60)
	assertNames(t, got, "web-a", "web-c")
}
