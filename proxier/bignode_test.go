package proxier

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/svcproxy/svcproxy/iptables"
	"github.com/svcproxy/svcproxy/proxier/model/testobj"
	"github.com/svcproxy/svcproxy/proxier/rules"
	"github.com/svcproxy/svcproxy/proxier/rules/rulestest"
)

// Big nodes (issue 14). These run on the fake iptables with a fake clock:
// "slow" is time the test steps, not time it waits.

func newClockedProxier(t *testing.T, clk *clocktesting.FakeClock) (*Proxier, *iptables.Fake) {
	t.Helper()
	p, ipt := newTestProxier(t, func(c *Config) { c.Clock = clk })
	listed(p, []*v1.Service{webService}, []*discovery.EndpointSlice{webSlice})
	return p, ipt
}

// A restore that takes longer than any fixed deadline (kube-proxy's layout
// at 10,000 Services takes 3-5 minutes on iptables-nft; the sync used to
// kill it at 2) completes: here a restore of 3,000 Services × 10 endpoints
// in kube-proxy's layout (about 130,000 lines) working for 6 minutes.
func TestSlowRestoreIsNotKilled(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Unix(1_700_000_000, 0))
	cfg := rulestest.NodeConfig()
	cfg.Layout = rules.LayoutKubeProxy
	p, ipt := newTestProxier(t, func(c *Config) {
		c.Clock = clk
		c.NodeConfig = func(*v1.Node) *rules.NodeConfig { return cfg }
	})
	svcs, slices := testobj.Many(3000, 10)
	listed(p, svcs, slices)
	ipt.BeforeRestore = func(ctx context.Context) error {
		// Six minutes pass while the restore works, in steps, as the
		// progress ticker and any timer would see them.
		for range 12 {
			clk.Step(30 * time.Second)
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		return nil
	}
	if err := p.syncProxyRules(context.Background()); err != nil {
		t.Fatalf("a restore of six minutes was cancelled: %v", err)
	}
	if got := countPrefix(ipt, "KUBE-SVC-"); got != 3000 {
		t.Fatalf("%d service chains written, want 3000", got)
	}
}

// The bound that remains scales with the restore input, and a restore
// running past it is cancelled and reported, leaving the old rules.
func TestRestoreBoundScalesWithInput(t *testing.T) {
	small := RestoreTimeout([]byte("*nat\nCOMMIT\n"))
	big := RestoreTimeout([]byte(strings.Repeat("-A KUBE-SVC-X -j KUBE-SEP-Y\n", 430_000)))
	if small != 2*time.Minute+4*time.Millisecond || big < 15*time.Minute {
		t.Errorf("RestoreTimeout: %v for 2 lines, %v for 430,000 lines; want 2 min + 2 ms per line", small, big)
	}

	clk := clocktesting.NewFakeClock(time.Unix(1_700_000_000, 0))
	p, ipt := newClockedProxier(t, clk)
	ipt.BeforeRestore = func(ctx context.Context) error {
		for range 100 { // 50 minutes: past any bound of this small input
			clk.Step(30 * time.Second)
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
		}
		return errors.New("the bound never fired")
	}
	err := p.syncProxyRules(context.Background())
	if err == nil || !strings.Contains(err.Error(), "not finished within") {
		t.Fatalf("a restore stuck past its bound: %v; want it cancelled and named", err)
	}
	if !p.needFullSync || natChain(ipt, rules.ClusterPolicyChain(testobj.WebPortName)) != nil {
		t.Errorf("after a cancelled restore: needFullSync %v, rules written %v", p.needFullSync, natChain(ipt, rules.ClusterPolicyChain(testobj.WebPortName)) != nil)
	}
}

// SIGTERM (the daemon's context ending) stops a restore in flight; the
// restore applies nothing, so the node keeps its old rules.
func TestShutdownCancelsRestoreInFlight(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Unix(1_700_000_000, 0))
	p, ipt := newClockedProxier(t, clk)
	ctx, cancel := context.WithCancel(context.Background())
	ipt.BeforeRestore = func(rctx context.Context) error {
		cancel() // SIGTERM arrives while the restore runs
		<-rctx.Done()
		return rctx.Err()
	}
	if err := p.syncProxyRules(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("sync during shutdown: %v, want context.Canceled", err)
	}
	if c := natChain(ipt, rules.ChainServices); c != nil && len(c.Rules) > 0 {
		t.Errorf("a cancelled restore left rules: %v", c.Rules)
	}
}

