package dataplane

import (
	"encoding/binary"
	"net/netip"
	"os/exec"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/svcproxy/svcproxy/hack/lab"
	"github.com/svcproxy/svcproxy/iptables"
	"github.com/svcproxy/svcproxy/proxier/metrics"
)

// TestNFAcctCounters: on a node with kube-proxy's nfacct counters, real
// connections to 127.0.0.1:NODEPORT are counted (and served), NodePort
// connections to the node's address are not, and TCP packets conntrack finds
// INVALID (SYN+FIN) forwarded between pods are dropped and counted; the
// metrics read the kernel's counts.
func TestNFAcctCounters(t *testing.T) {
	e := setup(t)
	n := e.lab.Node(1)
	acct, err := iptables.NewNFAcct(n.NS)
	if err != nil {
		t.Skipf("kernel without nfnetlink_acct: %v", err)
	}
	for _, name := range iptables.KubeProxyNFAcctCounters() {
		if err := acct.Ensure(name); err != nil {
			t.Fatal(err)
		}
	}
	e.nfacct = true
	e.sync(1, e.objs.Services, e.objs.EndpointSlices, nil)
	// 127.0.0.1 NodePorts need route_localnet, as the daemon sets it.
	if out, err := exec.Command("ip", "netns", "exec", n.NS, "sysctl", "-qw", "net.ipv4.conf.all.route_localnet=1").CombinedOutput(); err != nil {
		t.Fatalf("route_localnet in %s: %v: %s", n.NS, err, out)
	}
	packets := func(name string) uint64 {
		t.Helper()
		c, err := acct.Get(name)
		if err != nil {
			t.Fatal(err)
		}
		return c.Packets
	}

	const conns = 20
	got, _ := hits(t, n.NS, "tcp", "127.0.0.1", 30080, conns)
	assertNames(t, got, "shop-a", "shop-b")
	// nat rules see a connection's first packet only.
	if c := packets(iptables.NFAcctLocalhostNodePorts); c != conns {
		t.Errorf("localhost NodePort counter after %d connections: %d", conns, c)
	}
	got, _ = hits(t, e.lab.Client.NS, "tcp", n.IP, 30080, 10)
	assertNames(t, got, "shop-a", "shop-b")
	if c := packets(iptables.NFAcctLocalhostNodePorts); c != conns {
		t.Errorf("NodePort connections to %s were counted as localhost ones: counter %d, want %d", n.IP, c, conns)
	}

	// SYN+FIN from a node1 pod to a node2 pod: routed through node1, where
	// conntrack calls it INVALID and KUBE-FORWARD drops it.
	if c := packets(iptables.NFAcctInvalidDropped); c != 0 {
		t.Fatalf("INVALID counter before any invalid packet: %d", c)
	}
	from, to := e.lab.Pod(1, 1), e.lab.Pod(2, 1)
	const invalid = 5
	err = lab.InNetns(from.NS, func() error {
		return sendRawTCP(netip.MustParseAddr(from.IP), netip.MustParseAddr(to.IP), 8080, tcpSYN|tcpFIN, invalid)
	})
	if err != nil {
		t.Fatal(err)
	}
	if c := packets(iptables.NFAcctInvalidDropped); c != invalid {
		t.Errorf("INVALID counter after %d SYN+FIN packets: %d", invalid, c)
	}

	// The metrics serve the kernel's counts.
	reg := prometheus.NewRegistry()
	for _, c := range metrics.NewNFAcctCollectors(acct) {
		reg.MustRegister(c)
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{
		"kubeproxy_iptables_localhost_nodeports_accepted_packets_total": conns,
		"kubeproxy_iptables_ct_state_invalid_dropped_packets_total":     invalid,
	}
	for _, f := range fams {
		if v := f.GetMetric()[0].GetCounter().GetValue(); v != want[f.GetName()] {
			t.Errorf("%s = %v, want %v", f.GetName(), v, want[f.GetName()])
		}
		delete(want, f.GetName())
	}
	if len(want) > 0 {
		t.Errorf("not served: %v", want)
	}
}

const (
	tcpFIN = 0x01
	tcpSYN = 0x02
)

// sendRawTCP sends count bare TCP segments with the given flags from src to
// dst:port through a raw socket of the calling thread's namespace (the
// kernel adds the IPv4 header; the TCP checksum is ours).
func sendRawTCP(src, dst netip.Addr, port int, flags byte, count int) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_TCP)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	seg := make([]byte, 20)
	binary.BigEndian.PutUint16(seg[0:], 40001)
	binary.BigEndian.PutUint16(seg[2:], uint16(port))
	binary.BigEndian.PutUint32(seg[4:], 1000)
	seg[12] = 5 << 4 // data offset: 5 words
	seg[13] = flags
	binary.BigEndian.PutUint16(seg[14:], 65535)
	binary.BigEndian.PutUint16(seg[16:], tcpChecksum(src, dst, seg))
	to := &unix.SockaddrInet4{Addr: dst.As4()}
	for range count {
		if err := unix.Sendto(fd, seg, 0, to); err != nil {
			return err
		}
	}
	return nil
}

// tcpChecksum is the TCP checksum of seg (checksum field zero) with the
// IPv4 pseudo-header.
func tcpChecksum(src, dst netip.Addr, seg []byte) uint16 {
	s, d := src.As4(), dst.As4()
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(b[i:]))
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	add(s[:])
	add(d[:])
	add([]byte{0, unix.IPPROTO_TCP, byte(len(seg) >> 8), byte(len(seg))})
	add(seg)
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
