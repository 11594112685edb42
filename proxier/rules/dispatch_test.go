package rules_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/svcproxy/svcproxy/iptables"
	"github.com/svcproxy/svcproxy/iptables/trace"
	"github.com/svcproxy/svcproxy/proxier/model"
	"github.com/svcproxy/svcproxy/proxier/model/testobj"
	"github.com/svcproxy/svcproxy/proxier/rules"
	"github.com/svcproxy/svcproxy/proxier/rules/rulestest"
)

// dispatchScenario has four Services in three buckets of 16 (by the low
// four bits of their IPs: .10 → A, .26 → A, .20 → 4, .30 → E), one without
// endpoints (its REJECT goes to a filter bucket) and one NodePort.
func dispatchScenario() scenario {
	return scenario{
		name: "dispatch",
		services: []*v1.Service{
			webService,
			testobj.Service("demo", "web2", "203.0.113.26", testobj.Port("http", v1.ProtocolTCP, 80)),
			testobj.Service("demo", "shop", "203.0.113.20", testobj.NodePort("http", v1.ProtocolTCP, 80, 30080)),
			testobj.Service("demo", "empty", "203.0.113.30", testobj.Port("http", v1.ProtocolTCP, 80)),
		},
		slices: []*discovery.EndpointSlice{
			webSlice,
			testobj.Slice("demo", "web2", "web2-1", testobj.TCPPort("http", 8080), testobj.Endpoint("198.51.100.70", testobj.OnNode("node2"))),
			testobj.Slice("demo", "shop", "shop-1", testobj.TCPPort("http", 8080), testobj.Endpoint("198.51.100.4", testobj.OnNode("node1"))),
		},
	}
}

func TestDispatchGoldenAndFlows(t *testing.T) {
	defer rules.SetDispatchThreshold(2)()
	sc := dispatchScenario()
	checkGolden(t, goldenPath(rules.LayoutCompact, sc.name), sc.render(t, rules.LayoutCompact).Data)
	if kp := sc.render(t, rules.LayoutKubeProxy).Data; bytes.Contains(kp, []byte("KUBE-DISPATCH-")) {
		t.Errorf("kube-proxy's layout dispatches:\n%s", kp)
	}
	runFlows(t, applyToFake(t, sc), defaultTraceContext(), []flow{
		{name: "web through bucket A", src: podOnNode1, dst: "203.0.113.10", port: 80, origin: trace.Incoming, endpoints: webEndpoints},
		{name: "web2 shares bucket A", src: podOnNode1, dst: "203.0.113.26", port: 80, origin: trace.Incoming, endpoints: []string{"198.51.100.70:8080"}},
		{name: "shop through bucket 4", src: podOnNode1, dst: "203.0.113.20", port: 80, origin: trace.Incoming, endpoints: []string{"198.51.100.4:8080"}},
		{name: "no endpoints: REJECT through a filter bucket", src: podOnNode1, dst: "203.0.113.30", port: 80, origin: trace.Incoming,
			endpoints: []string{}, verdicts: []string{"REJECT"}},
		{name: "NodePort after the buckets", src: outsideIP, dst: nodeIP, port: 30080, origin: trace.Incoming, endpoints: []string{"198.51.100.4:8080"}},
		{name: "a bucket's other IP is no service", src: podOnNode1, dst: "203.0.113.42", port: 80, origin: trace.Incoming,
			endpoints: []string{}, verdicts: []string{"ACCEPT"}},
	})
}

// A partial render writes the changed Service's chains, its bucket and the
// small shared chains, nothing else; applied over the previous rules (and
// with the chains it reports unreferenced deleted), the kernel holds what a
// full render of the new state gives.
func TestDispatchPartialMatchesRebuild(t *testing.T) {
	defer rules.SetDispatchThreshold(2)()
	sc := dispatchScenario()
	cfg := rulestest.NodeConfig()
	before, err := model.BuildSnapshot(sc.services, sc.slices, cfg.Family)
	if err != nil {
		t.Fatal(err)
	}
	full := rules.Render(before, cfg, rules.RenderOptions{Full: true})

	steps := []struct {
		name    string
		svc     string
		objects func() ([]*v1.Service, []*discovery.EndpointSlice)
		writes  []string // chains the partial restore must declare (besides the shared ones)
		keeps   []string // chains it must leave alone
	}{
		{"web2 loses its endpoint", "web2", func() ([]*v1.Service, []*discovery.EndpointSlice) {
			return sc.services, []*discovery.EndpointSlice{sc.slices[0], sc.slices[2]}
		}, []string{"KUBE-DISPATCH-A"}, []string{"KUBE-DISPATCH-4", "KUBE-SVC-XRY76EGRC3BSCIIJ"}},
		{"shop is deleted", "shop", func() ([]*v1.Service, []*discovery.EndpointSlice) {
			return []*v1.Service{sc.services[0], sc.services[1], sc.services[3]}, []*discovery.EndpointSlice{sc.slices[0], sc.slices[1]}
		}, nil, []string{"KUBE-DISPATCH-A", "KUBE-SVC-XRY76EGRC3BSCIIJ"}},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			ipt := iptables.NewFake(iptables.IPv4)
			ctx := context.Background()
			if err := ipt.Restore(ctx, full.Data, iptables.RestoreOptions{NoFlush: true}); err != nil {
				t.Fatal(err)
			}
			svcs, slices := st.objects()
			after, err := model.BuildSnapshot(svcs, slices, cfg.Family)
			if err != nil {
				t.Fatal(err)
			}
			partial := rules.Render(after, cfg, rules.RenderOptions{Previous: full.Index, Changed: map[types.NamespacedName]bool{{Namespace: "demo", Name: st.svc}: true}})
			if partial.Full {
				t.Fatalf("the render went full")
			}
			text := string(partial.Data)
			for _, c := range st.writes {
				if !strings.Contains(text, ":"+c+" ") {
					t.Errorf("partial restore does not rewrite %s:\n%s", c, text)
				}
			}
			for _, c := range st.keeps {
				if strings.Contains(text, ":"+c+" ") {
					t.Errorf("partial restore rewrites %s, which did not change:\n%s", c, text)
				}
			}
			if err := ipt.Restore(ctx, partial.Data, iptables.RestoreOptions{NoFlush: true}); err != nil {
				t.Fatalf("partial restore: %v\n%s", err, text)
			}
			deleteChains(t, ipt, partial.Unreferenced)

			want := iptables.NewFake(iptables.IPv4)
			if err := want.Restore(ctx, rules.Render(after, cfg, rules.RenderOptions{Full: true}).Data, iptables.RestoreOptions{NoFlush: true}); err != nil {
				t.Fatal(err)
			}
			if got, want := ipt.Dump().String(), want.Dump().String(); got != want {
				t.Errorf("incremental rules differ from a rebuild:\n%s", lineDiff([]byte(want), []byte(got)))
			}
			if partial.NATRulesTotal != rules.Render(after, cfg, rules.RenderOptions{Full: true}).NATRulesTotal {
				t.Errorf("NATRulesTotal %d after the partial render, %d after a full one", partial.NATRulesTotal, rules.Render(after, cfg, rules.RenderOptions{Full: true}).NATRulesTotal)
			}
		})
	}
}