// Cleanup reads chain by chain: it never saves a whole table.
func TestCleanupNeverSaves(t *testing.T) {
	_, ipt := syncedWithWeb(t)
	if err := Cleanup(context.Background(), ipt, nil); err != nil {
		t.Fatal(err)
	}
	if ipt.Saves() != 0 {
		t.Errorf("cleanup ran iptables-save %d times", ipt.Saves())
	}
}

// Stale chains left by a bigger table (kube-proxy's layout, an earlier run)
// are found by listing chain names and deleted in batches of StaleBatch,
// one batch per sync, after the rules the cluster needs are written.
func TestStaleChainsDeletedInBatches(t *testing.T) {
	p, ipt := newTestProxier(t)
	ctx := context.Background()
	var leftover strings.Builder
	leftover.WriteString("*nat\n")
	for i := range StaleBatch + 500 {
		leftover.WriteString(":KUBE-SEP-OLD" + pad(i) + " - [0:0]\n")
	}
	leftover.WriteString(":KUBE-SVC-OLDSERVICE00000 - [0:0]\n-A KUBE-SVC-OLDSERVICE00000 -j KUBE-SEP-OLD0000000000000\nCOMMIT\n")
	if err := ipt.Restore(ctx, []byte(leftover.String()), iptables.RestoreOptions{NoFlush: true}); err != nil {
		t.Fatal(err)
	}
	listed(p, []*v1.Service{webService}, []*discovery.EndpointSlice{webSlice})
	mustSync(t, p)
	if natChain(ipt, rules.ClusterPolicyChain(testobj.WebPortName)) == nil {
		t.Fatal("the first sync did not write the rules")
	}
	if got := countPrefix(ipt, "KUBE-SEP-OLD"); got != 501 {
		t.Errorf("after the first sync %d old chains remain, want %d (one batch of %d deleted, the SVC chain first)", got, 501, StaleBatch)
	}
	mustSync(t, p)
	if got := countPrefix(ipt, "KUBE-SEP-OLD") + countPrefix(ipt, "KUBE-SVC-OLD"); got != 0 || p.prog.stale.count() != 0 {
		t.Errorf("after the second sync %d old chains remain (%d pending)", got, p.prog.stale.count())
	}
	if ipt.Saves() != 0 {
		t.Errorf("syncs ran iptables-save %d times", ipt.Saves())
	}
}

// pad is i in 13 digits, so KUBE-SEP-OLD<pad> has a chain name's length.
func pad(i int) string { return fmt.Sprintf("%013d", i) }

func countPrefix(ipt *iptables.Fake, prefix string) int {
	n := 0
	for _, c := range ipt.Dump().Table(iptables.TableNAT).Chains {
		if strings.HasPrefix(c.Name, prefix) {
			n++
		}
	}
	return n
}

// failDeletes fails the first stale-chain deletion (a restore with -X
// lines), as an iptables-restore can fail at any time.
type failDeletes struct {
	*iptables.Fake
	failed bool
}

func (f *failDeletes) Restore(ctx context.Context, data []byte, opts iptables.RestoreOptions) error {
	if !f.failed && strings.Contains(string(data), "\n-X ") {
		f.failed = true
		return errors.New("injected failure")
	}
	return f.Fake.Restore(ctx, data, opts)
}

