package dataplane

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"

	"github.com/svcproxy/svcproxy/hack/testns"
	"github.com/svcproxy/svcproxy/iptables"
	"github.com/svcproxy/svcproxy/proxier/explain"
	"github.com/svcproxy/svcproxy/proxier/explain/explaintest"
	"github.com/svcproxy/svcproxy/proxier/model"
	"github.com/svcproxy/svcproxy/proxier/nodeconfig"
	"github.com/svcproxy/svcproxy/proxier/rules"
)

// bigTablePorts is issue 14's big node: 10,000 service ports (250 Services
// of 40 ports, TEST-NET addresses), in svcproxy's compact layout (dispatch
// buckets). kube-proxy's 110,000-chain layout takes minutes to restore and
// is left out on purpose.
const bigTablePorts = 10_000

// TestExplainBigTable runs live explain on a node holding 10,000 service
// ports (real iptables in a scratch namespace): it answers, reading only
// the chains the packet reaches. The times are printed, not asserted.
func TestExplainBigTable(t *testing.T) {
	ns := testns.New(t)
	for _, c := range [][]string{
		{"ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1"},
		{"ip", "addr", "add", "192.0.2.11/24", "dev", "v0"},
		{"ip", "link", "set", "lo", "up"}, {"ip", "link", "set", "v0", "up"}, {"ip", "link", "set", "v1", "up"},
		{"ip", "route", "add", "default", "via", "192.0.2.1", "dev", "v0"},
	} {
		ns.Run(t, c...)
	}
	ipt, err := iptables.New(iptables.NetnsExecutor{Namespace: ns.Name}, iptables.Options{})
	if err != nil {
		t.Fatal(err)
	}
	svcs, slices := explaintest.Services(bigTablePorts)
	snap, err := model.BuildSnapshot(svcs, slices, v1.IPv4Protocol)
	if err != nil {
		t.Fatal(err)
	}
	cfg := (&nodeconfig.Builder{Settings: nodeconfig.Settings{MasqueradeBit: 14, DetectLocalMode: nodeconfig.LocalModeClusterCIDR},
		Family: v1.IPv4Protocol, NodeName: "node1", RandomFully: ipt.HasRandomFully()}).Build(nil)
	data := rules.WithJumps(rules.Render(snap, cfg, rules.RenderOptions{Full: true}).Data, rules.JumpsFor(cfg))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	if err := ipt.Restore(ctx, data, iptables.RestoreOptions{}); err != nil {
		t.Fatalf("restore: %v", err)
	}
	chains, err := ipt.ListChains(ctx, iptables.TableNAT)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("restored %d service ports (%d nat chains, %s backend) in %v", bigTablePorts, len(chains), ipt.Backend(), time.Since(start).Round(time.Millisecond))
	bin := explainBinary(t)

	i, j := 123, 7 // bench/svc-123, port p7
	byAddr := fmt.Sprintf("%s:%d", explaintest.ServiceIP(i), 1000+j)
	byName := fmt.Sprintf("bench/svc-%d:p%d", i, j)
	for _, to := range []string{byAddr, byName} {
		start := time.Now()
		code, out := explainIn(t, bin, ns.Name, "--from-node", "--to", to, "-o", "json")
		took := time.Since(start)
		var rep explain.Report
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("explain --to %s: exit %d, not a report: %v\n%s", to, code, err, out)
		}
		t.Logf("explain --from-node --to %s: exit %d in %v (%d chains read of %d in nat): %s",
			to, code, took.Round(time.Millisecond), rep.Rules.ChainsRead, len(chains), rep.Verdict)
		if code != 0 || rep.Status != explain.StatusOK || len(rep.Endpoints()) != 2 || !strings.Contains(rep.Verdict, byAddr+"/tcp reaches 2 endpoints of "+fmt.Sprintf("bench/svc-%d:p%d", i, j)) {
			t.Errorf("explain --to %s: exit %d:\n%s", to, code, rep.Text())
		}
		if rep.Rules.ChainsRead == 0 || rep.Rules.ChainsRead > 400 {
			t.Errorf("explain --to %s read %d chains; it should read only those the packet reaches (and the dispatch buckets when resolving a name)", to, rep.Rules.ChainsRead)
		}
	}
}
