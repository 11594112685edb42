package dataplane

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
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
)

// The IPv6 topology, made by the test itself (hack/lab is IPv4 only), on
// documentation addresses (2001:db8::/32) only:
//
//	svp6dp-client  eth0 2001:db8::100/64 ── veth ── eth0 2001:db8::11/64  svp6dp-node1
//	               (the node's upstream router: forwarding off)             cbr0 2001:db8:1::1/64
//	                                                                          ├─ svp6dp-n1-p1  2001:db8:1::2  echo "web6-a"
//	                                                                          ├─ svp6dp-n1-p2  2001:db8:1::3  echo "web6-b"
//	                                                                          └─ svp6dp-n1-p3  2001:db8:1::4  client pod
//
// Service cluster IPs are in 2001:db8:5::/64. The namespace names follow
// hack/lab's pattern, so lab.DownPrefix removes them (and anything running
// in them) even after a crashed run.
const (
	v6Prefix    = "svp6dp"
	v6NodeIP    = "2001:db8::11"
	v6ClientIP  = "2001:db8::100"
	v6PodCIDR   = "2001:db8:1::/64"
	v6Gateway   = "2001:db8:1::1"
	v6WebIP     = "2001:db8:5::10"
	v6EmptyIP   = "2001:db8:5::30"
	v6EchoPort  = 8080
	v6NodePort  = 30080
	v6NodeName  = "node1"
	v6PodPrefix = "2001:db8:1::"
)

type v6pod struct{ ns, ip, name string }

type v6env struct {
	node, client string
	pods         []v6pod // p1, p2: echo backends; p3: the client pod
	ipt          iptables.Interface
}

