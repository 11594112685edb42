package lab_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/svcproxy/svcproxy/hack/lab"
)

const (
	echoPort  = 8080
	echoPort6 = 8086 // IPv6 echo servers ("--addr ::") beside the IPv4 ones
)

// rootLinks lists interface names of the test process's (root) namespace.
func rootLinks(t *testing.T) []string {
	t.Helper()
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, i := range ifs {
		names = append(names, i.Name)
	}
	sort.Strings(names)
	return names
}

// rootIPs lists the root namespace's addresses other than loopback (and,
// for IPv6, link-local: such an address names no host outside its link).
func rootIPs(t *testing.T) (v4, v6 []string) {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		switch {
		case !ok || ipn.IP.IsLoopback():
		case ipn.IP.To4() != nil:
			v4 = append(v4, ipn.IP.String())
		case !ipn.IP.IsLinkLocalUnicast():
			v6 = append(v6, ipn.IP.String())
		}
	}
	return v4, v6
}

// upLab brings up a lab for t whose prefix is stem + this process's pid
// (lab.RunPrefix), torn down when t ends.
func upLab(t *testing.T, stem string, o lab.Options) *lab.Lab {
	t.Helper()
	var err error
	if o.Prefix, err = lab.RunPrefix(stem); err != nil {
		t.Fatal(err)
	}
	o.StateDir = t.TempDir()
	o.Logf = t.Logf
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l, err := lab.Up(ctx, o)
	if err != nil {
		t.Fatalf("lab.Up: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Down(); err != nil {
			t.Errorf("Down: %v", err)
		}
		left, _ := lab.ListNamespaces(l.Prefix)
		if len(left) > 0 {
			t.Errorf("namespaces left after Down: %v", left)
		}
	})
	return l
}

