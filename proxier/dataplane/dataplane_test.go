package dataplane

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	"github.com/svcproxy/svcproxy/hack/lab"
	"github.com/svcproxy/svcproxy/iptables"
	"github.com/svcproxy/svcproxy/proxier"
	"github.com/svcproxy/svcproxy/proxier/model"
	"github.com/svcproxy/svcproxy/proxier/objfile"
	"github.com/svcproxy/svcproxy/proxier/rules"
)

// The example manifests are written against the lab's address plan:
// node1 pods are 198.51.100.2-5, node2 pods 198.51.100.66-69.
const (
	webIP   = "203.0.113.10"
	shopIP  = "203.0.113.20"
	dnsIP   = "203.0.113.53"
	emptyIP = "203.0.113.30"
)

// backend is an echo server standing in for one endpoint.
type backend struct {
	node, pod int // lab indices (1-based)
	name      string
	port      int
	udp       bool
}

var backends = []backend{
	{1, 1, "web-a", 8080, false}, {1, 2, "web-b", 8080, false}, {2, 1, "web-c", 8080, false},
	{1, 3, "shop-a", 8080, false}, {2, 2, "shop-b", 8080, false},
	{1, 4, "dns-a", 5353, true}, {2, 3, "dns-b", 5353, true},
}

type env struct {
	t    *testing.T
	lab  *lab.Lab
	objs *objfile.Objects
	ipt  map[int]iptables.Interface // per node index
	// prog writes each node's rules as the daemon's sync loop does
	// (partial syncs from the last Index, stale chains deleted).
	prog   map[int]*proxier.Programmer
	layout rules.Layout
	// nfacct: the nodes have kube-proxy's nfacct counters; the rules count.
	nfacct bool
}

// upLab brings up a lab whose prefix is stem + this process's pid
// (lab.RunPrefix), torn down when t ends.
func upLab(t *testing.T, stem string, nodes, podsPerNode int) *lab.Lab {
	t.Helper()
	prefix, err := lab.RunPrefix(stem)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l, err := lab.Up(ctx, lab.Options{Prefix: prefix, Nodes: nodes, PodsPerNode: podsPerNode, Logf: t.Logf})
	if err != nil {
		t.Fatalf("lab up: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Down(); err != nil {
			t.Errorf("lab down: %v", err)
		}
	})
	return l
}

func setup(t *testing.T) *env {
	t.Helper()
	if err := lab.Available(); err != nil {
		t.Skipf("dataplane tests need network namespaces: %v", err)
	}
	l := upLab(t, "svpdp", 2, 4)
	for _, b := range backends {
		extra := []string{"--udp=false"}
		if b.udp {
			extra = []string{"--tcp=false"}
		}
		p, err := l.StartEchoArgs(l.Pod(b.node, b.pod).NS, b.name, b.port, extra...)
		if err != nil {
			t.Fatalf("backend %s: %v", b.name, err)
		}
		t.Cleanup(func() { p.Stop() })
	}
	_, file, _, _ := runtime.Caller(0)
	objs, err := objfile.Load(filepath.Join(filepath.Dir(file), "..", "..", "manifests", "examples"), os.Stdin)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, lab: l, objs: objs, ipt: map[int]iptables.Interface{}, prog: map[int]*proxier.Programmer{}}
	for _, n := range l.Nodes {
		ipt, err := iptables.New(iptables.NetnsExecutor{Namespace: n.NS}, iptables.Options{})
		if err != nil {
			t.Fatalf("iptables in %s: %v", n.NS, err)
		}
		e.ipt[n.Index] = ipt
		e.prog[n.Index] = proxier.NewProgrammer(ipt, "IPv4", nil, klog.Background())
		e.sync(n.Index, objs.Services, objs.EndpointSlices, nil)
	}
	return e
}

