package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/svcproxy/svcproxy/hack/lab"
)

// a. bulk: N service ports created through the API while every daemon runs;
// time to "every KUBE-SVC chain present", syncs, their mean duration, CPU.
func (b *bench) bulk(ctx context.Context) error {
	n := b.servicePorts()
	want := n + 3 // + kubernetes, echo1, echo2
	before := b.snapshotMetrics(ctx)
	cpuBefore := b.cpu()

	t0 := time.Now()
	watchCtx, stopWatch := context.WithTimeout(ctx, 8*time.Minute)
	defer stopWatch()
	reachedAll := b.watchChains(watchCtx, t0, want)
	if err := b.createServices(ctx); err != nil {
		stopWatch()
		reachedAll()
		return err
	}
	created := time.Since(t0)
	logf("created %d Services + %d EndpointSlices (%d service ports) in %s", b.svcs, b.svcs, n, created.Round(time.Millisecond))
	reached := reachedAll()
	if err := ctx.Err(); err != nil {
		return err
	}
	for k, d := range b.ds {
		if reached[k] == 0 {
			return fmt.Errorf("%s on %s: not all %d KUBE-SVC chains present within the bound\n%s", d.label, d.node.Name, want, d.proc.LogTail(3000))
		}
		logf("%s: all KUBE-SVC chains present %s after the first create", d.label, reached[k].Round(time.Millisecond))
	}
	if err := b.waitSyncedSince(ctx, t0.Add(created)); err != nil {
		return err
	}
	if err := b.waitStable(ctx); err != nil {
		return err
	}
	after := b.snapshotMetrics(ctx)
	cpuAfter := b.cpu()

	t := b.results
	t.sec(fmt.Sprintf("a. bulk: create %d service ports × %d endpoints through the API (took %s), both proxies running", n, b.cfg.M, created.Round(time.Millisecond)))
	t.add("create → all KUBE-SVC chains present (s)", "%.2f", secondsOf(reached)...)
	t.add("syncs during the bulk phase", "%.0f", delta(before, after, syncDuration+"_count")...)
	t.add("mean sync duration in the bulk phase (ms)", "%.1f", scale(1000, mean(before, after, syncDuration))...)
	t.add("daemon CPU in the bulk phase, incl. iptables-restore (s)", "%.2f", minus(cpuAfter, cpuBefore)...)
	t.add("nat rules (kubeproxy_sync_proxy_rules_iptables_total{table=nat})", "%.0f", pick(after, natRulesByTable)...)
	return b.natCost(ctx)
}

// watchChains starts one watcher per daemon that records when its nat table
// first holds want KUBE-SVC chains. iptables-save of a large table costs a
// lot of CPU (which the daemons under test need), so it runs only after
// each new sync (last-sync metric watched every 100 ms); the time recorded
// is that sync's end (its metric) minus t0. The returned function waits for
// the watchers (they stop when ctx ends) and returns the times (0: not
// reached).
func (b *bench) watchChains(ctx context.Context, t0 time.Time, want int) (wait func() []time.Duration) {
	reached := make([]time.Duration, len(b.ds))
	var g errgroup.Group
	for k, d := range b.ds {
		g.Go(func() error {
			reached[k] = b.watchDaemonChains(ctx, d, t0, want)
			return nil
		})
	}
	return func() []time.Duration {
		_ = g.Wait()
		return reached
	}
}

func (b *bench) watchDaemonChains(ctx context.Context, d *daemon, t0 time.Time, want int) time.Duration {
	last := -1.0
	for ctx.Err() == nil {
		m, err := b.metrics(ctx, d)
		ts := m[lastSync]
		if err == nil && ts != last && ts > unix(t0) {
			last = ts
			nat, err := b.nat(ctx, d)
			if err == nil && countSvcChains(nat) >= want {
				// A sync that ended during the save may be the one that
				// completed the table: take the latest (an upper bound).
				if m2, err := b.metrics(ctx, d); err == nil {
					ts = max(ts, m2[lastSync])
				}
				return time.Duration((ts - unix(t0)) * 1e9)
			}
		}
		sleep(ctx, 100*time.Millisecond)
	}
	return 0
}

// waitSyncedSince waits (bounded) until every daemon has synced after t.
func (b *bench) waitSyncedSince(ctx context.Context, t time.Time) error {
	for _, d := range b.ds {
		err := lab.Poll(ctx, 2*time.Minute, 200*time.Millisecond, func() error {
			m, err := b.metrics(ctx, d)
			if err != nil {
				return err
			}
			if m[lastSync] < unix(t) {
				return errors.New("no sync after the last change yet")
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("%s did not converge: %w", d.label, err)
		}
	}
	return nil
}

// waitStable waits (bounded) until no daemon's nat rule count changes over
// two consecutive one-second samples.
func (b *bench) waitStable(ctx context.Context) error {
	var prev []int
	stable := 0
	for i := 0; i < 60 && stable < 2 && ctx.Err() == nil; i++ {
		cur := make([]int, len(b.ds))
		for k, d := range b.ds {
			s, err := b.nat(ctx, d)
			if err != nil {
				return err
			}
			cur[k] = countRules(s)
		}
		if slices.Equal(cur, prev) {
			stable++
		} else {
			stable = 0
		}
		prev = cur
		sleep(ctx, time.Second)
	}
	if stable < 2 {
		return errors.New("rule counts did not settle within 60s")
	}
	return nil
}

// natCost adds the size of each daemon's nat table as iptables-save shows
// it, and what one save of it costs.
func (b *bench) natCost(ctx context.Context) error {
	rules := make([]float64, len(b.ds))
	saveMS := make([]float64, len(b.ds))
	for k, d := range b.ds {
		s, _ := b.nat(ctx, d)
		rules[k] = float64(countRules(s))
	}
	for k, d := range b.ds {
		var xs []float64
		for r := 0; r < 5; r++ {
			st := time.Now()
			if _, err := b.nat(ctx, d); err != nil {
				return err
			}
			xs = append(xs, float64(time.Since(st).Microseconds())/1000)
		}
		saveMS[k] = quantile(xs, 0.5)
	}
	t := b.results
	t.add("nat rules (iptables-save -t nat | grep -c ^-A)", "%.0f", rules...)
	t.add("one `iptables-save -t nat` of that table (ms, median of 5; same size on both)", "%.0f", saveMS...)
	return nil
}

// Small helpers for per-daemon rows.

func secondsOf(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for k, d := range ds {
		out[k] = d.Seconds()
	}
	return out
}

func scale(f float64, xs []float64) []float64 {
	out := make([]float64, len(xs))
	for k, x := range xs {
		out[k] = f * x
	}
	return out
}

func minus(a, b []float64) []float64 {
	out := make([]float64, len(a))
	for k := range a {
		out[k] = a[k] - b[k]
	}
	return out
}

func pick(ms []map[string]float64, key string) []float64 {
	out := make([]float64, len(ms))
	for k, m := range ms {
		out[k] = m[key]
	}
	return out
}
