package dataplane

// Pod egress masquerade and multi-CIDR local detection through ipsets, on the
// real kernel: rules built by the daemon's own NodeConfig builder from its
// own flags, ipsets written through netlink inside the node namespace, real
// TCP and UDP traffic.
//
// Topology (lab prefix "svpip<pid>" shortened to svpip below; 2 nodes, 2 pods each, plus):
//
//	node1  cbr0 198.51.100.1/26 (lab) and 198.51.100.193/26 (added here)
//	  pod A  svpip-n1-p1  198.51.100.2    CIDR A = 198.51.100.0/26
//	  pod B  (testns)     198.51.100.194  CIDR B = 198.51.100.192/26 (made here)
//	node2  pod svpip-n2-p1 198.51.100.66 (CIDR C = 198.51.100.64/26), echo "n2-p1"
//	client ("outside")  192.0.2.100 and 192.0.2.200, echo "outside" on 9000
//
// The client gets routes back to the pod CIDRs (via the nodes), like a flat
// routed network. Without them unmasqueraded traffic would just time out;
// with them every packet that leaves a node unmasqueraded gets an answer
// naming the pod address, and a counter in the client's INPUT chain counts
// such packets independently of the answers. That makes a leak visible.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spf13/pflag"
	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/svcproxy/svcproxy/cmd/svcproxy/options"
	"github.com/svcproxy/svcproxy/hack/lab"
	"github.com/svcproxy/svcproxy/hack/testns"
	"github.com/svcproxy/svcproxy/ipset"
	"github.com/svcproxy/svcproxy/iptables"
	"github.com/svcproxy/svcproxy/proxier"
	"github.com/svcproxy/svcproxy/proxier/model"
	"github.com/svcproxy/svcproxy/proxier/nodeconfig"
	"github.com/svcproxy/svcproxy/proxier/rules"
)

const (
	cidrA      = "198.51.100.0/26"   // node1's pod CIDR in the lab
	cidrB      = "198.51.100.192/26" // node1's second pod CIDR (added by the test)
	cidrC      = "198.51.100.64/26"  // node2's pod CIDR
	cidrD      = "198.51.100.128/26" // unused: a fourth CIDR for the swaps
	noMasqCIDR = "192.0.2.128/25"

	podBIP      = "198.51.100.194"
	podBGateway = "198.51.100.193"

	outsideIP   = lab.ClientIP // 192.0.2.100: outside every pod and no-masq CIDR
	noMasqIP    = "192.0.2.200"
	outsidePort = 9000
	podPort     = 8080
	serviceIP   = "203.0.113.10" // ClusterIP of demo/web, endpoint n2-p1
)

// nsSets is the real ipset.Interface, every call made from a thread inside
// the namespace (ipsets are per network namespace).
type nsSets struct{ ns string }

var _ ipset.Interface = nsSets{}

func (s nsSets) do(fn func(ipset.Interface) error) error {
	return lab.InNetns(s.ns, func() error { return fn(ipset.New()) })
}

func (s nsSets) EnsureSet(set ipset.Set) error {
	return s.do(func(i ipset.Interface) error { return i.EnsureSet(set) })
}

func (s nsSets) ReplaceMembers(name string, members []netip.Prefix) error {
	return s.do(func(i ipset.Interface) error { return i.ReplaceMembers(name, members) })
}

func (s nsSets) ListMembers(name string) (out []netip.Prefix, err error) {
	err = s.do(func(i ipset.Interface) error { out, err = i.ListMembers(name); return err })
	return out, err
}

func (s nsSets) ListSets() (out []string, err error) {
	err = s.do(func(i ipset.Interface) error { out, err = i.ListSets(); return err })
	return out, err
}

func (s nsSets) Destroy(name string) error {
	return s.do(func(i ipset.Interface) error { return i.Destroy(name) })
}

