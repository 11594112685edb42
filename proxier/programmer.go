package proxier

import (
	"context"
	"sync/atomic"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/svcproxy/svcproxy/iptables"
	"github.com/svcproxy/svcproxy/proxier/metrics"
	"github.com/svcproxy/svcproxy/proxier/model"
	"github.com/svcproxy/svcproxy/proxier/rules"
)

// Programmer writes one IP family's rules into the kernel and remembers what
// it wrote: the Index a partial sync starts from, and the chains of ours no
// rule uses any more, which it deletes a batch at a time. The Proxier's
// sync goroutine owns one; tests drive one directly. It is not safe for
// concurrent use.
type Programmer struct {
	ipt    iptables.Interface
	clock  clock.WithTickerAndDelayedExecution
	log    klog.Logger
	family string // metrics label

	last  *rules.Index
	stale staleChains
	// staleFailures counts failed stale-chain deletions in a row.
	staleFailures int
	// canariesMade is read by the Proxier's canary watcher.
	canariesMade atomic.Bool
	// steps: how long the last Program call's steps took.
	steps Steps
}

// NewProgrammer returns a Programmer for ipt, whose family (for metrics and
// logs) is family. A nil clock means the real one.
func NewProgrammer(ipt iptables.Interface, family string, clk clock.WithTickerAndDelayedExecution, log klog.Logger) *Programmer {
	if clk == nil {
		clk = clock.RealClock{}
	}
	return &Programmer{ipt: ipt, clock: clk, log: log, family: family, stale: staleChains{}}
}

// ProgramRequest is one sync's worth of rules.
type ProgramRequest struct {
	Snapshot *model.Snapshot
	Config   *rules.NodeConfig
	// Full rewrites every chain, re-ensures the jumps and canaries and looks
	// for stale chains in the kernel; otherwise only what the Changed
	// Services touch is written (the render may still decide to go full).
	Full    bool
	Changed map[types.NamespacedName]bool
}

// Program applies the request (see Apply). On success it remembers the
// rendered Index and the chains the render left unused (after a full
// render: every chain of ours in the kernel that the rules do not use). On
// failure it forgets the Index, so the next call renders in full.
func (g *Programmer) Program(ctx context.Context, req ProgramRequest) (*rules.Rendered, error) {
	rendered, err := Apply(ctx, g.ipt, ApplyRequest{Snapshot: req.Snapshot, Config: req.Config, Full: req.Full, Changed: req.Changed, Previous: g.last, Clock: g.clock, Steps: &g.steps})
	if err != nil {
		// The caller logs it (the error names the restore's offending
		// line and the lines around it).
		g.last = nil
		return rendered, err
	}
	g.last = rendered.Index
	if rendered.Full {
		start := g.clock.Now()
		g.findStaleChains(ctx)
		g.steps.ListChains = g.clock.Since(start)
	} else {
		g.stale.add(rendered.Unreferenced)
	}
	if req.Full {
		if err := EnsureCanaries(ctx, g.ipt); err != nil {
			g.log.Error(err, "Failed to create canary chains; table flushes will be noticed only at periodic full syncs")
		} else {
			g.canariesMade.Store(true)
		}
	}
	return rendered, nil
}

// findStaleChains lists the chains of our tables (cheap even at 100,000
// chains, see iptables.Interface.ListChains), which catches chains left by
// an earlier run or by kube-proxy. A failed listing is logged and counted;
// those chains are then found at the next full sync.
func (g *Programmer) findStaleChains(ctx context.Context) {
	active := g.last.Chains()
	for _, table := range staleTables {
		existing, err := g.ipt.ListChains(ctx, table)
		if err != nil {
			g.log.Error(err, "Failed to list chains; stale chains stay until the next full sync", "table", table)
			metrics.IPTablesReadFailuresTotal.WithLabelValues(g.family, "list chains").Inc()
			continue
		}
		g.stale.replace(table, existing, active[string(table)])
	}
	metrics.StaleChainsPending.WithLabelValues(g.family).Set(float64(g.stale.count()))
}

// DeleteStale deletes up to StaleBatch stale chains and reports how many it
// deleted and how many are left. A failure is logged and counted, and the
// batch goes back to be tried again at the next sync: a chain of a batch
// left behind keeps its rules, whose jumps would make the deletion of the
// chains they reach fail too (nft: "Device or resource busy"), batch after
// batch. After staleRetries failures in a row the batch is dropped (the
// next full sync lists whatever is left).
func (g *Programmer) DeleteStale(ctx context.Context) (deleted, left int) {
	if g.stale.count() == 0 || g.last == nil {
		return 0, g.stale.count()
	}
	batch := g.stale.take(StaleBatch, g.last.Chains())
	for _, chains := range batch {
		deleted += len(chains)
	}
	if err := deleteChains(ctx, g.ipt, batch); err != nil {
		g.staleFailures++
		retry := g.staleFailures <= staleRetries
		g.log.Error(err, "Failed to delete stale chains", "chains", deleted, "retryNextSync", retry)
		metrics.StaleChainDeletionFailuresTotal.WithLabelValues(g.family).Inc()
		if retry {
			back := map[string][]string{}
			for table, chains := range batch {
				back[string(table)] = chains
			}
			g.stale.add(back)
		} else {
			g.staleFailures = 0
		}
		deleted = 0
	} else {
		g.staleFailures = 0
		metrics.StaleChainsDeletedTotal.WithLabelValues(g.family).Add(float64(deleted))
	}
	left = g.stale.count()
	metrics.StaleChainsPending.WithLabelValues(g.family).Set(float64(left))
	return deleted, left
}

// staleRetries is how many times in a row a failed stale-chain batch is
// tried again.
const staleRetries = 3

// Steps is how long the last Program call's steps took.
func (g *Programmer) Steps() Steps { return g.steps }

// CanariesMade reports whether a full sync has created the canary chains.
func (g *Programmer) CanariesMade() bool { return g.canariesMade.Load() }
