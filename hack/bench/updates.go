package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"golang.org/x/sync/errgroup"
)

// updateBound bounds the wait for one update to reach a daemon's rules.
const updateBound = 30 * time.Second

// b. rule-update latency: K single-EndpointSlice updates (one service port's
// target port changes); time from the API update to the new DNAT target in
// each daemon's nat table.
func (b *bench) updates(ctx context.Context) error {
	before := b.snapshotMetrics(ctx)
	cpuBefore := b.cpu()
	lat := make([][]float64, len(b.ds))
	for u := 0; u < b.cfg.K; u++ {
		got, err := b.update(ctx, u)
		if err != nil {
			return err
		}
		for k, d := range got {
			lat[k] = append(lat[k], d.Seconds()*1000)
		}
		sleep(ctx, 300*time.Millisecond+b.cfg.MinSync) // the next update is not rate-limited by the previous sync
	}
	after := b.snapshotMetrics(ctx)
	cpuAfter := b.cpu()

	t := b.results
	t.sec(fmt.Sprintf("b. rule-update latency: %d single-EndpointSlice updates (one service port's target port changes), API update → new DNAT in iptables-save", b.cfg.K))
	t.add("latency median (ms)", "%.0f", perDaemon(lat, func(x []float64) float64 { return quantile(x, 0.5) })...)
	t.add("latency p90 (ms)", "%.0f", perDaemon(lat, func(x []float64) float64 { return quantile(x, 0.9) })...)
	t.add("latency max (ms)", "%.0f", perDaemon(lat, func(x []float64) float64 { return quantile(x, 1) })...)
	t.add("kubeproxy_network_programming_duration_seconds mean (ms)", "%.0f", scale(1000, mean(before, after, programming))...)
	t.add("syncs during the updates", "%.0f", delta(before, after, syncDuration+"_count")...)
	t.add("mean sync duration, updates (ms)", "%.1f", scale(1000, mean(before, after, syncDuration))...)
	t.add("mean partial sync duration (ms)", "%.1f", scale(1000, mean(before, after, partialSync))...)
	t.add("daemon CPU per update, incl. iptables-restore (ms)", "%.0f", scale(1000/float64(b.cfg.K), minus(cpuAfter, cpuBefore))...)
	return nil
}

// update makes update u (a target port change of one service port) and
// returns how long each daemon took to program it.
func (b *bench) update(ctx context.Context, u int) ([]time.Duration, error) {
	i := (u*7919 + 13) % b.svcs
	p := u % b.ports
	sl := b.slices[i].DeepCopy()
	newPort := int32(20000 + u)
	sl.Ports[p].Port = ptr.To(newPort)
	if sl.Annotations == nil {
		sl.Annotations = map[string]string{}
	}
	t0 := time.Now()
	sl.Annotations[corev1.EndpointsLastChangeTriggerTime] = t0.UTC().Format(time.RFC3339Nano)
	updated, err := b.cs.DiscoveryV1().EndpointSlices(kns).Update(ctx, sl, metav1.UpdateOptions{})
	if err != nil {
		return nil, fmt.Errorf("update %s: %w", sl.Name, err)
	}
	b.slices[i] = updated
	target := fmt.Sprintf("--to-destination %s:%d", sl.Endpoints[0].Addresses[0], newPort)
	took := make([]time.Duration, len(b.ds))
	var g errgroup.Group
	for k, d := range b.ds {
		g.Go(func() error {
			var err error
			if took[k], err = b.waitRule(ctx, d, t0, target); err != nil {
				return fmt.Errorf("%s: %s not programmed: %w", d.label, target, err)
			}
			return nil
		})
	}
	return took, g.Wait()
}

// waitRule returns how long after t0 d's nat table first held target. It
// watches the last-sync metric every 20 ms and checks iptables-save after
// each new sync (and every 2 s regardless), so the resolution is ~20 ms
// rather than the duration of an iptables-save of the whole table.
func (b *bench) waitRule(ctx context.Context, d *daemon, t0 time.Time, target string) (time.Duration, error) {
	deadline := t0.Add(updateBound)
	last := -1.0
	lastSave := time.Time{}
	for i := 0; time.Now().Before(deadline) && ctx.Err() == nil && i < 100000; i++ {
		m, err := b.metrics(ctx, d)
		now := time.Now()
		ts := m[lastSync]
		if err == nil && ts != last || now.Sub(lastSave) > 2*time.Second {
			last = ts
			lastSave = now
			if s, err := b.nat(ctx, d); err == nil && strings.Contains(s, target) {
				return now.Sub(t0), nil
			}
		}
		sleep(ctx, 20*time.Millisecond)
	}
	if ctx.Err() != nil {
		return 0, ctx.Err()
	}
	return 0, errors.New("timed out")
}