func TestPlanAddresses(t *testing.T) {
	l, err := lab.Plan(lab.Options{Prefix: "x", Nodes: 3, PodsPerNode: 3})
	if err != nil {
		t.Fatal(err)
	}
	want := []struct{ ns, ip, cidr, gw, pod1 string }{
		{"x-node1", "192.0.2.11", "198.51.100.0/26", "198.51.100.1", "198.51.100.2"},
		{"x-node2", "192.0.2.12", "198.51.100.64/26", "198.51.100.65", "198.51.100.66"},
		{"x-node3", "192.0.2.13", "198.51.100.128/26", "198.51.100.129", "198.51.100.130"},
	}
	for i, w := range want {
		n := l.Nodes[i]
		if n.NS != w.ns || n.IP != w.ip || n.PodCIDR != w.cidr || n.BridgeIP != w.gw || n.Pods[0].IP != w.pod1 {
			t.Errorf("node %d = %+v, want %+v", i+1, n, w)
		}
		if got, wantNS := n.Pods[2].NS, fmt.Sprintf("x-n%d-p3", i+1); got != wantNS {
			t.Errorf("pod ns = %q", got)
		}
	}
	if l.Sink.IP != "192.0.2.1" || l.CP.IP != "192.0.2.10" || l.Client.IP != "192.0.2.100" || l.CP.NS != "x-cp" {
		t.Errorf("infra hosts wrong: %+v %+v %+v", l.Sink, l.CP, l.Client)
	}
	want6 := []struct{ ip, cidr, gw, pod1 string }{
		{"2001:db8::11", "2001:db8:1:1::/64", "2001:db8:1:1::1", "2001:db8:1:1::2"},
		{"2001:db8::12", "2001:db8:1:2::/64", "2001:db8:1:2::1", "2001:db8:1:2::2"},
		{"2001:db8::13", "2001:db8:1:3::/64", "2001:db8:1:3::1", "2001:db8:1:3::2"},
	}
	for i, w := range want6 {
		n := l.Nodes[i]
		if n.IP6 != w.ip || n.PodCIDR6 != w.cidr || n.BridgeIP6 != w.gw || n.Pods[0].IP6 != w.pod1 {
			t.Errorf("node %d IPv6 = %s %s %s %s, want %+v", i+1, n.IP6, n.PodCIDR6, n.BridgeIP6, n.Pods[0].IP6, w)
		}
	}
	if !l.IPv6 || l.Sink.IP6 != "2001:db8::1" || l.CP.IP6 != "2001:db8::10" || l.Client.IP6 != "2001:db8::100" {
		t.Errorf("infra hosts' IPv6 wrong (IPv6 %v): %+v %+v %+v", l.IPv6, l.Sink, l.CP, l.Client)
	}
	if l.ServiceCIDRs() != "203.0.113.0/25,2001:db8:5::/108" {
		t.Errorf("ServiceCIDRs() = %q, want IPv4 first, then IPv6", l.ServiceCIDRs())
	}

	// Every address of the largest lab is in its network, and unique.
	big, err := lab.Plan(lab.Options{Prefix: "x", Nodes: lab.MaxNodes, PodsPerNode: lab.MaxPodsPerNode})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[netip.Addr]string{}
	in := func(what, addr, network string) {
		t.Helper()
		a, err := netip.ParseAddr(addr)
		if err != nil || !netip.MustParsePrefix(network).Contains(a) {
			t.Errorf("%s: %q (%v) not in %s", what, addr, err, network)
		}
		if prev, dup := seen[a]; dup {
			t.Errorf("%s and %s both have %s", prev, what, a)
		}
		seen[a] = what
	}
	for _, h := range []lab.Host{big.Sink, big.CP, big.Client} {
		in(h.NS, h.IP, lab.NodeNetwork)
		in(h.NS, h.IP6, lab.NodeNetwork6)
	}
	for _, n := range big.Nodes {
		in(n.NS, n.IP, lab.NodeNetwork)
		in(n.NS, n.IP6, lab.NodeNetwork6)
		in(n.NS+" cbr0", n.BridgeIP, n.PodCIDR)
		in(n.NS+" cbr0", n.BridgeIP6, n.PodCIDR6)
		if !netip.MustParsePrefix(lab.PodNetwork6).Contains(netip.MustParsePrefix(n.PodCIDR6).Addr()) {
			t.Errorf("%s: pod CIDR %s not in %s", n.NS, n.PodCIDR6, lab.PodNetwork6)
		}
		for _, p := range n.Pods {
			in(p.NS, p.IP, n.PodCIDR)
			in(p.NS, p.IP6, n.PodCIDR6)
		}
	}
	if svc := netip.MustParsePrefix(lab.ServiceCIDR6); svc.Bits() < 108 || 128-svc.Bits() < 14 {
		t.Errorf("ServiceCIDR6 %s: want /108 or narrower (kube-apiserver's limit) with room for 10,000+ Services", svc)
	}

	v4, err := lab.Plan(lab.Options{Prefix: "x", Nodes: 1, PodsPerNode: 1, IPv4Only: true})
	if err != nil {
		t.Fatal(err)
	}
	if v4.IPv6 || v4.Client.IP6 != "" || v4.Nodes[0].IP6 != "" || v4.Nodes[0].PodCIDR6 != "" || v4.Nodes[0].Pods[0].IP6 != "" || v4.ServiceCIDRs() != lab.ServiceCIDR {
		t.Errorf("IPv4Only plan has IPv6: %+v", v4)
	}

	if _, err := lab.Plan(lab.Options{Prefix: "Bad-Prefix"}); err == nil {
		t.Error("bad prefix accepted")
	}
	if _, err := lab.Plan(lab.Options{Nodes: 5}); err == nil {
		t.Error("5 nodes accepted")
	}
}

func TestParseReply(t *testing.T) {
	r, err := lab.ParseReply("pod-a 198.51.100.2:40000\n")
	if err != nil || r.Backend != "pod-a" || r.ClientIP() != "198.51.100.2" {
		t.Fatalf("got %+v, %v", r, err)
	}
	if _, err := lab.ParseReply("garbage"); !errors.Is(err, lab.ErrBadReply) {
		t.Fatalf("want ErrBadReply, got %v", err)
	}
}