type egressEnv struct {
	t     *testing.T
	lab   *lab.Lab
	node1 *lab.Node
	podA  *lab.Pod
	n2p1  *lab.Pod
	podB  string             // pod B's namespace (hack/testns)
	ipt   iptables.Interface // node1's tables
	sets  nsSets             // node1's ipsets
	node  *v1.Node           // node1's Node object, as the API would give it
	snap  *model.Snapshot
}

func setupEgress(t *testing.T) *egressEnv {
	t.Helper()
	if err := lab.Available(); err != nil {
		t.Skipf("ipset dataplane tests need network namespaces: %v", err)
	}
	if _, err := runIn("", "ipset", "--version"); err != nil {
		t.Skipf("ipset dataplane tests need the ipset binary (to inspect sets): %v", err)
	}
	l := upLab(t, "svpip", 2, 2)
	e := &egressEnv{t: t, lab: l, node1: l.Node(1), podA: l.Pod(1, 1), n2p1: l.Pod(2, 1), sets: nsSets{l.Node(1).NS}}
	if _, err := e.sets.ListSets(); err != nil {
		t.Skipf("ipset dataplane tests need the kernel's ipset netlink interface: %v", err)
	}

	// Pod B, in a second pod CIDR on node1's bridge.
	e.podB = testns.New(t).Name
	n1 := e.node1.NS
	e.must(n1, "ip", "addr", "add", podBGateway+"/26", "dev", "cbr0")
	e.must(n1, "ip", "link", "add", "vp9", "type", "veth", "peer", "name", "eth0", "netns", e.podB)
	e.must(n1, "ip", "link", "set", "vp9", "master", "cbr0", "up")
	e.must(e.podB, "ip", "link", "set", "lo", "up")
	e.must(e.podB, "ip", "addr", "add", podBIP+"/26", "dev", "eth0")
	e.must(e.podB, "ip", "link", "set", "eth0", "up")
	e.must(e.podB, "ip", "route", "add", "default", "via", podBGateway)
	// node2 reaches CIDR B through node1, as it does CIDR A.
	e.must(l.Node(2).NS, "ip", "route", "add", cidrB, "via", e.node1.IP)

	// The outside host: a second address inside --no-masquerade-cidrs,
	// routes back to the pod CIDRs, and packet counters by source.
	c := l.Client.NS
	e.must(c, "ip", "addr", "add", noMasqIP+"/24", "dev", "eth0")
	for _, r := range [][2]string{{cidrA, e.node1.IP}, {cidrB, e.node1.IP}, {cidrC, l.Node(2).IP}} {
		e.must(c, "ip", "route", "add", r[0], "via", r[1])
	}
	e.must(c, "iptables", "-w", "-A", "INPUT", "-d", outsideIP, "-s", lab.PodNetwork, "-p", "udp", "--dport", strconv.Itoa(outsidePort), "-m", "comment", "--comment", "svpip-leak")
	e.must(c, "iptables", "-w", "-A", "INPUT", "-d", outsideIP, "-s", e.node1.IP, "-p", "udp", "--dport", strconv.Itoa(outsidePort), "-m", "comment", "--comment", "svpip-masq")

	for _, s := range []struct{ ns, name string }{{c, "outside"}, {e.n2p1.NS, "n2-p1"}, {e.podB, "pod-b"}} {
		port := podPort
		if s.name == "outside" {
			port = outsidePort
		}
		p, err := l.StartEcho(s.ns, s.name, port)
		if err != nil {
			t.Fatalf("echo %s: %v", s.name, err)
		}
		t.Cleanup(func() { _ = p.Stop() })
	}

	var err error
	e.ipt, err = iptables.New(iptables.NetnsExecutor{Namespace: n1}, iptables.Options{})
	if err != nil {
		t.Fatalf("iptables in %s: %v", n1, err)
	}
	e.node = &v1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: e.node1.Name},
		Spec:       v1.NodeSpec{PodCIDR: cidrA, PodCIDRs: []string{cidrA}},
		Status:     v1.NodeStatus{Addresses: []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: e.node1.IP}}},
	}
	e.snap = webService(t)
	return e
}

