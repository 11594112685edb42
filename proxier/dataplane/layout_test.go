package dataplane

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	"k8s.io/utils/ptr"

	"github.com/svcproxy/svcproxy/hack/lab"
	"github.com/svcproxy/svcproxy/hack/testns"
	"github.com/svcproxy/svcproxy/iptables"
	"github.com/svcproxy/svcproxy/proxier/model"
	"github.com/svcproxy/svcproxy/proxier/model/testobj"
	"github.com/svcproxy/svcproxy/proxier/rules"
)

// Changing the rule layout on a running node is a full sync: established
// flows keep their endpoint (conntrack holds them), new ones reach every
// endpoint, and the chains the new layout does not use are deleted.
func TestLayoutSwitchKeepsFlows(t *testing.T) {
	e := setup(t)
	client := e.lab.Pod(1, 4).NS
	flow := lab.ProbeSpec{NS: client, Proto: "udp", Addr: dnsIP, Port: 53, Timeout: 3 * time.Second, SourcePort: 40123}
	first, err := lab.ProbeWith(flow)
	if err != nil {
		t.Fatal(err)
	}
	sepChains := func() int {
		out, err := lab.SaveTable(context.Background(), e.lab.Node(1).NS, lab.IPv4, "nat")
		if err != nil {
			t.Fatal(err)
		}
		return strings.Count(out, "\n:KUBE-SEP-")
	}
	compactSEPs := sepChains()
	seps := map[rules.Layout]int{}
	for _, layout := range []rules.Layout{rules.LayoutKubeProxy, rules.LayoutCompact} {
		e.layout = layout
		e.sync(1, e.objs.Services, e.objs.EndpointSlices, nil)
		seps[layout] = sepChains()
		for i := range 5 {
			r, err := lab.ProbeWith(flow)
			if err != nil {
				t.Fatalf("%s: established flow, datagram %d: %v", layout, i, err)
			}
			if r.Backend != first.Backend {
				t.Fatalf("%s: the established flow moved from %s to %s", layout, first.Backend, r.Backend)
			}
		}
		got, _ := hits(t, client, "udp", dnsIP, 53, 40)
		assertNames(t, got, "dns-a", "dns-b")
		got, _ = hits(t, client, "tcp", webIP, 80, 60)
		assertNames(t, got, "web-a", "web-b", "web-c")
	}
	// kube-proxy's layout has a chain per endpoint of every port; compact
	// keeps only node1's own endpoints' (web-a, web-b, shop-a, dns-a for
	// each of its ports), and switching back deletes the others.
	if compactSEPs != seps[rules.LayoutCompact] || compactSEPs >= seps[rules.LayoutKubeProxy] {
		t.Errorf("KUBE-SEP chains: compact %d, after kube-proxy's layout %d, compact again %d", compactSEPs, seps[rules.LayoutKubeProxy], seps[rules.LayoutCompact])
	}
}

// Session affinity holds in both layouts, also for endpoints the compact
// layout DNATs straight from the service chain (both on node2 here).
func TestSessionAffinityInBothLayouts(t *testing.T) {
	e := setup(t)
	sticky := testobj.Service("demo", "sticky", "203.0.113.40", testobj.Port("http", v1.ProtocolTCP, 80), testobj.ClientIPAffinity(600))
	slice := testobj.Slice("demo", "sticky", "sticky-1", testobj.TCPPort("http", 8080),
		testobj.Endpoint(e.lab.Pod(2, 1).IP, testobj.OnNode("node2")), testobj.Endpoint(e.lab.Pod(2, 2).IP, testobj.OnNode("node2")))
	services := append(e.objs.Services[:len(e.objs.Services):len(e.objs.Services)], sticky)
	slices := append(e.objs.EndpointSlices[:len(e.objs.EndpointSlices):len(e.objs.EndpointSlices)], slice)
	for _, layout := range []rules.Layout{rules.LayoutCompact, rules.LayoutKubeProxy} {
		e.layout = layout
		e.sync(1, services, slices, nil)
		seen := map[string]bool{}
		for _, pod := range []int{1, 2, 3, 4} {
			got, _ := hits(t, e.lab.Pod(1, pod).NS, "tcp", "203.0.113.40", 80, 10)
			if len(got) != 1 {
				t.Errorf("%s: client %d reached %v; session affinity wants one endpoint", layout, pod, got)
			}
			for name := range got {
				seen[name] = true
			}
		}
		t.Logf("%s: clients were held to %v", layout, keys(seen))
	}
}