func TestLabSmoke(t *testing.T) {
	if err := lab.Available(); err != nil {
		t.Skipf("network lab not available: %v", err)
	}
	before := rootLinks(t)
	hostIPs, hostIPv6s := rootIPs(t)
	l := upLab(t, "svpt", lab.Options{Nodes: 2, PodsPerNode: 2})
	if !l.BridgeNetfilter {
		t.Logf("NOTE: net.bridge.bridge-nf-call-iptables could not be enabled in node namespaces")
	}

	// Echo servers in every pod, every node and the client.
	for _, p := range l.Pods() {
		if _, err := l.StartEcho(p.NS, p.Name, echoPort); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range l.Nodes {
		if _, err := l.StartEcho(n.NS, n.Name, echoPort); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := l.StartEcho(l.Client.NS, "client", echoPort); err != nil {
		t.Fatal(err)
	}

	p11, p12, p21 := l.Pod(1, 1), l.Pod(1, 2), l.Pod(2, 1)
	n1, n2 := l.Node(1), l.Node(2)
	// The same checks for both families: IPv4 at the top level, IPv6 (the
	// lab is dual-stack) under "ipv6", against IPv6 echo servers on "::".
	reachability(t, l, smokeAddrs{
		port: echoPort, p11: p11.IP, p12: p12.IP, p21: p21.IP,
		n1: n1.IP, n1Bridge: n1.BridgeIP, n2: n2.IP, client: lab.ClientIP,
		svcFromPod: lab.KubernetesSvcIP, svcPort: 443, svcFromNode: "203.0.113.7",
	})
	t.Run("ipv6", func(t *testing.T) {
		if !l.IPv6 {
			t.Skip("the lab is IPv4 only here: the kernel has no IPv6")
		}
		// IPv6 echo servers ("::" is IPv6 only) beside the IPv4 ones.
		for _, h := range []struct{ ns, name string }{{p11.NS, p11.Name}, {p12.NS, p12.Name}, {p21.NS, p21.Name}, {n1.NS, n1.Name}, {n2.NS, n2.Name}, {l.Client.NS, "client"}} {
			if _, err := l.StartEchoArgs(h.ns, h.name, echoPort6, "--addr", "::"); err != nil {
				t.Fatal(err)
			}
		}
		reachability(t, l, smokeAddrs{
			port: echoPort6, p11: p11.IP6, p12: p12.IP6, p21: p21.IP6,
			n1: n1.IP6, n1Bridge: n1.BridgeIP6, n2: n2.IP6, client: lab.ClientIP6,
			svcFromPod: "2001:db8:5::1", svcPort: 443, svcFromNode: "2001:db8:5::7",
		})
	})

	t.Run("isolated-from-host", func(t *testing.T) {
		// 1. The root namespace gained no interface.
		if after := rootLinks(t); strings.Join(after, ",") != strings.Join(before, ",") {
			t.Errorf("root namespace links changed: before %v after %v", before, after)
		}
		// 2. Every veth in the lab has its peer in a lab namespace.
		labNS := map[string]bool{}
		for _, ns := range l.Namespaces() {
			labNS[ns] = true
		}
		for _, ns := range l.Namespaces() {
			checkVethPeers(t, l, ns, labNS)
		}
		// 3. The host's addresses are not reachable from anywhere in the lab.
		for _, ip := range append(hostIPs, hostIPv6s...) {
			for _, ns := range []string{n1.NS, p11.NS, l.Client.NS, l.CP.NS} {
				_, _, err := lab.Probe(ns, "tcp", ip, 22, 500*time.Millisecond)
				if err == nil || errors.Is(err, lab.ErrRefused) {
					t.Errorf("host address %s reachable from %s: %v", ip, ns, err)
				}
			}
		}
		// 4. Only the expected routes exist: no namespace routes beyond the
		// sink, which forwards nothing (either family).
		type famCheck struct{ family, ipFlag, forwarding string }
		fams := []famCheck{{"IPv4", "-4", "net.ipv4.ip_forward"}}
		if l.IPv6 {
			fams = append(fams, famCheck{"IPv6", "-6", "net.ipv6.conf.all.forwarding"})
		}
		for _, f := range fams {
			out, err := l.Exec(l.Sink.NS, "ip", f.ipFlag, "route", "show")
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(out), "default") {
				t.Errorf("sink has a default %s route:\n%s", f.family, out)
			}
			fwd, err := l.Exec(l.Sink.NS, "sysctl", "-n", f.forwarding)
			if err != nil || strings.TrimSpace(string(fwd)) != "0" {
				t.Errorf("sink %s forwarding = %q, %v; want 0", f.family, fwd, err)
			}
		}
	})

	t.Run("hairpin-and-sysctls", func(t *testing.T) {
		out, err := l.Exec(n1.NS, "bridge", "-d", "link", "show", "dev", p11.HostVeth)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(out), "hairpin on") {
			t.Errorf("hairpin not on for %s:\n%s", p11.HostVeth, out)
		}
		fwd, err := l.Exec(n1.NS, "sysctl", "-n", "net.ipv4.ip_forward")
		if err != nil || strings.TrimSpace(string(fwd)) != "1" {
			t.Errorf("node ip_forward = %q, %v", fwd, err)
		}
		if l.IPv6 {
			fwd, err := l.Exec(n1.NS, "sysctl", "-n", "net.ipv6.conf.all.forwarding")
			if err != nil || strings.TrimSpace(string(fwd)) != "1" {
				t.Errorf("node IPv6 forwarding = %q, %v", fwd, err)
			}
		}
		for _, c := range []struct {
			key string
			on  bool
		}{{"net.bridge.bridge-nf-call-iptables", l.BridgeNetfilter}, {"net.bridge.bridge-nf-call-ip6tables", l.BridgeNetfilter6}} {
			if !c.on {
				t.Logf("NOTE: %s is not on in the node namespaces", c.key)
				continue
			}
			if v, err := l.Exec(n1.NS, "sysctl", "-n", c.key); err != nil || strings.TrimSpace(string(v)) != "1" {
				t.Errorf("node %s = %q, %v; the lab says it is on", c.key, v, err)
			}
		}
	})
}