// webService is demo/web (203.0.113.10:80) with its one endpoint on node2,
// so the detect-local rule (which uses the pod-CIDR set) is exercised too.
func webService(t *testing.T) *model.Snapshot {
	t.Helper()
	tcp, http, port, ready := v1.ProtocolTCP, "http", int32(podPort), true
	svc := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "web"},
		Spec: v1.ServiceSpec{Type: v1.ServiceTypeClusterIP, ClusterIP: serviceIP, ClusterIPs: []string{serviceIP},
			Ports: []v1.ServicePort{{Name: http, Port: 80, Protocol: tcp, TargetPort: intstr.FromInt32(podPort)}}},
	}
	slice := &discovery.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "demo", Name: "web-1", Labels: map[string]string{discovery.LabelServiceName: "web"}},
		AddressType: discovery.AddressTypeIPv4,
		Ports:       []discovery.EndpointPort{{Name: &http, Port: &port, Protocol: &tcp}},
		Endpoints:   []discovery.Endpoint{{Addresses: []string{"198.51.100.66"}, Conditions: discovery.EndpointConditions{Ready: &ready}}},
	}
	snap, err := model.BuildSnapshot([]*v1.Service{svc}, []*discovery.EndpointSlice{slice}, v1.IPv4Protocol)
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

func runIn(ns string, argv ...string) ([]byte, error) {
	return lab.Exec(context.Background(), ns, argv...)
}

func (e *egressEnv) must(ns string, argv ...string) string {
	e.t.Helper()
	out, err := runIn(ns, argv...)
	if err != nil {
		e.t.Fatalf("%v", err)
	}
	return string(out)
}

// nodeConfig parses daemon flags exactly as `svcproxy` does (options
// Complete + Validate) and builds node1's NodeConfig with the daemon's
// builder.
func (e *egressEnv) nodeConfig(clusterCIDRs ...string) *rules.NodeConfig {
	e.t.Helper()
	return e.nodeConfigFlags("--cluster-cidr="+strings.Join(clusterCIDRs, ","),
		"--masquerade-pod-egress", "--no-masquerade-cidrs="+noMasqCIDR)
}

func (e *egressEnv) nodeConfigFlags(flags ...string) *rules.NodeConfig {
	e.t.Helper()
	o := options.NewOptions()
	fs := pflag.NewFlagSet("svcproxy", pflag.ContinueOnError)
	o.AddFlags(fs)
	args := append([]string{"--hostname-override=" + e.node1.Name}, flags...)
	if err := fs.Parse(args); err != nil {
		e.t.Fatal(err)
	}
	if err := o.Complete(fs); err != nil {
		e.t.Fatal(err)
	}
	if err := o.Validate(); err != nil {
		e.t.Fatal(err)
	}
	return nodeconfig.ForHost(o.Config.NodeSettings(), v1.IPv4Protocol, e.node1.Name, e.ipt.HasRandomFully()).Build(e.node)
}

