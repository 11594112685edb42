package dataplane

import (
	"context"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/svcproxy/svcproxy/hack/lab"
	"github.com/svcproxy/svcproxy/iptables"
	"github.com/svcproxy/svcproxy/proxier"
	"github.com/svcproxy/svcproxy/proxier/model"
	"github.com/svcproxy/svcproxy/proxier/rules"
)

// The IPv6 half of the lab (hack/lab is dual-stack), one node:
//
//	<lab>-client  2001:db8::100 ── br0 ── 2001:db8::11  <lab>-node1 (default route to the sink, 2001:db8::1)
//	                                                      cbr0 2001:db8:1:1::1/64
//	                                                        ├─ <lab>-n1-p1  2001:db8:1:1::2  echo "web6-a"
//	                                                        ├─ <lab>-n1-p2  2001:db8:1:1::3  echo "web6-b"
//	                                                        └─ <lab>-n1-p3  2001:db8:1:1::4  client pod
//
// Service cluster IPs are in the lab's IPv6 service range, 2001:db8:5::/108.
const (
	v6WebIP    = "2001:db8:5::10"
	v6EmptyIP  = "2001:db8:5::30"
	v6EchoPort = 8080
	v6NodePort = 30080
)

type v6env struct {
	lab  *lab.Lab
	node *lab.Node
	pods []*lab.Pod // p1, p2: echo backends; p3: the client pod
	ipt  iptables.Interface
}

// TestIPv6 programs an IPv6 snapshot through ip6tables-restore in a node
// namespace and sends real TCP and UDP over IPv6.
func TestIPv6(t *testing.T) {
	e := setupIPv6(t)
	clientPod := e.pods[2]
	nodeIP, clientIP := e.node.IP6, e.lab.Client.IP6

	t.Run("ClusterIP from a pod reaches both endpoints, keeping the pod's address", func(t *testing.T) {
		for _, proto := range []string{"tcp", "udp"} {
			port := map[string]int{"tcp": 80, "udp": 53}[proto]
			got, seen := hits(t, clientPod.NS, proto, v6WebIP, port, 40)
			assertNames(t, got, "web6-a", "web6-b")
			if len(seen) != 1 || !seen[clientPod.IP6] {
				t.Errorf("%s: backends saw %v, want only the pod's own address %s", proto, keys(seen), clientPod.IP6)
			}
		}
	})

	t.Run("NodePort from outside is masqueraded", func(t *testing.T) {
		got, seen := hits(t, e.lab.Client.NS, "tcp", nodeIP, v6NodePort, 40)
		assertNames(t, got, "web6-a", "web6-b")
		if seen[clientIP] {
			t.Errorf("backends saw the client's own address %s; want masquerade (saw %v)", clientIP, keys(seen))
		}
	})

	// The REJECT answers every SYN with an ICMPv6 port unreachable. Here the
	// client's kernel ends the connect on the second one (the retransmit,
	// ~1s; both errors arrive, per the pod's Icmp6InDestUnreachs), so the
	// bound is looser than "at once" but far below the 5s a DROP would take.
	t.Run("a Service without endpoints is refused", func(t *testing.T) {
		start := time.Now()
		_, _, err := lab.Probe(clientPod.NS, "tcp", v6EmptyIP, 80, 5*time.Second)
		if !lab.IsRefused(err) {
			t.Fatalf("want connection refused, got %v", err)
		}
		// Refused, not timed out, is what tells a REJECT from a DROP; how
		// long it took is the machine's business.
		t.Logf("refused after %v", time.Since(start).Round(time.Millisecond))
	})

	t.Run("only ip6tables was written", func(t *testing.T) {
		out, err := lab.SaveTable(context.Background(), e.node.NS, lab.IPv4, "nat")
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(out, rules.ChainServices) {
			t.Errorf("the IPv6 interface wrote IPv4 rules:\n%s", out)
		}
		out, err = lab.SaveTable(context.Background(), e.node.NS, lab.IPv6, "nat")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "-d "+v6WebIP+"/128") {
			t.Errorf("ip6tables nat lacks the cluster IP rule:\n%s", out)
		}
	})
}