// smokeAddrs are the addresses of one family that TestLabSmoke's
// reachability checks use: pods n1-p1, n1-p2, n2-p1, node1 (and its cbr0),
// node2, the client, and service IPs that no proxy serves.
type smokeAddrs struct {
	port                            int
	p11, p12, p21, n1, n1Bridge, n2 string
	client, svcFromPod, svcFromNode string
	svcPort                         int
}

// reachability checks, over TCP and UDP, who reaches whom in the lab and
// with which source address, against echo servers on a.port.
func reachability(t *testing.T, l *lab.Lab, a smokeAddrs) {
	t.Helper()
	expectOK := func(t *testing.T, fromNS, proto, addr, wantBackend, wantClientIP string) {
		t.Helper()
		r, err := lab.ProbeWith(lab.ProbeSpec{NS: fromNS, Proto: proto, Addr: addr, Port: a.port, Timeout: 3 * time.Second})
		if err != nil {
			t.Fatalf("%s %s -> %s: %v", fromNS, proto, addr, err)
		}
		if r.Backend != wantBackend || r.ClientIP() != wantClientIP {
			t.Fatalf("%s %s -> %s: answered by %s seeing %s, want %s seeing %s",
				fromNS, proto, addr, r.Backend, r.ClientAddr, wantBackend, wantClientIP)
		}
	}
	p11, p12, p21 := l.Pod(1, 1), l.Pod(1, 2), l.Pod(2, 1)
	n1, n2 := l.Node(1), l.Node(2)
	for _, proto := range []string{"tcp", "udp"} {
		t.Run(proto, func(t *testing.T) {
			t.Run("pod-to-pod-cross-node keeps source", func(t *testing.T) {
				expectOK(t, p11.NS, proto, a.p21, p21.Name, a.p11)
				expectOK(t, p21.NS, proto, a.p11, p11.Name, a.p21)
			})
			t.Run("pod-to-pod-same-node", func(t *testing.T) {
				expectOK(t, p11.NS, proto, a.p12, p12.Name, a.p11)
			})
			t.Run("pod-to-own-node", func(t *testing.T) {
				expectOK(t, p11.NS, proto, a.n1, n1.Name, a.p11)
				expectOK(t, p11.NS, proto, a.n1Bridge, n1.Name, a.p11)
			})
			t.Run("pod-to-other-node", func(t *testing.T) {
				// node2 reaches node1's pod CIDR via node1, so the source stays the pod's.
				expectOK(t, p11.NS, proto, a.n2, n2.Name, a.p11)
			})
			t.Run("node-to-remote-pod", func(t *testing.T) {
				expectOK(t, n1.NS, proto, a.p21, p21.Name, a.n1)
			})
			t.Run("client-to-node", func(t *testing.T) {
				expectOK(t, l.Client.NS, proto, a.n1, n1.Name, a.client)
				expectOK(t, l.Client.NS, proto, a.n2, n2.Name, a.client)
			})
			t.Run("node-to-client", func(t *testing.T) {
				expectOK(t, n2.NS, proto, a.client, "client", a.n2)
			})
			t.Run("refused-is-not-timeout", func(t *testing.T) {
				_, _, err := lab.Probe(p11.NS, proto, a.p21, a.port+1, 2*time.Second)
				if !errors.Is(err, lab.ErrRefused) {
					t.Fatalf("closed port: want ErrRefused, got %v", err)
				}
			})
			t.Run("cluster-ip-blackholed-without-proxy", func(t *testing.T) {
				// No proxy rules: the packet goes to the sink, which drops it.
				_, _, err := lab.Probe(p11.NS, proto, a.svcFromPod, a.svcPort, 700*time.Millisecond)
				if !errors.Is(err, lab.ErrTimeout) {
					t.Fatalf("ClusterIP without proxy: want ErrTimeout, got %v", err)
				}
				_, _, err = lab.Probe(n1.NS, proto, a.svcFromNode, 80, 700*time.Millisecond)
				if !errors.Is(err, lab.ErrTimeout) {
					t.Fatalf("ClusterIP from node without proxy: want ErrTimeout, got %v", err)
				}
			})
			t.Run("client-cannot-reach-pods", func(t *testing.T) {
				_, _, err := lab.Probe(l.Client.NS, proto, a.p11, a.port, 700*time.Millisecond)
				if !errors.Is(err, lab.ErrTimeout) {
					t.Fatalf("client -> pod IP: want ErrTimeout (sink drops), got %v", err)
				}
			})
		})
	}
}