// deleteChains deletes chains the way the daemon does: flushed, then
// deleted, in rules.DeletionOrder.
func deleteChains(t *testing.T, ipt *iptables.Fake, byTable map[string][]string) {
	t.Helper()
	var b strings.Builder
	for _, table := range []string{"filter", "nat"} {
		chains := rules.DeletionOrder(byTable[table])
		if len(chains) == 0 {
			continue
		}
		b.WriteString("*" + table + "\n")
		for _, c := range chains {
			b.WriteString(":" + c + " - [0:0]\n")
		}
		for _, c := range chains {
			b.WriteString("-X " + c + "\n")
		}
		b.WriteString("COMMIT\n")
	}
	if b.Len() == 0 {
		return
	}
	if err := ipt.Restore(context.Background(), []byte(b.String()), iptables.RestoreOptions{NoFlush: true}); err != nil {
		t.Fatalf("deleting %v: %v", byTable, err)
	}
}

// At 10,000 Services × 10 endpoints, the restore input for one endpoint
// change is at most 1% of the full text (the scale issue's target), and
// the render does not go through every Service's rules.
func TestPartialRestoreIsSmallAt10k(t *testing.T) {
	if testing.Short() {
		t.Skip("renders 10,000 Services")
	}
	svcs, slices := testobj.Many(10000, 10)
	cfg := rulestest.NodeConfig()
	cfg.Topology.NodeName = "node3" // testobj.Many puts the endpoints on node1 and node2: this node hosts none
	snap, err := model.BuildSnapshot(svcs, slices, cfg.Family)
	if err != nil {
		t.Fatal(err)
	}
	full := rules.Render(snap, cfg, rules.RenderOptions{Full: true})
	// One endpoint of svc-5000 moves.
	tr := model.NewChangeTracker(cfg.Family)
	for i, s := range svcs {
		tr.ServiceChanged(types.NamespacedName{Namespace: s.Namespace, Name: s.Name}, s, testNow)
		tr.EndpointSliceChanged(slices[i], false, testNow)
	}
	live := model.NewSnapshot()
	if _, _, err := tr.Update(live); err != nil {
		t.Fatal(err)
	}
	moved := slices[5000].DeepCopy()
	moved.Endpoints[3].Addresses = []string{"10.255.0.1"}
	tr.EndpointSliceChanged(moved, false, testNow)
	changed, _, err := tr.Update(live)
	if err != nil || len(changed) != 1 {
		t.Fatalf("changed %v, %v", changed, err)
	}
	partial := rules.Render(live, cfg, rules.RenderOptions{Previous: full.Index, Changed: changed})
	ratio := float64(len(partial.Data)) / float64(len(full.Data))
	t.Logf("full restore %d bytes (%d nat rules), partial %d bytes (%.3f%%)", len(full.Data), full.NATRulesTotal, len(partial.Data), 100*ratio)
	if partial.Full || ratio > 0.01 {
		t.Errorf("partial restore is %.2f%% of the full one (full render: %v); want at most 1%%", 100*ratio, partial.Full)
	}
	if got := bytes.Count(partial.Data, []byte("\n:KUBE-SVC-")); got != 1 {
		t.Errorf("partial restore declares %d service chains, want 1", got)
	}
	if partial.NATRulesTotal != full.NATRulesTotal {
		t.Errorf("NATRulesTotal %d after moving an endpoint, %d before", partial.NATRulesTotal, full.NATRulesTotal)
	}
	if kp := bytes.Count(full.Data, []byte("\n:KUBE-")); kp > 12000 {
		t.Errorf("compact layout at 10,000 × 10 declares %d chains; want about 11,000 (kube-proxy's: 110,000)", kp)
	}
}

var testNow = time.Unix(1_700_000_000, 0)