// killMidInput runs commands as iptables.OSExecutor does, except that an
// iptables-restore is killed (SIGKILL, as a cancelled ctx does) once it
// has been given its input up to the last COMMIT and not that line: it has
// begun but cannot have committed the last table. Counted, not timed.
type killMidInput struct{}

func (killMidInput) Run(ctx context.Context, name string, args []string, stdin []byte) ([]byte, error) {
	restore := false
	for _, a := range args {
		restore = restore || strings.HasSuffix(a, "-restore")
	}
	cut := bytes.LastIndex(stdin, []byte("COMMIT\n"))
	if !restore || cut < 0 {
		return iptables.OSExecutor{}.Run(ctx, name, args, stdin)
	}
	cmd := exec.Command(name, args...)
	w, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	_, _ = w.Write(stdin[:cut]) // returns once the process has read all but a pipe's worth
	_ = cmd.Process.Kill()
	err = cmd.Wait() // closes w
	return nil, fmt.Errorf("%s killed after %d of %d input bytes: %v (stderr %q)", name, cut, len(stdin), err, stderr.String())
}

// iptables-restore applies all or nothing: a restore killed at any point
// (SIGTERM to the daemon cancels it) leaves the table exactly as it was, or
// (if it had already committed) exactly as the input says. Both backends.
// One kill comes mid-input, so it is certain to interrupt (whatever the
// machine's speed); the others at times, with either outcome allowed.
func TestInterruptedRestoreIsAllOrNothing(t *testing.T) {
	for _, backend := range []iptables.Backend{iptables.BackendNFT, iptables.BackendLegacy} {
		t.Run(string(backend), func(t *testing.T) {
			ns := testns.New(t)
			ipt, err := iptables.New(iptables.NetnsExecutor{Namespace: ns.Name}, iptables.Options{Backend: backend})
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			cfg := &rules.NodeConfig{Family: v1.IPv4Protocol, Topology: model.Topology{NodeName: "node1"}, MasqueradeBit: 14,
				LocalDetector: rules.NoLocalDetector(), Layout: rules.LayoutKubeProxy}
			old := renderMany(t, cfg, 300, "old")
			if err := ipt.Restore(ctx, old, iptables.RestoreOptions{NoFlush: true}); err != nil {
				t.Fatal(err)
			}
			oldState := tableState(t, ipt)
			next := renderMany(t, cfg, 2000, "new")
			// The complete new table (the old chains stay: --noflush
			// leaves unreferenced chains to the stale-chain deletion).
			reset := func() {
				t.Helper()
				if err := ipt.Restore(ctx, deleteAllText(t, ipt), iptables.RestoreOptions{NoFlush: true}); err != nil {
					t.Fatal(err)
				}
				if err := ipt.Restore(ctx, old, iptables.RestoreOptions{NoFlush: true}); err != nil {
					t.Fatal(err)
				}
			}
			if err := ipt.Restore(ctx, next, iptables.RestoreOptions{NoFlush: true}); err != nil {
				t.Fatal(err)
			}
			newState := tableState(t, ipt)
			reset()
			if got := tableState(t, ipt); got != oldState {
				t.Fatalf("reset to the old rules: %s, want %s", got, oldState)
			}

			killer, err := iptables.New(iptables.NetnsExecutor{Namespace: ns.Name, Next: killMidInput{}}, iptables.Options{Backend: backend})
			if err != nil {
				t.Fatal(err)
			}
			err = killer.Restore(ctx, next, iptables.RestoreOptions{NoFlush: true})
			if got := tableState(t, ipt); err == nil || got != oldState {
				t.Fatalf("restore killed before its last COMMIT (err %v): the table changed: %s, was %s", err, got, oldState)
			}
			t.Logf("%s: killed mid-input, old rules intact (%v)", backend, err)

			outcomes := map[string]int{}
			for _, after := range []time.Duration{20 * time.Millisecond, 100 * time.Millisecond, 300 * time.Millisecond, time.Second} {
				rctx, cancel := context.WithTimeout(ctx, after)
				err := ipt.Restore(rctx, next, iptables.RestoreOptions{NoFlush: true})
				cancel()
				switch got := tableState(t, ipt); {
				case err != nil && got == oldState:
					outcomes["killed, old rules intact"]++
				case err == nil && got == newState:
					outcomes["completed"]++
				case err != nil && got == newState:
					// Killed after the kernel took the table, before the
					// process exited: the sync counts it failed and the
					// next one (full) writes the same rules again.
					outcomes["killed after its commit, new rules complete"]++
				default:
					t.Fatalf("restore killed after %v (err %v): the table is neither the old nor the new one: %s (old %s, new %s)", after, err, got, oldState, newState)
				}
				if got := tableState(t, ipt); got != oldState {
					reset() // back to the old rules for the next try
				}
			}
			t.Logf("%s: timed kills: %v", backend, outcomes)
		})
	}
}