type ipLink struct {
	IfName    string `json:"ifname"`
	LinkNetns *int   `json:"link_netnsid"`
	LinkInfo  struct {
		InfoKind string `json:"info_kind"`
	} `json:"linkinfo"`
}

type nsID struct {
	NsID int    `json:"nsid"`
	Name string `json:"name"`
}

func checkVethPeers(t *testing.T, l *lab.Lab, ns string, labNS map[string]bool) {
	t.Helper()
	out, err := l.Exec(ns, "ip", "-j", "-d", "link", "show")
	if err != nil {
		t.Fatal(err)
	}
	var links []ipLink
	if err := json.Unmarshal(out, &links); err != nil {
		t.Fatalf("%s: parsing ip -j link: %v", ns, err)
	}
	idOut, err := l.Exec(ns, "ip", "-j", "netns", "list-id")
	if err != nil {
		t.Fatal(err)
	}
	var ids []nsID
	if len(strings.TrimSpace(string(idOut))) > 0 {
		if err := json.Unmarshal(idOut, &ids); err != nil {
			t.Fatalf("%s: parsing ip -j netns list-id: %v (%s)", ns, err, idOut)
		}
	}
	names := map[int]string{}
	for _, id := range ids {
		names[id.NsID] = id.Name
	}
	for _, lk := range links {
		switch lk.LinkInfo.InfoKind {
		case "veth":
			if lk.LinkNetns == nil {
				// Peer in the same namespace: harmless but unexpected.
				continue
			}
			peerNS := names[*lk.LinkNetns]
			if !labNS[peerNS] {
				t.Errorf("%s/%s: veth peer in namespace %q (nsid %d), outside the lab", ns, lk.IfName, peerNS, *lk.LinkNetns)
			}
		case "", "bridge":
		default:
			// e.g. fallback tunnel devices (sit0, tunl0) the kernel adds to
			// every namespace; they are down and have no peer.
			t.Logf("%s/%s: link kind %q", ns, lk.IfName, lk.LinkInfo.InfoKind)
		}
	}
}

