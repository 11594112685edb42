package proxier

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/svcproxy/svcproxy/iptables"
	"github.com/svcproxy/svcproxy/proxier/model"
	"github.com/svcproxy/svcproxy/proxier/model/testobj"
	"github.com/svcproxy/svcproxy/proxier/rules"
	"github.com/svcproxy/svcproxy/proxier/rules/rulestest"
)

// newTestProxier returns a Proxier over a fresh fake iptables, for node1 of
// rulestest; edits adjust its Config first.
func newTestProxier(t *testing.T, edits ...func(*Config)) (*Proxier, *iptables.Fake) {
	t.Helper()
	ipt := iptables.NewFake(iptables.IPv4)
	cfg := Config{
		IPTables:      ipt,
		NodeConfig:    func(*v1.Node) *rules.NodeConfig { return rulestest.NodeConfig() },
		SyncPeriod:    30e9,
		MinSyncPeriod: 1e9,
	}
	for _, edit := range edits {
		edit(&cfg)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p, ipt
}

// listed feeds p the objects as its informers' initial lists.
func listed(p *Proxier, services []*v1.Service, slices []*discovery.EndpointSlice) {
	for _, s := range services {
		p.OnServiceAdd(s)
	}
	for _, s := range slices {
		p.OnEndpointSliceAdd(s)
	}
	p.OnServicesSynced()
	p.OnEndpointSlicesSynced()
}

// syncedWithWeb returns a proxier whose informers have listed, after a first
// sync that programmed demo/web.
func syncedWithWeb(t *testing.T) (*Proxier, *iptables.Fake) {
	t.Helper()
	p, ipt := newTestProxier(t)
	listed(p, []*v1.Service{webService}, []*discovery.EndpointSlice{webSlice})
	mustSync(t, p)
	return p, ipt
}

func mustSync(t *testing.T, p *Proxier) {
	t.Helper()
	if err := p.syncProxyRules(context.Background()); err != nil {
		t.Fatalf("sync: %v", err)
	}
}

func natChain(ipt *iptables.Fake, chain string) *iptables.Chain {
	return ipt.Dump().Chain(iptables.TableNAT, chain)
}

func TestNoRulesBeforeInformersSynced(t *testing.T) {
	p, ipt := newTestProxier(t)
	p.OnServiceAdd(webService)
	p.OnServicesSynced()
	mustSync(t, p)
	if ipt.Restores() != 0 {
		t.Fatalf("restored before EndpointSlices were listed")
	}
	p.OnEndpointSlicesSynced()
	mustSync(t, p)
	if ipt.Restores() != 1 {
		t.Fatalf("want one restore after both informers synced, got %d", ipt.Restores())
	}
}

// Neither the changes that arrive while the informers list (each Service
// and slice of the initial lists, the Node) nor the first of the two lists
// to be in may start a sync that does nothing but start MinSyncPeriod's
// wait: the first real sync runs as soon as both lists are in (found by
// hack/bignode: svcproxy's first sync came up to --iptables-min-sync-period
// after its lists).
func TestFirstSyncIsNotHeldBackByMinSyncPeriod(t *testing.T) {
	for _, slicesFirst := range []bool{false, true} {
		t.Run(fmt.Sprintf("slicesListedFirst=%v", slicesFirst), func(t *testing.T) {
			p, ipt := newTestProxier(t, func(c *Config) {
				c.MinSyncPeriod = time.Hour
				c.SyncPeriod = 2 * time.Hour
			})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- p.Run(ctx) }()
			defer func() {
				cancel()
				<-done
			}()
			// A sync requested at any step below would run at once and
			// then hold the next one back for an hour.
			p.OnServiceAdd(webService)
			p.OnEndpointSliceAdd(webSlice)
			time.Sleep(100 * time.Millisecond)
			first, second := p.OnServicesSynced, p.OnEndpointSlicesSynced
			if slicesFirst {
				first, second = second, first
			}
			first()
			time.Sleep(100 * time.Millisecond)
			second()
			deadline := time.Now().Add(5 * time.Second)
			for ipt.Restores() == 0 {
				if time.Now().After(deadline) {
					t.Fatal("no restore within 5s of both lists being in (MinSyncPeriod 1h)")
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

func TestFirstSyncIsFullAndEnsuresJumps(t *testing.T) {
	_, ipt := syncedWithWeb(t)

	for _, j := range rules.Jumps() {
		chain := ipt.Dump().Chain(iptables.Table(j.Table), j.From)
		if chain == nil || !hasRuleTo(chain, j.To) {
			t.Errorf("missing jump %s/%s -> %s", j.Table, j.From, j.To)
		}
	}
	if natChain(ipt, rules.ClusterPolicyChain(testobj.WebPortName)) == nil {
		t.Fatalf("KUBE-SVC chain for demo/web not written")
	}
}

func hasRuleTo(c *iptables.Chain, target string) bool {
	for _, r := range c.Rules {
		if strings.Contains(r.Raw, "-j "+target) {
			return true
		}
	}
	return false
}

func TestPartialSyncWritesOnlyChangedServices(t *testing.T) {
	p, ipt := newTestProxier(t)
	p.OnServicesSynced()
	p.OnEndpointSlicesSynced()
	shop := testobj.Service("demo", "shop", "203.0.113.20", testobj.Port("http", v1.ProtocolTCP, 80))
	shopSlice := testobj.Slice("demo", "shop", "shop-1", testobj.TCPPort("http", 8080), testobj.Endpoint("198.51.100.4"))
	p.OnServiceAdd(webService)
	p.OnEndpointSliceAdd(webSlice)
	p.OnServiceAdd(shop)
	p.OnEndpointSliceAdd(shopSlice)
	mustSync(t, p)

	// Scale shop: only its chains may appear in the next restore.
	scaled := shopSlice.DeepCopy()
	scaled.Endpoints = append(scaled.Endpoints, testobj.Endpoint("198.51.100.7"))
	p.OnEndpointSliceUpdate(shopSlice, scaled)
	mustSync(t, p)
	last := string(ipt.LastRestore())
	if strings.Contains(last, ":"+rules.ClusterPolicyChain(testobj.WebPortName)) {
		t.Errorf("partial sync rewrote unchanged demo/web chains:\n%s", last)
	}
	shopName := model.ServicePortName{NamespacedName: types.NamespacedName{Namespace: "demo", Name: "shop"}, Port: "http", Protocol: v1.ProtocolTCP}
	if !strings.Contains(last, ":"+rules.ClusterPolicyChain(shopName)) {
		t.Errorf("partial sync did not write demo/shop chains:\n%s", last)
	}
	// demo/web's chains are still in the kernel and still referenced.
	if natChain(ipt, rules.ClusterPolicyChain(testobj.WebPortName)) == nil {
		t.Fatalf("demo/web chain vanished after a partial sync")
	}
	if got := len(natChain(ipt, rules.ClusterPolicyChain(shopName)).Rules); got != 3 {
		t.Errorf("demo/shop KUBE-SVC has %d rules, want 3 (masq + 2 endpoints)", got)
	}
}

func TestDeletedServiceChainsAreRemoved(t *testing.T) {
	p, ipt := syncedWithWeb(t)
	p.OnServiceDelete(webService)
	p.OnEndpointSliceDelete(webSlice)
	mustSync(t, p)
	for _, c := range ipt.Dump().Table(iptables.TableNAT).Chains {
		if rules.IsServiceChain(c.Name) {
			t.Errorf("stale chain %s left behind", c.Name)
		}
	}
}

func TestNoOpUpdateDoesNotQueue(t *testing.T) {
	p, _ := newTestProxier(t)
	p.OnServiceAdd(webService)
	p.OnEndpointSliceAdd(webSlice)
	p.tracker.Update(p.snapshot)

	touched := webService.DeepCopy()
	touched.ResourceVersion = "42"
	touched.Annotations = map[string]string{"unrelated": "yes"}
	p.OnServiceUpdate(webService, touched)
	sliceTouched := webSlice.DeepCopy()
	sliceTouched.ResourceVersion = "43"
	p.OnEndpointSliceUpdate(webSlice, sliceTouched)
	if n, _ := p.tracker.Pending(); n != 0 {
		t.Fatalf("metadata-only updates queued %d services", n)
	}
}

func TestChangeAndRevertIsNotAChange(t *testing.T) {
	p, _ := newTestProxier(t)
	p.OnServiceAdd(webService)
	p.OnEndpointSliceAdd(webSlice)
	p.tracker.Update(p.snapshot)

	scaled := webSlice.DeepCopy()
	scaled.Endpoints = scaled.Endpoints[:1]
	p.OnEndpointSliceUpdate(webSlice, scaled)
	p.OnEndpointSliceUpdate(scaled, webSlice)
	changed, _, _ := p.tracker.Update(p.snapshot)
	if len(changed) != 0 {
		t.Fatalf("a change and its revert marked %v as changed", changed)
	}
}

func TestRestoreFailureKeepsOldRulesAndForcesFullSync(t *testing.T) {
	p, ipt := syncedWithWeb(t)
	before := ipt.Dump()

	scaled := webSlice.DeepCopy()
	scaled.Endpoints = scaled.Endpoints[:1]
	p.OnEndpointSliceUpdate(webSlice, scaled)
	ipt.FailNextRestore(errors.New("injected failure"))
	if err := p.syncProxyRules(context.Background()); err == nil {
		t.Fatal("sync succeeded despite an injected restore failure")
	}
	if got, want := ipt.Dump().Table(iptables.TableNAT), before.Table(iptables.TableNAT); len(got.Chains) != len(want.Chains) {
		t.Fatalf("failed restore changed the nat table")
	}
	if !p.needFullSync {
		t.Fatal("a failed sync must make the next one full")
	}
	failed := len(ipt.RestoreInputs())
	mustSync(t, p)
	if retry := ipt.RestoreInputs()[failed]; !strings.Contains(string(retry), ":"+rules.ClusterPolicyChain(testobj.WebPortName)) {
		t.Fatalf("retry after failure was not a full sync:\n%s", retry)
	}
	if got := len(natChain(ipt, rules.ClusterPolicyChain(testobj.WebPortName)).Rules); got != 2 {
		t.Errorf("after retry KUBE-SVC has %d rules, want 2 (masq + 1 endpoint)", got)
	}
}

func TestInvalidServiceDoesNotBlockOthers(t *testing.T) {
	var reported []error
	p, ipt := newTestProxier(t)
	p.cfg.Problems = func(err error) { reported = append(reported, err) }
	p.OnServicesSynced()
	p.OnEndpointSlicesSynced()
	bad := testobj.Service("demo", "bad", "203.0.113.99", testobj.Port("http", "ICMP", 80))
	p.OnServiceAdd(bad)
	p.OnServiceAdd(webService)
	p.OnEndpointSliceAdd(webSlice)
	mustSync(t, p)
	if natChain(ipt, rules.ClusterPolicyChain(testobj.WebPortName)) == nil {
		t.Fatal("a bad Service stopped a good one from being programmed")
	}
	if len(reported) != 1 || !strings.Contains(reported[0].Error(), "Service demo/bad: spec.ports[0].protocol") {
		t.Fatalf("want one problem naming Service demo/bad and its field, got %v", reported)
	}
}

func TestCanaryDetectsFlush(t *testing.T) {
	ipt := iptables.NewFake(iptables.IPv4)
	ctx := context.Background()
	if err := EnsureCanaries(ctx, ipt); err != nil {
		t.Fatal(err)
	}
	if err := EnsureJumps(ctx, ipt, rulestest.NodeConfig()); err != nil {
		t.Fatal(err)
	}
	if ok, _ := CanariesPresent(ctx, ipt); !ok {
		t.Fatal("canaries missing right after creation")
	}
	ipt.FlushTable(iptables.TableNAT)
	if ok, _ := CanariesPresent(ctx, ipt); ok {
		t.Fatal("flush of nat not detected")
	}

	// A flush that deletes no chain (iptables -t nat -F) is caught by the
	// missing jump into KUBE-SERVICES.
	if err := EnsureCanaries(ctx, ipt); err != nil {
		t.Fatal(err)
	}
	if err := EnsureJumps(ctx, ipt, rulestest.NodeConfig()); err != nil {
		t.Fatal(err)
	}
	for _, chain := range []string{"PREROUTING", "OUTPUT"} {
		if err := ipt.FlushChain(ctx, iptables.TableNAT, chain); err != nil {
			t.Fatal(err)
		}
	}
	if ok, _ := CanariesPresent(ctx, ipt); ok {
		t.Fatal("flush of the nat built-in chains not detected")
	}

	// Likewise for the filter table, after the full sync's EnsureJumps.
	if err := EnsureJumps(ctx, ipt, rulestest.NodeConfig()); err != nil {
		t.Fatal(err)
	}
	if ok, _ := CanariesPresent(ctx, ipt); !ok {
		t.Fatal("canaries missing after the jumps were ensured again")
	}
	for _, chain := range []string{"FORWARD", "OUTPUT", "INPUT"} {
		if err := ipt.FlushChain(ctx, iptables.TableFilter, chain); err != nil {
			t.Fatal(err)
		}
	}
	if ok, _ := CanariesPresent(ctx, ipt); ok {
		t.Fatal("flush of the filter built-in chains not detected")
	}
}

var _ = discovery.AddressTypeIPv4

// rules.Jumps are passed to iptables as argv: a quote would become part of the
// comment, breaking kube-proxy compatibility (and EnsureRule's duplicate check).
func TestJumpArgsAreUnquoted(t *testing.T) {
	for _, j := range rules.Jumps() {
		for _, a := range j.Args {
			if strings.Contains(a, `"`) {
				t.Errorf("jump %s/%s -> %s has a quoted argument %q", j.Table, j.From, j.To, a)
			}
		}
	}
	text := rules.JumpsRestoreText(rules.Jumps())["nat"]
	if !slices.Contains(text, `-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`) {
		t.Errorf("restore text of jumps not quoted as iptables-restore expects: %q", text)
	}
}

func TestCrossingLargeClusterThresholdForcesFullSync(t *testing.T) {
	p, ipt := syncedWithWeb(t)

	big := testobj.Service("demo", "big", "203.0.113.60", testobj.Port("http", v1.ProtocolTCP, 80))
	var eps []discovery.Endpoint
	for i := 0; i < rules.LargeClusterEndpointsThreshold+1; i++ {
		eps = append(eps, testobj.Endpoint(fmt.Sprintf("198.51.%d.%d", 100+i/250, 1+i%250)))
	}
	p.OnServiceAdd(big)
	p.OnEndpointSliceAdd(testobj.Slice("demo", "big", "big-1", testobj.TCPPort("http", 8080), eps...))
	mustSync(t, p)
	last := string(ipt.LastRestore())
	if !strings.Contains(last, ":"+rules.ClusterPolicyChain(testobj.WebPortName)) {
		t.Fatal("crossing the large-cluster threshold did not rewrite unchanged services")
	}
	if strings.Contains(last, `"demo/web:http -> 198.51.100.2:8080"`) {
		t.Error("large-cluster mode should drop per-endpoint comments")
	}
}

type fakeServiceHealth struct {
	ports  map[types.NamespacedName]uint16
	counts map[types.NamespacedName]int
}

func (f *fakeServiceHealth) SyncServices(p map[types.NamespacedName]uint16) error {
	f.ports = p
	return nil
}
func (f *fakeServiceHealth) SyncEndpoints(c map[types.NamespacedName]int) { f.counts = c }

func TestServiceHealthFollowsSyncs(t *testing.T) {
	p, _ := newTestProxier(t)
	sh := &fakeServiceHealth{}
	p.cfg.ServiceHealth = sh
	p.OnServicesSynced()
	p.OnEndpointSlicesSynced()
	p.OnServiceAdd(lbService)
	p.OnEndpointSliceAdd(lbSlice)
	mustSync(t, p)
	lb := types.NamespacedName{Namespace: "demo", Name: "lb"}
	if sh.ports[lb] != 31040 {
		t.Fatalf("health check ports = %v, want demo/lb on 31040", sh.ports)
	}
	if sh.counts[lb] != 1 {
		t.Fatalf("local ready endpoints = %v, want 1 for demo/lb (one of two endpoints is on node1)", sh.counts)
	}
	p.OnServiceDelete(lbService)
	mustSync(t, p)
	if len(sh.ports) != 0 {
		t.Fatalf("health check still open after the Service was deleted: %v", sh.ports)
	}
}

func TestPendingChangeCounts(t *testing.T) {
	p, _ := newTestProxier(t)
	p.OnServiceAdd(webService)
	p.OnEndpointSliceAdd(webSlice)
	scaled := webSlice.DeepCopy()
	scaled.Endpoints = scaled.Endpoints[:1]
	p.OnEndpointSliceUpdate(webSlice, scaled)
	total, pending := p.tracker.Counts()
	if pending.ServiceChanges != 1 || pending.EndpointChanges != 2 {
		t.Fatalf("pending = %+v, want 1 service and 2 endpoint changes", pending)
	}
	p.tracker.Update(p.snapshot)
	total2, pending := p.tracker.Counts()
	if pending != (model.ChangeCounts{}) || total2 != total {
		t.Fatalf("after Update: pending %+v (want zero), total %+v (want %+v)", pending, total2, total)
	}
}

// No sync reads a whole table (iptables-save takes minutes and crashes on
// a node with 100,000 chains): a full sync lists chain names, a partial one
// knows its stale chains from what it rendered, and both delete them.
func TestSyncsNeverSaveATable(t *testing.T) {
	p, ipt := syncedWithWeb(t)
	scaled := webSlice.DeepCopy()
	scaled.Endpoints = scaled.Endpoints[:1]
	p.OnEndpointSliceUpdate(webSlice, scaled)
	mustSync(t, p)
	p.requestFullSync()
	mustSync(t, p)
	if ipt.Saves() != 0 {
		t.Fatalf("syncs ran iptables-save %d times", ipt.Saves())
	}
	for _, c := range ipt.Dump().Table(iptables.TableNAT).Chains {
		if strings.HasPrefix(c.Name, "KUBE-SEP-") && c.Name != rules.EndpointChain(testobj.WebPortName, "198.51.100.2:8080") {
			t.Errorf("stale endpoint chain %s survived the partial sync", c.Name)
		}
	}
}

// The change tracker keeps the snapshot (and its per-Service index) up to
// date incrementally; after any sequence of changes it must equal a
// snapshot built from scratch from the same objects.