// A stale-chain batch whose deletion failed is tried again at the next
// sync. Dropped, its chains kept their rules, and their jumps made the
// deletion of the chains they reach fail in later batches (found by the
// soak: one failed restore leaked service chains until the hourly full
// sync).
func TestStaleChainsRetriedAfterFailedDeletion(t *testing.T) {
	fake := iptables.NewFake(iptables.IPv4)
	ipt := &failDeletes{Fake: fake}
	p, _ := newTestProxier(t, func(c *Config) { c.IPTables = ipt })
	ctx := context.Background()
	leftover := "*nat\n:KUBE-SVC-OLDSERVICE00000 - [0:0]\n:KUBE-SEP-OLD0000000000000 - [0:0]\n" +
		"-A KUBE-SVC-OLDSERVICE00000 -j KUBE-SEP-OLD0000000000000\nCOMMIT\n"
	if err := fake.Restore(ctx, []byte(leftover), iptables.RestoreOptions{NoFlush: true}); err != nil {
		t.Fatal(err)
	}
	listed(p, []*v1.Service{webService}, []*discovery.EndpointSlice{webSlice})
	mustSync(t, p)
	if !ipt.failed {
		t.Fatal("the first sync did not try to delete the stale chains")
	}
	if got := countPrefix(fake, "KUBE-SEP-OLD") + countPrefix(fake, "KUBE-SVC-OLD"); got != 2 {
		t.Fatalf("after the failed deletion %d old chains remain, want 2", got)
	}
	mustSync(t, p)
	if got := countPrefix(fake, "KUBE-SEP-OLD") + countPrefix(fake, "KUBE-SVC-OLD"); got != 0 || p.prog.stale.count() != 0 {
		t.Errorf("after the next sync %d old chains remain (%d pending), want them deleted", got, p.prog.stale.count())
	}
}

// Dispatch buckets were named KUBE-SVCS-<hex> before they became
// KUBE-DISPATCH-<hex> (a name that sorts first, for iptables-nft's restore
// speed): on a node upgraded from that version the first full sync leaves
// them unreferenced, and they are deleted as stale, with what they reach.
func TestBucketsOfTheOldNameAreDeleted(t *testing.T) {
	p, ipt := newTestProxier(t)
	ctx := context.Background()
	old := "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-SVCS-0 - [0:0]\n:KUBE-SVC-OLDSERVICE00000 - [0:0]\n" +
		"-A KUBE-SERVICES -m comment --comment \"services dispatch 0\" -d 0.0.0.0/0.0.0.15 -j KUBE-SVCS-0\n" +
		"-A KUBE-SVCS-0 -m comment --comment \"old/svc:http cluster IP\" -m tcp -p tcp -d 203.0.113.16 --dport 80 -j KUBE-SVC-OLDSERVICE00000\n" +
		"-A KUBE-SVC-OLDSERVICE00000 -j DNAT --to-destination 198.51.100.9:8080\nCOMMIT\n"
	if err := ipt.Restore(ctx, []byte(old), iptables.RestoreOptions{NoFlush: true}); err != nil {
		t.Fatal(err)
	}
	listed(p, []*v1.Service{webService}, []*discovery.EndpointSlice{webSlice})
	mustSync(t, p)
	if natChain(ipt, rules.ClusterPolicyChain(testobj.WebPortName)) == nil {
		t.Fatal("the first sync did not write the rules")
	}
	if got := countPrefix(ipt, "KUBE-SVCS-") + countPrefix(ipt, "KUBE-SVC-OLD"); got != 0 {
		t.Errorf("after the first full sync %d chains of the old buckets remain", got)
	}
}

// A full sync's log line says where its time went: the restore's share is
// the time the restore took (here 7 s, stepped on the fake clock), and the
// chain listing that follows a full sync is timed too.
func TestSyncStepsAreTimed(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Unix(1_700_000_000, 0))
	p, ipt := newClockedProxier(t, clk)
	ipt.BeforeRestore = func(context.Context) error {
		clk.Step(7 * time.Second)
		return nil
	}
	if err := p.syncProxyRules(context.Background()); err != nil {
		t.Fatal(err)
	}
	steps := p.prog.Steps()
	if steps.Restore != 7*time.Second || steps.Jumps != 0 || steps.Render != 0 {
		t.Errorf("steps %+v: want a restore of 7s and nothing else (the clock moved only during the restore)", steps)
	}
	kv := fmt.Sprint(steps.LogValues())
	if kv != "[restore 7s]" {
		t.Errorf("log values %s, want [restore 7s]", kv)
	}
}
