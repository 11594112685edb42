package proxier

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/svcproxy/svcproxy/iptables"
	"github.com/svcproxy/svcproxy/proxier/model"
	"github.com/svcproxy/svcproxy/proxier/rules"
)

// ApplyRequest is one sync's worth of work for Apply.
type ApplyRequest struct {
	Snapshot *model.Snapshot
	Config   *rules.NodeConfig
	// Full rewrites every chain and re-ensures the jumps from the built-in
	// chains; otherwise only what the Changed Services touch is written.
	Full    bool
	Changed map[types.NamespacedName]bool
	// Previous is the Index of the last successful apply (nil: none).
	Previous *rules.Index
	// Clock times the restore (its bound and progress log); nil means the
	// real clock.
	Clock clock.WithTickerAndDelayedExecution
	// Steps, when not nil, gets how long each step took.
	Steps *Steps
}

// Steps is how long the steps of one sync took: what the one-line sync log
// shows, so that a slow sync says where its time went.
type Steps struct {
	Jumps, Render, Restore, ListChains time.Duration
}

// LogValues are the steps as log key/value pairs (only those that ran).
func (s Steps) LogValues() []any {
	var kv []any
	for _, st := range []struct {
		key string
		d   time.Duration
	}{{"jumps", s.Jumps}, {"render", s.Render}, {"restore", s.Restore}, {"listChains", s.ListChains}} {
		if st.d > 0 {
			kv = append(kv, st.key, st.d.Round(time.Millisecond))
		}
	}
	return kv
}

// ApplyError says which step of Apply failed. Restore failures wrap an
// *iptables.RestoreError that names the offending line.
type ApplyError struct {
	Step string // "ensure jumps", "restore"
	Err  error
}

func (e *ApplyError) Error() string { return e.Step + ": " + e.Err.Error() }
func (e *ApplyError) Unwrap() error { return e.Err }

// Apply renders the request and applies it with one atomic
// iptables-restore --noflush. On a full sync it first ensures the jumps from
// the built-in chains (which the restore input cannot own). Any error leaves
// the previous rules in place: iptables-restore applies all or nothing.
//
// The restore is given RestoreTimeout of its input and no less: a restore
// that is working is never cancelled for being slow (on iptables-nft a
// large table takes minutes), while one stuck behind someone else's
// xtables lock fails after the lock wait (-w). ctx still ends it at once
// (SIGTERM). While it runs, it is logged every RestoreProgressInterval.
//
// Apply never reads a whole table: stale chains are the caller's business
// (see Rendered.Unreferenced and Index.Chains).
func Apply(ctx context.Context, ipt iptables.Interface, req ApplyRequest) (*rules.Rendered, error) {
	clk := req.Clock
	if clk == nil {
		clk = clock.RealClock{}
	}
	steps := req.Steps
	if steps == nil {
		steps = &Steps{}
	}
	*steps = Steps{}
	start := clk.Now()
	if req.Full {
		if err := EnsureJumps(ctx, ipt, req.Config); err != nil {
			return nil, &ApplyError{Step: "ensure jumps", Err: err}
		}
	}
	opts := rules.RenderOptions{Full: req.Full, Changed: req.Changed, Previous: req.Previous}
	if req.Full && req.Config.PodEgress == nil {
		// Only to flush a pod egress chain left from an earlier run.
		exists, err := ipt.ChainExists(ctx, iptables.TableNAT, rules.ChainPodEgress)
		if err == nil && exists {
			opts.ExistingNATChains = []string{rules.ChainPodEgress}
		}
	}
	steps.Jumps = clk.Since(start)
	start = clk.Now()
	rendered := rules.Render(req.Snapshot, req.Config, opts)
	steps.Render = clk.Since(start)
	start = clk.Now()
	err := restoreWatched(ctx, clk, ipt, rendered.Data)
	steps.Restore = clk.Since(start)
	if err != nil {
		return rendered, &ApplyError{Step: "restore", Err: err}
	}
	return rendered, nil
}

// RestoreTimeout bounds an iptables-restore of data: two minutes plus 2 ms
// per line. That is a bound on a restore gone wrong, not on a slow one:
// iptables-nft restored kube-proxy's layout of 10,000 Services × 10
// endpoints (430,000 lines) in 185-280 s on a 2-core machine; this allows
// it 16 minutes.
func RestoreTimeout(data []byte) time.Duration {
	lines := 0
	for _, b := range data {
		if b == '\n' {
			lines++
		}
	}
	return 2*time.Minute + time.Duration(lines)*2*time.Millisecond
}

// RestoreProgressInterval is how often a running restore is logged.
const RestoreProgressInterval = 30 * time.Second

// errRestoreBound is the cause of a restore's cancellation at its bound.
var errRestoreBound = errors.New("iptables-restore ran past its bound")

// restoreWatched runs the restore with RestoreTimeout (on clk), logging
// while it runs.
func restoreWatched(ctx context.Context, clk clock.WithTickerAndDelayedExecution, ipt iptables.Interface, data []byte) error {
	bound := RestoreTimeout(data)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	timer := clk.AfterFunc(bound, func() { cancel(errRestoreBound) })
	defer timer.Stop()
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		start := clk.Now()
		tick := clk.NewTicker(RestoreProgressInterval)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C():
				klog.FromContext(ctx).Info("iptables-restore still running", "elapsed", clk.Since(start).Round(time.Second), "bytes", len(data), "bound", bound)
			}
		}
	}()
	err := ipt.Restore(ctx, data, iptables.RestoreOptions{NoFlush: true, Counters: true})
	close(done)
	wg.Wait()
	if err != nil && errors.Is(context.Cause(ctx), errRestoreBound) {
		err = fmt.Errorf("not finished within %v (2 min + 2 ms per line): %w", bound, err)
	}
	return err
}

// EnsureJumps creates our top-level chains and the jumps into them from the
// built-in chains, in kube-proxy's order (each prepended).
func EnsureJumps(ctx context.Context, ipt iptables.Interface, cfg *rules.NodeConfig) error {
	jumps := append(rules.JumpsFor(cfg), rules.KubeletJumps()...)
	var errs []error
	for _, j := range jumps {
		table := iptables.Table(j.Table)
		if err := ipt.EnsureChain(ctx, table, j.To); err != nil {
			errs = append(errs, fmt.Errorf("chain %s/%s: %w", j.Table, j.To, err))
			continue
		}
		if _, err := ipt.EnsureRule(ctx, iptables.Prepend, table, j.From, j.Args...); err != nil {
			errs = append(errs, fmt.Errorf("jump %s/%s -> %s: %w", j.Table, j.From, j.To, err))
		}
	}
	return errors.Join(errs...)
}