// renderMany renders n ClusterIP Services with 5 endpoints each, their
// names and cluster IPs set apart by tag.
func renderMany(t *testing.T, cfg *rules.NodeConfig, n int, tag string) []byte {
	t.Helper()
	var svcs []*v1.Service
	var slices []*discovery.EndpointSlice
	for i := range n {
		name := fmt.Sprintf("%s-%d", tag, i)
		svcs = append(svcs, testobj.Service("bench", name, fmt.Sprintf("10.%d.%d.%d", len(tag), i>>8, i&255), testobj.Port("http", v1.ProtocolTCP, 80)))
		var eps []discovery.Endpoint
		for j := range 5 {
			k := i*5 + j
			eps = append(eps, discovery.Endpoint{Addresses: []string{fmt.Sprintf("10.200.%d.%d", k>>8, k&255)}, NodeName: ptr.To("node2"),
				Conditions: discovery.EndpointConditions{Ready: ptr.To(true)}})
		}
		slices = append(slices, testobj.Slice("bench", name, name+"-1", testobj.TCPPort("http", 8080), eps...))
	}
	snap, err := model.BuildSnapshot(svcs, slices, cfg.Family)
	if err != nil {
		t.Fatal(err)
	}
	return rules.Render(snap, cfg, rules.RenderOptions{Full: true}).Data
}

// tableState summarises the nat table: its chain count and KUBE-SERVICES
// rule count (cheap reads, as the daemon's).
func tableState(t *testing.T, ipt iptables.Interface) string {
	t.Helper()
	ctx := context.Background()
	chains, err := ipt.ListChains(ctx, iptables.TableNAT)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := ipt.SaveChain(ctx, iptables.TableNAT, rules.ChainServices)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%d chains, %d KUBE-SERVICES rules", len(chains), strings.Count(string(svc), "\n-A "))
}

// deleteAllText flushes and deletes every user chain of nat.
func deleteAllText(t *testing.T, ipt iptables.Interface) []byte {
	t.Helper()
	chains, err := ipt.ListChains(context.Background(), iptables.TableNAT)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	b.WriteString("*nat\n")
	var user []string
	for _, c := range chains {
		if !iptables.IsBuiltinChain(iptables.TableNAT, c) {
			user = append(user, c)
			b.WriteString(":" + c + " - [0:0]\n")
		}
	}
	for _, c := range user {
		b.WriteString("-X " + c + "\n")
	}
	b.WriteString("COMMIT\n")
	return []byte(b.String())
}