// TestIPv6 programs an IPv6 snapshot through ip6tables-restore in a node
// namespace and sends real TCP and UDP over IPv6.
func TestIPv6(t *testing.T) {
	e := setupIPv6(t)
	clientPod := e.pods[2]

	t.Run("ClusterIP from a pod reaches both endpoints, keeping the pod's address", func(t *testing.T) {
		for _, proto := range []string{"tcp", "udp"} {
			port := map[string]int{"tcp": 80, "udp": 53}[proto]
			got, seen := hits(t, clientPod.ns, proto, v6WebIP, port, 40)
			assertNames(t, got, "web6-a", "web6-b")
			if len(seen) != 1 || !seen[clientPod.ip] {
				t.Errorf("%s: backends saw %v, want only the pod's own address %s", proto, keys(seen), clientPod.ip)
			}
		}
	})

	t.Run("NodePort from outside is masqueraded", func(t *testing.T) {
		got, seen := hits(t, e.client, "tcp", v6NodeIP, v6NodePort, 40)
		assertNames(t, got, "web6-a", "web6-b")
		if seen[v6ClientIP] {
			t.Errorf("backends saw the client's own address %s; want masquerade (saw %v)", v6ClientIP, keys(seen))
		}
	})

	// The REJECT answers every SYN with an ICMPv6 port unreachable. Here the
	// client's kernel ends the connect on the second one (the retransmit,
	// ~1s; both errors arrive, per the pod's Icmp6InDestUnreachs), so the
	// bound is looser than "at once" but far below the 5s a DROP would take.
	t.Run("a Service without endpoints is refused", func(t *testing.T) {
		start := time.Now()
		_, _, err := lab.Probe(clientPod.ns, "tcp", v6EmptyIP, 80, 5*time.Second)
		if !lab.IsRefused(err) {
			t.Fatalf("want connection refused, got %v", err)
		}
		if took := time.Since(start); took > 2500*time.Millisecond {
			t.Errorf("rejection took %v; a REJECT answers within a SYN retransmission", took)
		}
	})

	t.Run("only ip6tables was written", func(t *testing.T) {
		out, err := lab.Exec(context.Background(), e.node, "iptables-save", "-t", "nat")
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(out), proxier.ChainServices) {
			t.Errorf("the IPv6 interface wrote IPv4 rules:\n%s", out)
		}
		out, err = lab.Exec(context.Background(), e.node, "ip6tables-save", "-t", "nat")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(out), "-d "+v6WebIP+"/128") {
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
	e := &v6env{node: v6Prefix + "-node1", client: v6Prefix + "-client"}
	for i, name := range []string{"web6-a", "web6-b", "client-pod"} {
		e.pods = append(e.pods, v6pod{ns: fmt.Sprintf("%s-n1-p%d", v6Prefix, i+1), ip: fmt.Sprintf("%s%d", v6PodPrefix, i+2), name: name})
	}
	if err := lab.DownPrefix(v6Prefix); err != nil {
		t.Fatalf("removing a previous run's namespaces: %v", err)
	}
	t.Cleanup(func() {
		if err := lab.DownPrefix(v6Prefix); err != nil {
			t.Errorf("removing namespaces: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e.build(ctx, t)

	ipt, err := iptables.New(iptables.NetnsExecutor{Namespace: e.node}, iptables.Options{Family: iptables.IPv6})
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

	logDir := t.TempDir()
	for _, p := range e.pods[:2] {
		e.startEcho(t, p, logDir)
	}
	e.apply(ctx, t)
	return e
}

// build creates the namespaces, links, addresses and routes. Addresses are
// added with nodad: duplicate address detection would make them unusable
// for a second or two.
func (e *v6env) build(ctx context.Context, t *testing.T) {
	t.Helper()
	ip := func(ns string, args ...string) {
		t.Helper()
		if out, err := lab.Exec(ctx, "", append([]string{"ip", "-n", ns}, args...)...); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
	}
	sysctl := func(ns, kv string) error {
		_, err := lab.Exec(ctx, ns, "sysctl", "-q", "-w", kv)
		return err
	}
	for _, ns := range append([]string{e.node, e.client}, e.podNamespaces()...) {
		if out, err := lab.Exec(ctx, "", "ip", "netns", "add", ns); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		ip(ns, "link", "set", "lo", "up")
	}

	ip(e.node, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", e.client)
	ip(e.node, "addr", "add", v6NodeIP+"/64", "dev", "eth0", "nodad")
	ip(e.node, "link", "set", "eth0", "up")
	ip(e.client, "addr", "add", v6ClientIP+"/64", "dev", "eth0", "nodad")
	ip(e.client, "link", "set", "eth0", "up")
	// Like the lab's sink: the node needs a route covering the service
	// range, or its connections fail before DNAT and a REJECT is never
	// reached. The client does not forward, so nothing leaves.
	ip(e.node, "-6", "route", "add", "default", "via", v6ClientIP, "dev", "eth0")

	ip(e.node, "link", "add", "cbr0", "type", "bridge", "mcast_snooping", "0")
	ip(e.node, "addr", "add", v6Gateway+"/64", "dev", "cbr0", "nodad")
	ip(e.node, "link", "set", "cbr0", "up")
	for i, p := range e.pods {
		veth := fmt.Sprintf("vp%d", i+1)
		ip(e.node, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", p.ns)
		ip(e.node, "link", "set", veth, "master", "cbr0")
		ip(e.node, "link", "set", veth, "up")
		ip(p.ns, "addr", "add", p.ip+"/64", "dev", "eth0", "nodad")
		ip(p.ns, "link", "set", "eth0", "up")
		ip(p.ns, "-6", "route", "add", "default", "via", v6Gateway, "dev", "eth0")
	}
	if err := sysctl(e.node, "net.ipv6.conf.all.forwarding=1"); err != nil {
		t.Fatal(err)
	}
	// A reply from one pod to another on the same bridge must pass the
	// node's conntrack to be un-DNATed, as in the lab (IPv4) and in a
	// CNI bridge setup.
	if err := sysctl(e.node, "net.bridge.bridge-nf-call-ip6tables=1"); err != nil {
		t.Skipf("IPv6 dataplane test needs br_netfilter in namespaces (net.bridge.bridge-nf-call-ip6tables): %v", err)
	}
}

func (e *v6env) podNamespaces() []string {
	var out []string
	for _, p := range e.pods {
		out = append(out, p.ns)
	}
	return out
}

// startEcho starts an IPv6-only echo server (TCP and UDP) in pod p and waits,
// bounded, until it answers on ::1 over both.
func (e *v6env) startEcho(t *testing.T, p v6pod, logDir string) {
	t.Helper()
	bin, err := lab.EchoServerBinary()
	if err != nil {
		t.Fatal(err)
	}
	proc, err := lab.Start(p.ns, filepath.Join(logDir, p.name+".log"), bin, "--name", p.name, "--port", fmt.Sprint(v6EchoPort), "--addr", "::")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proc.Stop() })
	for _, proto := range []string{"tcp", "udp"} {
		ok, _, lastErr := lab.WaitProbe(lab.ProbeSpec{NS: p.ns, Proto: proto, Addr: "::1", Port: v6EchoPort, Timeout: 500 * time.Millisecond},
			10*time.Second, func(r lab.ProbeResult, err error) bool { return err == nil && r.Backend == p.name })
		if !ok {
			t.Fatalf("echo server %s in %s not answering %s on [::1]:%d: %v\n%s", p.name, p.ns, proto, v6EchoPort, lastErr, proc.LogTail(2000))
		}
	}
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
			Addresses: []string{p.ip}, NodeName: ptr.To(v6NodeName),
			Conditions: discovery.EndpointConditions{Ready: ptr.To(true)},
		})
	}
	snap, err := proxier.BuildSnapshot([]*v1.Service{web, empty}, []*discovery.EndpointSlice{slice}, v1.IPv6Protocol)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &proxier.NodeConfig{
		Family:        v1.IPv6Protocol,
		Topology:      proxier.Topology{NodeName: v6NodeName},
		NodeIPs:       []netip.Addr{netip.MustParseAddr(v6NodeIP)},
		MasqueradeBit: 14,
		LocalDetector: proxier.DetectByCIDR(netip.MustParsePrefix(v6PodCIDR)),
		RandomFully:   e.ipt.HasRandomFully(),
	}
	if _, err := proxier.Apply(ctx, e.ipt, proxier.ApplyRequest{Snapshot: snap, Config: cfg, Full: true}); err != nil {
		t.Fatalf("apply in %s: %v", e.node, err)
	}
}