// apply is one daemon sync: ipsets first, then one full restore.
func (e *egressEnv) apply(nc *rules.NodeConfig) error {
	if err := proxier.SyncIPSets(e.sets, nc); err != nil {
		return fmt.Errorf("sync ipsets: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := proxier.Apply(ctx, e.ipt, proxier.ApplyRequest{Snapshot: e.snap, Config: nc, Full: true})
	return err
}

func (e *egressEnv) mustApply(nc *rules.NodeConfig) {
	e.t.Helper()
	if err := e.apply(nc); err != nil {
		e.t.Fatal(err)
	}
}

// seen returns the client address the echo server at addr:port saw.
func (e *egressEnv) seen(ns, proto, addr string, port int) string {
	e.t.Helper()
	r, err := lab.ProbeWith(lab.ProbeSpec{NS: ns, Proto: proto, Addr: addr, Port: port, Timeout: 3 * time.Second})
	if err != nil {
		e.t.Fatalf("%v", err)
	}
	return r.ClientIP()
}

func (e *egressEnv) expectSeen(what, ns, proto, addr string, port int, want string) {
	e.t.Helper()
	if got := e.seen(ns, proto, addr, port); got != want {
		e.t.Errorf("%s: %s %s:%d from %s was seen from %s, want %s", what, proto, addr, port, ns, got, want)
	}
}

var counterRE = regexp.MustCompile(`(?m)^\[(\d+):\d+\] -A INPUT .*--comment (svpip-\w+)`)

// clientCounters reads the client's packet counters by comment.
func (e *egressEnv) clientCounters() map[string]int {
	e.t.Helper()
	out := e.must(e.lab.Client.NS, "iptables-save", "-c", "-t", "filter")
	got := map[string]int{}
	for _, m := range counterRE.FindAllStringSubmatch(out, -1) {
		n, _ := strconv.Atoi(m[1])
		got[m[2]] = n
	}
	if len(got) != 2 {
		e.t.Fatalf("client counters not found in:\n%s", out)
	}
	return got
}

func (e *egressEnv) zeroClientCounters() {
	e.t.Helper()
	e.must(e.lab.Client.NS, "iptables", "-w", "-Z", "INPUT")
}

// egressTally counts what the outside host saw of a stream of UDP probes.
type egressTally struct {
	Probes, Masqueraded, Leaked, Other, Failed int
	FirstFailure                               error
}

// probeStream paces udpStream and shows its progress.
type probeStream struct {
	// sent counts probes started; finished, those answered or failed.
	sent, finished atomic.Int64
	// budget, when positive, is how many probes the stream sends per epoch:
	// having sent them, it waits for a value on epoch (a new epoch) or stop.
	// So a stream of maxProbes source ports lasts for maxProbes/budget
	// epochs however slow or fast each one is.
	budget int
	epoch  chan struct{}
}

// newEpoch starts a new epoch (a fresh budget) if the stream wants one.
func (ps *probeStream) newEpoch() {
	select {
	case ps.epoch <- struct{}{}:
	default: // one is already pending
	}
}

// udpStream sends one-datagram UDP probes from inside ns to dst:port, each
// from its own source port (firstPort, firstPort+1, ...) so that every probe
// is a new conntrack flow whose NAT is decided by the rules of that moment.
// Probes start at most every interval (see ps for the pacing). It stops
// when stop is closed or after maxProbes. A probe unanswered for 5s is a
// failure.
func udpStream(ns, dst string, port, firstPort, maxProbes int, interval time.Duration, nodeIP, podIP string, stop <-chan struct{}, ps *probeStream) (egressTally, error) {
	var t egressTally
	err := lab.InNetns(ns, func() error {
		raddr := &net.UDPAddr{IP: net.ParseIP(dst), Port: port}
		buf := make([]byte, 512)
		next, inEpoch := time.Now(), 0
		for i := 0; i < maxProbes; i++ {
			select {
			case <-stop:
				return nil
			default:
			}
			if ps.budget > 0 && inEpoch >= ps.budget {
				select {
				case <-stop:
					return nil
				case <-ps.epoch:
					inEpoch = 0
				}
			}
			inEpoch++
			if wait := time.Until(next); wait > 0 {
				time.Sleep(wait)
			}
			next = time.Now().Add(interval)
			c, err := net.DialUDP("udp4", &net.UDPAddr{Port: firstPort + i}, raddr)
			if err != nil {
				return err
			}
			t.Probes++
			ps.sent.Add(1)
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			_, err = c.Write([]byte("ping\n"))
			n := 0
			if err == nil {
				n, err = c.Read(buf)
			}
			c.Close()
			ps.finished.Add(1)
			if err != nil {
				t.Failed++
				if t.FirstFailure == nil {
					t.FirstFailure = fmt.Errorf("probe %d (source port %d): %w", i+1, firstPort+i, err)
				}
				continue
			}
			r, err := lab.ParseReply(string(buf[:n]))
			switch {
			case err != nil:
				t.Other++
			case r.ClientIP() == nodeIP:
				t.Masqueraded++
			case r.ClientIP() == podIP:
				t.Leaked++
			default:
				t.Other++
			}
		}
		return nil
	})
	return t, err
}

// waitProgress waits until cond holds. It fails the test only if nothing
// happens for far longer than any machine needs (two minutes), or if done
// is closed first: no verdict here depends on the machine's speed.
func waitProgress(t *testing.T, what string, done <-chan struct{}, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for !cond() {
		select {
		case <-done:
			if cond() {
				return
			}
			t.Fatalf("waiting for %s: the probe stream ended first", what)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: no progress in two minutes", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestPodEgressMasqueradeWithIPSets(t *testing.T) {
	e := setupEgress(t)
	podA, podB, nodeIP := e.podA, e.podB, e.node1.IP
	abc := e.nodeConfig(cidrA, cidrB, cidrC)

	// Baseline: without svcproxy's rules the outside sees pod addresses, so
	// what follows is the rules' doing.
	e.expectSeen("no rules yet", podA.NS, "tcp", outsideIP, outsidePort, podA.IP)
	e.expectSeen("no rules yet", podB, "tcp", outsideIP, outsidePort, podBIP)

	e.mustApply(abc)
	if got, _ := e.sets.ListMembers(ipset.PodCIDRsSet); fmt.Sprint(got) != "[198.51.100.0/26 198.51.100.64/26 198.51.100.192/26]" {
		t.Fatalf("%s holds %v after the first sync", ipset.PodCIDRsSet, got)
	}
	natTable := e.must(e.node1.NS, "iptables-save", "-t", "nat")
	for _, want := range []string{
		"-A POSTROUTING -m comment --comment \"svcproxy pod egress masquerade\" -j " + rules.ChainPodEgress,
		"-A " + rules.ChainPodEgress + " -m comment --comment \"pod egress leaves the pod network through the node address\" -m set --match-set SVCPROXY-POD-CIDRS src -m set ! --match-set SVCPROXY-POD-CIDRS dst -m set ! --match-set SVCPROXY-NO-MASQ dst -j MASQUERADE",
		"-m set ! --match-set SVCPROXY-POD-CIDRS src -j KUBE-MARK-MASQ",
	} {
		if !strings.Contains(natTable, want) {
			t.Errorf("node1's nat table lacks %q:\n%s", want, natTable)
		}
	}

	t.Run("a: pods in both CIDRs leave through the node address", func(t *testing.T) {
		for _, proto := range []string{"tcp", "udp"} {
			e.expectSeen("pod A egress", podA.NS, proto, outsideIP, outsidePort, nodeIP)
			e.expectSeen("pod B egress", podB, proto, outsideIP, outsidePort, nodeIP)
		}
	})

	t.Run("b: pod to pod keeps the pod source", func(t *testing.T) {
		e.expectSeen("pod A to node2 pod", podA.NS, "tcp", e.n2p1.IP, podPort, podA.IP)
		e.expectSeen("pod B to node2 pod", podB, "tcp", e.n2p1.IP, podPort, podBIP)
		e.expectSeen("pod A to pod B (other CIDR, same node)", podA.NS, "tcp", podBIP, podPort, podA.IP)
		// And through a ClusterIP: both pods are local by the set.
		e.expectSeen("pod A via ClusterIP", podA.NS, "tcp", serviceIP, 80, podA.IP)
		e.expectSeen("pod B via ClusterIP", podB, "tcp", serviceIP, 80, podBIP)
	})

	t.Run("c: no-masquerade destinations see the pod", func(t *testing.T) {
		for _, proto := range []string{"tcp", "udp"} {
			e.expectSeen("pod A to no-masq", podA.NS, proto, noMasqIP, outsidePort, podA.IP)
			e.expectSeen("pod B to no-masq", podB, proto, noMasqIP, outsidePort, podBIP)
		}
	})

	t.Run("d: changing the CIDR list changes behaviour without leaks", func(t *testing.T) {
		ac, abcd := e.nodeConfig(cidrA, cidrC), e.nodeConfig(cidrA, cidrB, cidrC, cidrD)

		// Observable effects of dropping CIDR B, then of adding it back
		// (with a fourth CIDR, then without).
		checkB := func(inSet bool) {
			t.Helper()
			// Out of the set, pod B is neither local (its ClusterIP
			// traffic is masqueraded) nor a pod destination (pod A's
			// traffic to it leaves cbr0 masqueraded to the gateway).
			egress, fromA, viaSvc := podBIP, podBGateway, nodeIP
			if inSet {
				egress, fromA, viaSvc = nodeIP, podA.IP, podBIP
			}
			e.expectSeen(fmt.Sprintf("CIDR B in set=%v: pod B egress", inSet), podB, "tcp", outsideIP, outsidePort, egress)
			e.expectSeen(fmt.Sprintf("CIDR B in set=%v: pod A to pod B", inSet), podA.NS, "tcp", podBIP, podPort, fromA)
			e.expectSeen(fmt.Sprintf("CIDR B in set=%v: pod B via ClusterIP", inSet), podB, "tcp", serviceIP, 80, viaSvc)
			// Pod A is unaffected throughout.
			e.expectSeen(fmt.Sprintf("CIDR B in set=%v: pod A egress", inSet), podA.NS, "tcp", outsideIP, outsidePort, nodeIP)
		}
		e.mustApply(ac)
		checkB(false)
		e.mustApply(abcd)
		checkB(true)
		if got, _ := e.sets.ListMembers(ipset.PodCIDRsSet); len(got) != 4 {
			t.Errorf("%s holds %v, want the four CIDRs", ipset.PodCIDRsSet, got)
		}
		e.mustApply(abc)
		checkB(true)

		// Continuous UDP from pod A (whose CIDR stays) to the outside while
		// the set is swapped and the rules rewritten, swaps times. Each
		// swap is what the daemon does when the configuration changes:
		// SyncIPSets (atomic swap of the set's members) and a full sync
		// (jumps ensured, one iptables-restore). The work is counted, not
		// timed: every swap starts a probe epoch (so the source ports last
		// however long the swaps take), and the next swap waits until a
		// probe has started since this one did.
		const (
			swaps     = 12
			maxProbes = 22000 // source ports 10000..31999, each used once, below the ephemeral range
			interval  = 500 * time.Microsecond
		)
		e.zeroClientCounters()
		configs := []*rules.NodeConfig{ac, abc, abcd, abc}
		stop := make(chan struct{})
		ps := &probeStream{budget: maxProbes / (swaps + 1), epoch: make(chan struct{}, 1)}
		var tally egressTally
		var streamErr error
		var wg sync.WaitGroup
		streamDone := make(chan struct{})
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(streamDone)
			tally, streamErr = udpStream(podA.NS, outsideIP, outsidePort, 10000, maxProbes, interval, nodeIP, podA.IP, stop, ps)
		}()
		stopStream := func() {
			close(stop)
			wg.Wait()
			if streamErr != nil {
				t.Fatalf("probe stream: %v", streamErr)
			}
		}
		waitProgress(t, "the probe stream to start", streamDone, func() bool { return ps.finished.Load() > 0 })
		start := time.Now()
		for i := range swaps {
			ps.newEpoch()
			before := ps.sent.Load()
			if err := e.apply(configs[i%len(configs)]); err != nil {
				stopStream()
				t.Fatalf("swap %d: %v", i+1, err)
			}
			waitProgress(t, fmt.Sprintf("a probe during swap %d", i+1), streamDone, func() bool { return ps.sent.Load() > before })
		}
		// Probes after the last swap too.
		after := ps.finished.Load()
		waitProgress(t, "probes after the last swap", streamDone, func() bool { return ps.finished.Load() >= after+10 })
		stopStream()
		counters := e.clientCounters()
		t.Logf("%d set swaps + full restores in %v; %d UDP probes from pod A: %d masqueraded, %d leaked, %d other, %d failed; "+
			"outside host counted %d packets from the node address and %d from pod addresses",
			swaps, time.Since(start).Round(time.Millisecond), tally.Probes, tally.Masqueraded, tally.Leaked, tally.Other, tally.Failed,
			counters["svpip-masq"], counters["svpip-leak"])
		if tally.Leaked != 0 || counters["svpip-leak"] != 0 {
			t.Errorf("pod traffic leaked unmasqueraded: %d replies named the pod, %d packets from pod addresses reached the outside", tally.Leaked, counters["svpip-leak"])
		}
		if tally.Other != 0 {
			t.Errorf("%d replies named neither the node nor the pod", tally.Other)
		}
		if tally.Failed != 0 {
			t.Errorf("%d of %d probes got no answer (first: %v)", tally.Failed, tally.Probes, tally.FirstFailure)
		}
		if tally.Masqueraded != counters["svpip-masq"] {
			t.Errorf("%d masqueraded replies but the outside counted %d packets from the node", tally.Masqueraded, counters["svpip-masq"])
		}

		// Control: the same measurement notices a non-atomic update. Empty
		// the live set by hand (as a flush-then-refill would) for 50
		// probes, and the stream must see pod A's own address.
		e.mustApply(abc)
		e.zeroClientCounters()
		stop = make(chan struct{})
		ps = &probeStream{}
		streamDone = make(chan struct{})
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(streamDone)
			tally, streamErr = udpStream(podA.NS, outsideIP, outsidePort, 3000, 7000, interval, nodeIP, podA.IP, stop, ps)
		}()
		waitProgress(t, "control probes before the flush", streamDone, func() bool { return ps.finished.Load() >= 20 })
		e.must(e.node1.NS, "ipset", "flush", ipset.PodCIDRsSet)
		flushed := ps.sent.Load()
		waitProgress(t, "control probes while the set is empty", streamDone, func() bool { return ps.finished.Load() >= flushed+50 })
		e.mustApply(abc) // refills the set
		refilled := ps.sent.Load()
		waitProgress(t, "control probes after the refill", streamDone, func() bool { return ps.finished.Load() >= refilled+20 })
		close(stop)
		wg.Wait()
		if streamErr != nil {
			t.Fatalf("control probe stream: %v", streamErr)
		}
		counters = e.clientCounters()
		t.Logf("control (set emptied for 50 probes): %d probes: %d masqueraded, %d leaked, %d failed; outside counted %d pod-source packets",
			tally.Probes, tally.Masqueraded, tally.Leaked, tally.Failed, counters["svpip-leak"])
		if tally.Leaked == 0 || counters["svpip-leak"] == 0 {
			t.Errorf("control: an emptied set went unnoticed (%d leaked replies, %d pod-source packets); the leak check is blind", tally.Leaked, counters["svpip-leak"])
		}
		if tally.Masqueraded == 0 {
			t.Errorf("control: no masqueraded probe around the flush")
		}
		e.expectSeen("control: after the refill", podA.NS, "tcp", outsideIP, outsidePort, nodeIP)
	})

	t.Run("e: sets in use survive, cleanup removes everything, resync re-creates", func(t *testing.T) {
		e.mustApply(abc)
		// A referenced set is never destroyed: not by Destroy, not by the
		// ipset cleanup, not by the ipset binary.
		if err := e.sets.Destroy(ipset.NoMasqSet); !errors.Is(err, ipset.ErrInUse) {
			t.Errorf("Destroy(%s) while a rule uses it = %v, want ErrInUse", ipset.NoMasqSet, err)
		}
		if err := ipset.Cleanup(e.sets, ipset.Prefix); err != nil {
			t.Errorf("ipset.Cleanup with rules in place: %v (in-use sets are skipped, not errors)", err)
		}
		if out, err := runIn(e.node1.NS, "ipset", "destroy", ipset.PodCIDRsSet); err == nil {
			t.Errorf("ipset destroy %s succeeded while rules use it: %s", ipset.PodCIDRsSet, out)
		}
		if names, err := e.sets.ListSets(); err != nil || fmt.Sprint(names) != "[SVCPROXY-NO-MASQ SVCPROXY-POD-CIDRS]" {
			t.Errorf("sets after destroy attempts = %v, %v", names, err)
		}
		e.expectSeen("after destroy attempts", podA.NS, "tcp", outsideIP, outsidePort, nodeIP)

		// A set someone destroyed while unused is re-created by the next
		// sync: drop --no-masquerade-cidrs (the rules stop using the set),
		// destroy it with the ipset binary, then bring the CIDRs back.
		e.mustApply(e.nodeConfigFlags("--cluster-cidr="+strings.Join([]string{cidrA, cidrB, cidrC}, ","), "--masquerade-pod-egress"))
		e.expectSeen("no-masq set unused", podA.NS, "tcp", noMasqIP, outsidePort, nodeIP)
		e.must(e.node1.NS, "ipset", "destroy", ipset.NoMasqSet)
		e.mustApply(abc)
		if got, err := e.sets.ListMembers(ipset.NoMasqSet); err != nil || fmt.Sprint(got) != "["+noMasqCIDR+"]" {
			t.Errorf("%s after resync = %v, %v", ipset.NoMasqSet, got, err)
		}
		e.expectSeen("no-masq set re-created", podA.NS, "tcp", noMasqIP, outsidePort, podA.IP)

		// Dropping --masquerade-pod-egress stops the masquerade (the chain
		// is flushed; its jump stays until cleanup); the set still drives
		// local detection.
		e.mustApply(e.nodeConfigFlags("--cluster-cidr=" + strings.Join([]string{cidrA, cidrB, cidrC}, ",")))
		e.expectSeen("egress flag dropped: pod A egress", podA.NS, "tcp", outsideIP, outsidePort, podA.IP)
		e.expectSeen("egress flag dropped: pod B via ClusterIP", podB, "tcp", serviceIP, 80, podBIP)
		e.mustApply(abc)
		e.expectSeen("egress flag back: pod A egress", podA.NS, "tcp", outsideIP, outsidePort, nodeIP)

		// Cleanup removes the jumps, the chains and then the sets.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := proxier.Cleanup(ctx, e.ipt, e.sets); err != nil {
			t.Fatalf("cleanup: %v", err)
		}
		if names, err := e.sets.ListSets(); err != nil || len(names) != 0 {
			t.Errorf("sets after cleanup = %v, %v; want none", names, err)
		}
		nat := e.must(e.node1.NS, "iptables-save", "-t", "nat")
		for _, gone := range []string{rules.ChainPodEgress, "KUBE-SERVICES", "KUBE-POSTROUTING", "--match-set"} {
			if strings.Contains(nat, gone) {
				t.Errorf("nat table still mentions %s after cleanup:\n%s", gone, nat)
			}
		}
		e.expectSeen("after cleanup", podA.NS, "tcp", outsideIP, outsidePort, podA.IP)

		// And a sync after cleanup (all sets gone) brings everything back.
		e.mustApply(abc)
		if names, err := e.sets.ListSets(); err != nil || fmt.Sprint(names) != "[SVCPROXY-NO-MASQ SVCPROXY-POD-CIDRS]" {
			t.Errorf("sets after resync = %v, %v", names, err)
		}
		e.expectSeen("resync after cleanup: pod A egress", podA.NS, "tcp", outsideIP, outsidePort, nodeIP)
		e.expectSeen("resync after cleanup: pod B egress", podB, "udp", outsideIP, outsidePort, nodeIP)
		e.expectSeen("resync after cleanup: no-masq", podB, "tcp", noMasqIP, outsidePort, podBIP)
		e.expectSeen("resync after cleanup: pod to pod", podA.NS, "tcp", e.n2p1.IP, podPort, podA.IP)
		// Leave the namespace clean for lab.Down.
		if err := proxier.Cleanup(ctx, e.ipt, e.sets); err != nil {
			t.Errorf("final cleanup: %v", err)
		}
	})
}