// sync renders the objects for node i and applies them as the daemon does,
// in e.layout. A partial sync (changed != nil) rewrites only what the
// changed services touch; stale chains are then deleted, all batches.
func (e *env) sync(i int, services []*v1.Service, slices []*discovery.EndpointSlice, changed map[types.NamespacedName]bool) {
	e.t.Helper()
	n := e.lab.Node(i)
	snap, err := model.BuildSnapshot(services, slices, v1.IPv4Protocol)
	if err != nil {
		e.t.Fatal(err)
	}
	cfg := &rules.NodeConfig{
		Family:             v1.IPv4Protocol,
		Topology:           model.Topology{NodeName: n.Name},
		MasqueradeBit:      14,
		LocalDetector:      rules.DetectByCIDR(mustPrefix(lab.PodNetwork)),
		RandomFully:        e.ipt[i].HasRandomFully(),
		LocalhostNodePorts: true,
		Layout:             e.layout,
	}
	if e.nfacct {
		cfg.NFAcct = iptables.KubeProxyNFAcctCounters()
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := e.prog[i].Program(ctx, proxier.ProgramRequest{Snapshot: snap, Config: cfg, Full: changed == nil, Changed: changed}); err != nil {
		e.t.Fatalf("sync on %s: %v", n.Name, err)
	}
	for range 1000 { // bounded: each round deletes a batch
		if _, left := e.prog[i].DeleteStale(ctx); left == 0 {
			return
		}
	}
	e.t.Fatalf("stale chains on %s never all deleted", n.Name)
}

// hits sends count requests (each must be answered within 3s) and returns
// the answers by backend name, plus the client addresses the backends saw.
func hits(t *testing.T, ns, proto, ip string, port, count int) (map[string]int, map[string]bool) {
	t.Helper()
	byName, seen, err := lab.Hits(lab.ProbeSpec{NS: ns, Proto: proto, Addr: ip, Port: port, Timeout: 3 * time.Second}, count)
	if err != nil {
		t.Fatalf("%s %s:%d from %s: %v", proto, ip, port, ns, err)
	}
	return byName, seen
}

func TestClusterIPReachesAllEndpoints(t *testing.T) {
	e := setup(t)
	client := e.lab.Pod(1, 4) // 198.51.100.5, itself a dns backend only
	got, seen := hits(t, client.NS, "tcp", webIP, 80, 60)
	assertNames(t, got, "web-a", "web-b", "web-c")
	if !seen[client.IP] || len(seen) != 1 {
		t.Errorf("pod source should be kept, backends saw %v", keys(seen))
	}

	// From a pod on the other node, and from the node itself.
	got, _ = hits(t, e.lab.Pod(2, 4).NS, "tcp", webIP, 80, 60)
	assertNames(t, got, "web-a", "web-b", "web-c")
	got, seen = hits(t, e.lab.Node(1).NS, "tcp", webIP, 80, 60)
	assertNames(t, got, "web-a", "web-b", "web-c")
	if seen[e.lab.Node(1).IP] == false && seen[e.lab.Node(1).BridgeIP] == false {
		t.Errorf("node traffic should come from the node's address, backends saw %v", keys(seen))
	}
}

func TestUDPClusterIP(t *testing.T) {
	e := setup(t)
	got, _ := hits(t, e.lab.Pod(1, 1).NS, "udp", dnsIP, 53, 40)
	assertNames(t, got, "dns-a", "dns-b")
}

func TestNodePortFromOutsideIsMasqueraded(t *testing.T) {
	e := setup(t)
	for _, n := range e.lab.Nodes {
		got, seen := hits(t, e.lab.Client.NS, "tcp", n.IP, 30080, 40)
		assertNames(t, got, "shop-a", "shop-b")
		if seen[lab.ClientIP] {
			t.Errorf("NodePort on %s: backends saw the client's own address %s; want masquerade (saw %v)", n.Name, lab.ClientIP, keys(seen))
		}
	}
}

func TestHairpinToOwnService(t *testing.T) {
	e := setup(t)
	self := e.lab.Pod(1, 1) // web-a, 198.51.100.2
	sawSelf := false
	for i := 0; i < 200 && !sawSelf; i++ {
		name, addr, err := lab.Probe(self.NS, "tcp", webIP, 80, 3*time.Second)
		if err != nil {
			t.Fatalf("hairpin request %d: %v", i+1, err)
		}
		if name != "web-a" {
			continue
		}
		sawSelf = true
		if hostOf(addr) == self.IP {
			t.Errorf("hairpin reply must be masqueraded, web-a saw its own address %s", addr)
		}
	}
	if !sawSelf {
		t.Fatal("200 requests never landed on the calling pod's own endpoint")
	}
}

// A REJECT is told from a DROP by the error, not by the time it takes: a
// DROP ends in a timeout, only a reject in "connection refused".
func TestNoEndpointsIsRejectedAtOnce(t *testing.T) {
	e := setup(t)
	start := time.Now()
	_, _, err := lab.Probe(e.lab.Pod(1, 1).NS, "tcp", emptyIP, 80, 5*time.Second)
	if !lab.IsRefused(err) {
		t.Fatalf("want connection refused, got %v", err)
	}
	t.Logf("refused after %v", time.Since(start).Round(time.Millisecond))
}

func TestEndpointRemovalStopsTraffic(t *testing.T) {
	e := setup(t)
	slicesNow := slices.Clone(e.objs.EndpointSlices)
	for i, s := range slicesNow {
		if s.Name == "web-abc12" {
			scaled := s.DeepCopy()
			scaled.Endpoints = slices.DeleteFunc(scaled.Endpoints, func(ep discovery.Endpoint) bool { return ep.Addresses[0] == "198.51.100.66" })
			slicesNow[i] = scaled
		}
	}
	e.sync(1, e.objs.Services, slicesNow, map[types.NamespacedName]bool{{Namespace: "demo", Name: "web"}: true})
	got, _ := hits(t, e.lab.Pod(1, 4).NS, "tcp", webIP, 80, 60)
	assertNames(t, got, "web-a", "web-b")

	// And the removed endpoint's chain is gone from the kernel.
	out, err := e.lab.Exec(e.lab.Node(1).NS, "iptables-save", "-t", "nat")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "198.51.100.66:8080") {
		t.Errorf("rules still mention the removed endpoint:\n%s", grep(string(out), "198.51.100.66"))
	}
}

func TestRestoreFailureLeavesRulesIntact(t *testing.T) {
	e := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bad := []byte("*nat\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES -j KUBE-DOES-NOT-EXIST\nCOMMIT\n")
	err := e.ipt[1].Restore(ctx, bad, iptables.RestoreOptions{NoFlush: true})
	var re *iptables.RestoreError
	if !errors.As(err, &re) {
		t.Fatalf("want *RestoreError, got %v", err)
	}
	got, _ := hits(t, e.lab.Pod(1, 4).NS, "tcp", webIP, 80, 30)
	assertNames(t, got, "web-a", "web-b", "web-c")
}

func assertNames(t *testing.T, got map[string]int, want ...string) {
	t.Helper()
	names := keysInt(got)
	sort.Strings(want)
	if !slices.Equal(names, want) {
		t.Errorf("answered by %v, want exactly %v", got, want)
	}
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func keysInt(m map[string]int) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func hostOf(addr string) string {
	if i := strings.LastIndex(addr, ":"); i > 0 {
		return addr[:i]
	}
	return addr
}

func grep(text, needle string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, needle) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func mustPrefix(s string) (p netipPrefix) { return parsePrefix(s) }

var _ = fmt.Sprintf