func TestEchoServerLoopback(t *testing.T) {
	if err := lab.Available(); err != nil {
		t.Skipf("network lab not available: %v", err)
	}
	if os.Getenv("SVCPROXY_SKIP_BUILD") != "" {
		t.Skip("SVCPROXY_SKIP_BUILD set")
	}
	// The echo server's UDP replies come from the address the request was
	// sent to, even on a multi-homed host (IP_PKTINFO).
	l := upLab(t, "svpu", lab.Options{Nodes: 1, PodsPerNode: -1})
	n := l.Node(1)
	if _, err := l.StartEcho(n.NS, "multi", echoPort); err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{n.IP, n.BridgeIP, "127.0.0.1"} {
		r, err := lab.ProbeWith(lab.ProbeSpec{NS: n.NS, Proto: "udp", Addr: addr, Port: echoPort, Timeout: 2 * time.Second})
		if err != nil {
			t.Fatalf("udp to %s: %v", addr, err)
		}
		if r.Backend != "multi" {
			t.Fatalf("udp to %s answered by %q", addr, r.Backend)
		}
	}
}

// TestDownStale: the lab of a test process that died without tearing it down
// (its prefix is stem + a pid no process has) goes, with what runs in it and
// its state dir; the lab of a live process stays.
func TestDownStale(t *testing.T) {
	if err := lab.Available(); err != nil {
		t.Skipf("network lab not available: %v", err)
	}
	if os.Getenv("SVCPROXY_STATE_DIR") != "" {
		t.Skip("SVCPROXY_STATE_DIR is set: labs do not get their own state dirs")
	}
	const stem = "svpds"
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	stale := stem + strconv.Itoa(cmd.Process.Pid)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dead, err := lab.Up(ctx, lab.Options{Prefix: stale, Nodes: 1, PodsPerNode: 1, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dead.Down(); _ = os.RemoveAll(dead.StateDir) })
	leftover, err := dead.StartProcess(dead.Node(1).NS, "leftover", "sleep", "300")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = leftover.Stop() })
	live := upLab(t, stem, lab.Options{Nodes: 1, PodsPerNode: -1})

	if err := lab.DownStale(stem); err != nil {
		t.Fatalf("DownStale: %v", err)
	}
	if left, _ := lab.ListNamespaces(stale); len(left) > 0 {
		t.Errorf("stale lab's namespaces left: %v", left)
	}
	if _, err := os.Stat(dead.StateDir); !os.IsNotExist(err) {
		t.Errorf("stale lab's state dir %s left (%v)", dead.StateDir, err)
	}
	select {
	case <-leftover.Done():
	case <-time.After(10 * time.Second):
		t.Errorf("process left in the stale lab still runs (pid %d)", leftover.Pid())
	}
	if got, _ := lab.ListNamespaces(live.Prefix); len(got) != len(live.Namespaces()) {
		t.Errorf("live lab %s lost namespaces: has %v, want %v", live.Prefix, got, live.Namespaces())
	}
}