func setupIPv6(t *testing.T) *v6env {
	t.Helper()
	if err := lab.Available(); err != nil {
		t.Skipf("IPv6 dataplane test needs network namespaces: %v", err)
	}
	if _, err := exec.LookPath("ip6tables"); err != nil {
		t.Skipf("IPv6 dataplane test needs ip6tables: %v", err)
	}
	l := upLab(t, "svp6d", 1, 3)
	if !l.IPv6 {
		t.Skip("IPv6 dataplane test needs the lab's IPv6 addresses: the kernel has no IPv6")
	}
	// A reply from one pod to another on the same bridge must pass the
	// node's conntrack to be un-DNATed, as in the lab (IPv4) and in a
	// CNI bridge setup.
	if !l.BridgeNetfilter6 {
		t.Skip("IPv6 dataplane test needs br_netfilter in namespaces (net.bridge.bridge-nf-call-ip6tables)")
	}
	e := &v6env{lab: l, node: l.Node(1), pods: []*lab.Pod{l.Pod(1, 1), l.Pod(1, 2), l.Pod(1, 3)}}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	ipt, err := iptables.New(iptables.NetnsExecutor{Namespace: e.node.NS}, iptables.Options{Family: iptables.IPv6})
	if err == nil {
		_, err = ipt.Save(ctx, iptables.TableNAT)
	}
	if err != nil {
		t.Skipf("ip6tables cannot be used in a network namespace here: %v", err)
	}
	if !ipt.IsIPv6() {
		t.Fatal("iptables.New with Family IPv6 returned an IPv4 interface")
	}
	e.ipt = ipt

	// IPv6-only echo servers (TCP and UDP); StartEchoArgs waits until they
	// answer on [::1] over both.
	for i, name := range []string{"web6-a", "web6-b"} {
		p, err := l.StartEchoArgs(e.pods[i].NS, name, v6EchoPort, "--addr", "::")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = p.Stop() })
	}
	e.apply(ctx, t)
	return e
}

// apply renders web6 (a NodePort Service with TCP and UDP ports, endpoints
// in p1 and p2) and empty6 (no endpoints) for IPv6 and applies them as the
// daemon's IPv6 Proxier does.
func (e *v6env) apply(ctx context.Context, t *testing.T) {
	t.Helper()
	ipv6 := []v1.IPFamily{v1.IPv6Protocol}
	web := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "web6"},
		Spec: v1.ServiceSpec{
			Type: v1.ServiceTypeNodePort, ClusterIP: v6WebIP, ClusterIPs: []string{v6WebIP}, IPFamilies: ipv6,
			Ports: []v1.ServicePort{
				{Name: "http", Protocol: v1.ProtocolTCP, Port: 80, NodePort: v6NodePort},
				{Name: "dns", Protocol: v1.ProtocolUDP, Port: 53, NodePort: v6NodePort},
			},
		},
	}
	empty := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "empty6"},
		Spec: v1.ServiceSpec{
			Type: v1.ServiceTypeClusterIP, ClusterIP: v6EmptyIP, ClusterIPs: []string{v6EmptyIP}, IPFamilies: ipv6,
			Ports: []v1.ServicePort{{Name: "http", Protocol: v1.ProtocolTCP, Port: 80}},
		},
	}
	slice := &discovery.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "demo", Name: "web6-1", Labels: map[string]string{discovery.LabelServiceName: "web6"}},
		AddressType: discovery.AddressTypeIPv6,
		Ports: []discovery.EndpointPort{
			{Name: ptr.To("http"), Protocol: ptr.To(v1.ProtocolTCP), Port: ptr.To(int32(v6EchoPort))},
			{Name: ptr.To("dns"), Protocol: ptr.To(v1.ProtocolUDP), Port: ptr.To(int32(v6EchoPort))},
		},
	}
	for _, p := range e.pods[:2] {
		slice.Endpoints = append(slice.Endpoints, discovery.Endpoint{
			Addresses: []string{p.IP6}, NodeName: ptr.To(e.node.Name),
			Conditions: discovery.EndpointConditions{Ready: ptr.To(true)},
		})
	}
	snap, err := model.BuildSnapshot([]*v1.Service{web, empty}, []*discovery.EndpointSlice{slice}, v1.IPv6Protocol)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &rules.NodeConfig{
		Family:        v1.IPv6Protocol,
		Topology:      model.Topology{NodeName: e.node.Name},
		NodeIPs:       []netip.Addr{netip.MustParseAddr(e.node.IP6)},
		MasqueradeBit: 14,
		LocalDetector: rules.DetectByCIDR(netip.MustParsePrefix(lab.PodNetwork6)),
		RandomFully:   e.ipt.HasRandomFully(),
	}
	if _, err := proxier.Apply(ctx, e.ipt, proxier.ApplyRequest{Snapshot: snap, Config: cfg, Full: true}); err != nil {
		t.Fatalf("apply in %s: %v", e.node.NS, err)
	}
}
