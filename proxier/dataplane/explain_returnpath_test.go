package dataplane

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"

	"github.com/svcproxy/svcproxy/hack/lab"
	"github.com/svcproxy/svcproxy/hack/testns"
	"github.com/svcproxy/svcproxy/iptables"
	"github.com/svcproxy/svcproxy/proxier/explain"
	"github.com/svcproxy/svcproxy/proxier/model"
	"github.com/svcproxy/svcproxy/proxier/model/testobj"
	"github.com/svcproxy/svcproxy/proxier/nodeconfig"
	"github.com/svcproxy/svcproxy/proxier/rules"
)

// twoLinkNode is issue 10's node, built in two namespaces:
//
//	node  eth0 192.0.2.11/24  ───── main link ─────  eth0 192.0.2.12/24  peer
//	      eth1 198.51.100.1/26 ──── second link ────  eth1 198.51.100.65/26
//	                                                        198.51.100.66 (the endpoint)
//
// The node's default route (and so its route to the service CIDR) goes
// out of eth0; the peer's pods (198.51.100.64/26) are reached over eth1,
// as over an overlay. The peer answers 192.0.2.0/24 over the main link.
// The node filters reverse paths strictly (rp_filter=1); the peer does not
// (it is the node side this test is about).
type twoLinkNode struct {
	node, peer *testns.NS
	ipt        iptables.Interface
}

func newTwoLinkNode(t *testing.T) *twoLinkNode {
	t.Helper()
	n := &twoLinkNode{node: testns.New(t), peer: testns.New(t)}
	node, peer := n.node, n.peer
	for _, link := range []string{"eth0", "eth1"} {
		node.Run(t, "ip", "link", "add", link, "type", "veth", "peer", "name", link, "netns", peer.Name)
	}
	for _, c := range [][]string{
		{"ip", "addr", "add", "192.0.2.11/24", "dev", "eth0"},
		{"ip", "addr", "add", "198.51.100.1/26", "dev", "eth1"},
		{"ip", "link", "set", "lo", "up"}, {"ip", "link", "set", "eth0", "up"}, {"ip", "link", "set", "eth1", "up"},
		{"ip", "route", "add", "198.51.100.64/26", "via", "198.51.100.65", "dev", "eth1", "onlink"},
		{"ip", "route", "add", "default", "via", "192.0.2.12", "dev", "eth0"},
		{"sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1", "net.ipv4.conf.eth0.rp_filter=1", "net.ipv4.conf.eth1.rp_filter=1"},
	} {
		node.Run(t, c...)
	}
	for _, c := range [][]string{
		{"ip", "addr", "add", "192.0.2.12/24", "dev", "eth0"},
		{"ip", "addr", "add", "198.51.100.65/26", "dev", "eth1"},
		{"ip", "addr", "add", "198.51.100.66/26", "dev", "eth1"},
		{"ip", "link", "set", "lo", "up"}, {"ip", "link", "set", "eth0", "up"}, {"ip", "link", "set", "eth1", "up"},
		{"ip", "route", "add", "198.51.100.0/26", "via", "198.51.100.1", "dev", "eth1", "onlink"},
		{"sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.eth0.rp_filter=0", "net.ipv4.conf.eth1.rp_filter=0"},
	} {
		peer.Run(t, c...)
	}
	ipt, err := iptables.New(iptables.NetnsExecutor{Namespace: n.node.Name}, iptables.Options{})
	if err != nil {
		t.Fatal(err)
	}
	n.ipt = ipt
	return n
}

// program renders demo/web (203.0.113.10:80 → 198.51.100.66:8080) for the
// node, with or without --cluster-cidr, and restores nat and filter whole.
func (n *twoLinkNode) program(t *testing.T, clusterCIDR string) {
	t.Helper()
	settings := nodeconfig.Settings{MasqueradeBit: 14, DetectLocalMode: nodeconfig.LocalModeClusterCIDR}
	if clusterCIDR != "" {
		settings.ClusterCIDRs = []netip.Prefix{netip.MustParsePrefix(clusterCIDR)}
	}
	cfg := (&nodeconfig.Builder{Settings: settings, Family: v1.IPv4Protocol, NodeName: "node1", RandomFully: n.ipt.HasRandomFully()}).Build(nil)
	slice := testobj.Slice("demo", "web", "web-1", testobj.TCPPort("http", 8080), testobj.Endpoint("198.51.100.66", testobj.OnNode("node2")))
	snap, err := model.BuildSnapshot([]*v1.Service{testobj.WebService()}, []*discovery.EndpointSlice{slice}, v1.IPv4Protocol)
	if err != nil {
		t.Fatal(err)
	}
	data := rules.WithJumps(rules.Render(snap, cfg, rules.RenderOptions{Full: true}).Data, rules.JumpsFor(cfg))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := n.ipt.Restore(ctx, data, iptables.RestoreOptions{}); err != nil {
		t.Fatalf("restore: %v", err)
	}
}

