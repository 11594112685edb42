package e2e

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/svcproxy/svcproxy/hack/lab"
)

// The daemons run svcproxy's default, compact layout: an endpoint on this
// node keeps its KUBE-SEP chain, so a pod reaching itself through the
// Service is masqueraded (hairpin); a remote endpoint is DNATed from the
// service chain.
func TestHairpinToLocalEndpoint(t *testing.T) {
	e := setup(t)
	l := e.lab
	self := l.Pod(1, 1)
	svc := e.createService(t, svcSpec{name: "hairpin"}, self, l.Pod(2, 1))
	reachAll(t, target{l.Pod(1, 2).NS, "tcp", svc.Spec.ClusterIP, 80}, "n1-p1", "n2-p1")
	sawSelf := false
	for i := 0; i < 100 && !sawSelf; i++ {
		r, err := target{self.NS, "tcp", svc.Spec.ClusterIP, 80}.probe(3 * time.Second)
		if err != nil {
			t.Fatalf("request %d from the endpoint itself: %v", i+1, err)
		}
		if r.Backend != "n1-p1" {
			continue
		}
		sawSelf = true
		if r.ClientIP() == self.IP {
			t.Errorf("hairpin not masqueraded: n1-p1 saw its own address %s", self.IP)
		}
	}
	if !sawSelf {
		t.Fatal("100 requests never reached the calling pod's own endpoint")
	}
	nat, err := e.save(l.Node(1).NS, "nat")
	if err != nil {
		t.Fatal(err)
	}
	if targets := dnatTargets(nat, "hairpin"); !targets[self.IP+":8080"] || !targets[l.Pod(2, 1).IP+":8080"] {
		t.Errorf("DNAT targets on node1: %v", keys(targets))
	}
}

// ClientIP session affinity holds a client to one endpoint, for endpoints
// with a KUBE-SEP chain and for those the compact layout DNATs inline.
func TestSessionAffinity(t *testing.T) {
	e := setup(t)
	l := e.lab
	svc := e.createService(t, svcSpec{name: "sticky", affinity: 600}, l.Pod(1, 1), l.Pod(2, 1), l.Pod(2, 2))
	for _, n := range l.Nodes {
		e.waitNodeTable(t, l.Node(n.Index), "nat", "sticky programmed", func(nat string) error {
			if got := dnatTargets(nat, "sticky"); len(got) != 3 {
				return fmt.Errorf("DNAT targets %v", keys(got))
			}
			return nil
		})
	}
	seen := map[string]bool{}
	for _, client := range []*lab.Pod{l.Pod(1, 2), l.Pod(1, 3), l.Pod(2, 3)} {
		got, _ := hits(t, target{client.NS, "tcp", svc.Spec.ClusterIP, 80}, 8)
		if len(got) != 1 {
			t.Errorf("client %s reached %v; affinity wants one endpoint", client.Name, got)
		}
		for name := range got {
			seen[name] = true
		}
	}
	t.Logf("clients held to %v", keys(seen))
}

// Switching a running node to kube-proxy's layout and back (a restart with
// --rule-layout) keeps established flows on their endpoint, serves new
// ones, and deletes the chains the layout no longer uses.
func TestLayoutSwitchOnRunningNode(t *testing.T) {
	e := setup(t)
	l := e.lab
	n := l.Node(1)
	svc := e.createService(t, svcSpec{name: "switch", udp: true}, l.Pod(1, 1), l.Pod(2, 1), l.Pod(2, 2))
	ip := svc.Spec.ClusterIP
	reachAll(t, target{l.Pod(1, 2).NS, "tcp", ip, 80}, "n1-p1", "n2-p1", "n2-p2")
	flow := lab.ProbeSpec{NS: l.Pod(1, 3).NS, Proto: "udp", Addr: ip, Port: 53, Timeout: 3 * time.Second, SourcePort: 40555}
	first, err := lab.ProbeWith(flow)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // leave node1 in the default layout for the other tests
		e.mu.Lock()
		delete(e.extra, 1)
		e.mu.Unlock()
		if err := e.restartDaemon(1); err != nil {
			t.Errorf("restoring the default layout: %v", err)
		}
	})
	sepChains := func() int {
		nat, err := e.save(n.NS, "nat")
		if err != nil {
			t.Fatal(err)
		}
		return len(serviceChainsWithPrefix(nat, "switch", "KUBE-SEP-"))
	}
	compact := sepChains()
	for _, layout := range []string{"kube-proxy", "compact"} {
		e.mu.Lock()
		e.extra[1] = []string{"--rule-layout=" + layout}
		e.mu.Unlock()
		if err := e.restartDaemon(1); err != nil {
			t.Fatal(err)
		}
		want := map[string]int{"kube-proxy": 6, "compact": compact}[layout] // 3 endpoints × 2 ports, or node1's only
		e.waitRules(t, layout+" layout programmed", func(string) error {
			if got := sepChains(); got != want {
				return fmt.Errorf("%d KUBE-SEP chains of the Service, want %d", got, want)
			}
			return nil
		})
		for i := range 5 {
			r, err := lab.ProbeWith(flow)
			if err != nil || r.Backend != first.Backend {
				t.Fatalf("%s: established flow, datagram %d: %v, answered by %q (was %q)", layout, i, err, r.Backend, first.Backend)
			}
		}
		reachAll(t, target{l.Pod(1, 2).NS, "tcp", ip, 80}, "n1-p1", "n2-p1", "n2-p2")
	}
	if compact != 2 {
		t.Errorf("compact layout: %d KUBE-SEP chains for the Service, want 2 (n1-p1's, one per port)", compact)
	}
}

// restartDaemon stops node i's svcproxy with SIGTERM and starts it again
// (with the node's current extra flags), waiting until it is ready.
func (e *env) restartDaemon(i int) error {
	p := e.daemon(i)
	if exited, _ := p.Exited(); !exited {
		if err := syscall.Kill(p.Pid(), syscall.SIGTERM); err != nil {
			return err
		}
		select {
		case <-p.Done():
		case <-time.After(30 * time.Second):
			return fmt.Errorf("svcproxy on node%d did not exit within 30s of SIGTERM", i)
		}
	}
	if err := e.startDaemon(i); err != nil {
		return err
	}
	return e.waitDaemonReady(i)
}

// serviceChainsWithPrefix lists the chains of a Service's ports (by their
// rules' comments) that start with prefix.
func serviceChainsWithPrefix(nat, name, prefix string) map[string]bool {
	out := map[string]bool{}
	for c := range serviceChains(nat, name) {
		if strings.HasPrefix(c, prefix) {
			out[c] = true
		}
	}
	return out
}
