package proxier

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/svcproxy/svcproxy/iptables"
	"github.com/svcproxy/svcproxy/proxier/rules"
)

// gatedIPTables is a Fake whose iptables-restore and canary reads can be
// made to block until their ctx ends, and which counts calls still in
// flight and every write. noWrites makes any write a test error.
type gatedIPTables struct {
	*iptables.Fake
	t        *testing.T
	noWrites bool

	block          atomic.Bool
	inFlight       atomic.Int32
	writes         atomic.Int32
	restoreBlocked chan struct{} // closed when a restore blocks
	canaryBlocked  chan struct{} // closed when a canary read blocks
	once1, once2   sync.Once
}

func newGated(t *testing.T) *gatedIPTables {
	return &gatedIPTables{Fake: iptables.NewFake(iptables.IPv4), t: t,
		restoreBlocked: make(chan struct{}), canaryBlocked: make(chan struct{})}
}

// hold blocks until ctx ends, then a little longer, so that a caller that
// does not wait for the call is caught returning while it is in flight.
func (g *gatedIPTables) hold(ctx context.Context, entered chan struct{}, once *sync.Once) {
	once.Do(func() { close(entered) })
	<-ctx.Done()
	time.Sleep(50 * time.Millisecond)
}

func (g *gatedIPTables) wrote(what string) {
	g.writes.Add(1)
	if g.noWrites {
		g.t.Errorf("iptables written (%s) where only reads are allowed", what)
	}
}

func (g *gatedIPTables) Restore(ctx context.Context, data []byte, opts iptables.RestoreOptions) error {
	g.inFlight.Add(1)
	defer g.inFlight.Add(-1)
	g.wrote("restore")
	if g.block.Load() {
		g.hold(ctx, g.restoreBlocked, &g.once1)
		return ctx.Err() // killed: nothing applied
	}
	return g.Fake.Restore(ctx, data, opts)
}

func (g *gatedIPTables) ChainExists(ctx context.Context, table iptables.Table, chain string) (bool, error) {
	g.inFlight.Add(1)
	defer g.inFlight.Add(-1)
	if g.block.Load() && chain == rules.ChainProxyCanary {
		g.hold(ctx, g.canaryBlocked, &g.once2)
		return false, ctx.Err()
	}
	return g.Fake.ChainExists(ctx, table, chain)
}

func (g *gatedIPTables) EnsureChain(ctx context.Context, table iptables.Table, chain string) error {
	g.wrote("-N " + chain)
	return g.Fake.EnsureChain(ctx, table, chain)
}

func (g *gatedIPTables) EnsureRule(ctx context.Context, pos iptables.Position, table iptables.Table, chain string, args ...string) (bool, error) {
	g.wrote(string(pos) + " " + chain)
	return g.Fake.EnsureRule(ctx, pos, table, chain, args...)
}

func (g *gatedIPTables) DeleteRule(ctx context.Context, table iptables.Table, chain string, args ...string) error {
	g.wrote("-D " + chain)
	return g.Fake.DeleteRule(ctx, table, chain, args...)
}

func (g *gatedIPTables) FlushChain(ctx context.Context, table iptables.Table, chain string) error {
	g.wrote("-F " + chain)
	return g.Fake.FlushChain(ctx, table, chain)
}

func (g *gatedIPTables) DeleteChain(ctx context.Context, table iptables.Table, chain string) error {
	g.wrote("-X " + chain)
	return g.Fake.DeleteChain(ctx, table, chain)
}

// waitFor polls cond until it holds; it fails only if nothing happens for
// far longer than any machine needs (the verdict never depends on speed).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up after a minute waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Run returns only once every goroutine it started has: a restore in
// flight when ctx ends is killed (it applies nothing) and waited for, and
// so is the canary watcher's check in flight.
func TestRunReturnsOnlyAfterItsGoroutines(t *testing.T) {
	ipt := newGated(t)
	clk := clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	p, _ := newTestProxier(t, func(c *Config) { c.IPTables = ipt; c.Clock = clk })
	listed(p, []*v1.Service{webService}, []*discovery.EndpointSlice{webSlice})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	waitFor(t, "the first sync", func() bool { return p.prog.CanariesMade() })

	// From now on restores and canary reads block until ctx ends. Move the
	// fake clock on and ask for full syncs until both are stuck.
	ipt.block.Store(true)
	stuck := func(c chan struct{}) bool {
		select {
		case <-c:
			return true
		default:
			return false
		}
	}
	waitFor(t, "a restore and a canary check in flight", func() bool {
		clk.Step(p.canaryInterval())
		p.requestFullSync()
		return stuck(ipt.restoreBlocked) && stuck(ipt.canaryBlocked)
	})

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Run did not return within a minute of its ctx ending")
	}
	if n := ipt.inFlight.Load(); n != 0 {
		t.Fatalf("Run returned with %d iptables calls still in flight", n)
	}
}

// The canary watcher only reads: with every canary gone it asks the sync
// goroutine for a full sync and writes nothing itself.
func TestCanaryWatcherNeverWrites(t *testing.T) {
	ipt := newGated(t)
	clk := clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	p, _ := newTestProxier(t, func(c *Config) { c.IPTables = ipt; c.Clock = clk })
	listed(p, []*v1.Service{webService}, []*discovery.EndpointSlice{webSlice})
	mustSync(t, p) // creates the canaries
	if !p.prog.CanariesMade() {
		t.Fatal("the full sync made no canaries")
	}
	for _, table := range canaryTables {
		ipt.FlushTable(table)
	}
	ipt.noWrites = true
	writesBefore := ipt.writes.Load()
	p.fullRequested.Store(false)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.watchCanary(ctx)
	}()
	waitFor(t, "the watcher to ask for a full sync", func() bool {
		clk.Step(p.canaryInterval())
		return p.fullRequested.Load()
	})
	cancel()
	<-done
	if n := ipt.writes.Load() - writesBefore; n != 0 {
		t.Errorf("the canary watcher wrote to iptables %d times", n)
	}
	if ok, _ := ipt.Fake.ChainExists(context.Background(), iptables.TableNAT, rules.ChainProxyCanary); ok {
		t.Error("the canary watcher re-created a canary chain; only the sync goroutine may")
	}
}