// connect makes one real connection from the node to the service.
func (n *twoLinkNode) connect(timeout time.Duration) (lab.ProbeResult, error) {
	return lab.ProbeWith(lab.ProbeSpec{NS: n.node.Name, Proto: "tcp", Addr: webIP, Port: 80, Timeout: timeout})
}

// TestExplainReturnPath is issue 10's case on a real kernel: explain says
// FAIL naming the return path where a real connection times out, and OK
// where, with a fix applied, a real connection works.
func TestExplainReturnPath(t *testing.T) {
	testns.Require(t)
	n := newTwoLinkNode(t)
	bin := explainBinary(t)
	echo, err := lab.EchoServerBinary()
	if err != nil {
		t.Fatal(err)
	}
	p, err := lab.Start(n.peer.Name, filepath.Join(t.TempDir(), "echo.log"), echo, "--name", "web", "--port", "8080", "--udp=false")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop() })
	ready := lab.ProbeSpec{NS: n.peer.Name, Proto: "tcp", Addr: "198.51.100.66", Port: 8080, Timeout: time.Second}
	if ok, _, err := lab.WaitProbe(ready, 20*time.Second, func(_ lab.ProbeResult, err error) bool { return err == nil }); !ok {
		t.Fatalf("echo server not ready: %v", err)
	}
	n.program(t, "")

	// Before: the reply to 192.0.2.11 comes back over eth0, where strict
	// rp_filter drops it (198.51.100.66 is routed via eth1).
	code, out := explainIn(t, bin, n.node.Name, "--from-node", "--to", webIP+":80")
	t.Logf("explain before the fix (exit %d):\n%s", code, out)
	for _, want := range []string{"FAIL: replies from 198.51.100.66 will be dropped", "from 192.0.2.11 (on eth0", "leaves by eth1 unmasqueraded",
		"arrives on eth0", "net.ipv4.conf.eth0.rp_filter=1", "Fix: --cluster-cidr"} {
		if !strings.Contains(out, want) {
			t.Errorf("explain before the fix lacks %q", want)
		}
	}
	if code != 1 {
		t.Errorf("explain before the fix: exit %d, want 1", code)
	}
	code, out = explainIn(t, bin, n.node.Name, "--from-node", "--to", webIP+":80", "-o", "json")
	t.Logf("the same, -o json (exit %d):\n%s", code, out)
	var rep explain.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil || rep.Status != explain.StatusFail || len(rep.ReturnPaths) != 1 ||
		rep.ReturnPaths[0].ReplyIface != "eth0" || rep.ReturnPaths[0].RPFilter == nil || rep.ReturnPaths[0].Drop == "" {
		t.Errorf("-o json: exit %d, %v: %+v", code, err, rep.ReturnPaths)
	}
	if _, err := n.connect(3 * time.Second); !lab.IsTimeout(err) {
		t.Errorf("a real connection before the fix: %v, want a timeout", err)
	}

	// Fix 1: loose rp_filter on the interface the reply arrives on.
	n.node.Run(t, "sysctl", "-qw", "net.ipv4.conf.eth0.rp_filter=2")
	code, out = explainIn(t, bin, n.node.Name, "--from-node", "--to", "demo/web")
	t.Logf("explain with rp_filter=2 on eth0 (exit %d):\n%s", code, out)
	if code != 0 || !strings.Contains(out, "OK: 203.0.113.10:80/tcp reaches 1 endpoint of demo/web:http") {
		t.Errorf("explain with loose rp_filter: exit %d, want 0 and OK", code)
	}
	n.mustConnect(t, "192.0.2.11")
	n.node.Run(t, "sysctl", "-qw", "net.ipv4.conf.eth0.rp_filter=1")

	// Fix 2: --cluster-cidr, so the node's traffic to services is
	// masqueraded and the reply comes back over eth1.
	n.program(t, "198.51.100.0/24")
	code, out = explainIn(t, bin, n.node.Name, "--from-node", "--to", webIP+":80")
	t.Logf("explain with --cluster-cidr (exit %d):\n%s", code, out)
	if code != 0 || !strings.Contains(out, "OK: 203.0.113.10:80/tcp reaches 1 endpoint of demo/web:http (198.51.100.66:8080); masquerade: yes") ||
		!strings.Contains(out, "masqueraded to 198.51.100.1; the reply to 198.51.100.1 comes back on eth1") {
		t.Errorf("explain with --cluster-cidr: exit %d, want 0, OK and the way back over eth1", code)
	}
	n.mustConnect(t, "198.51.100.1")
}

// mustConnect makes a real connection (retried for a while: the verdict
// never depends on speed) and checks the source the endpoint saw.
func (n *twoLinkNode) mustConnect(t *testing.T, wantSource string) {
	t.Helper()
	var last error
	for i := 0; i < 10; i++ {
		r, err := n.connect(3 * time.Second)
		if err == nil {
			if r.ClientIP() != wantSource {
				t.Errorf("the endpoint saw %s, want %s", r.ClientIP(), wantSource)
			}
			return
		}
		last = err
	}
	t.Errorf("a real connection failed 10 times: %v", fmt.Errorf("last: %w", last))
}
