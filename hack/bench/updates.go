package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"golang.org/x/sync/errgroup"
)

// updateBound bounds the wait for one change to reach a daemon's rules.
const updateBound = 30 * time.Second

// Metric names of the rules written by the last sync (iptables modes).
const (
	natLast    = `kubeproxy_sync_proxy_rules_iptables_last{table="nat"}`
	filterLast = `kubeproxy_sync_proxy_rules_iptables_last{table="filter"}`
)

// b. one-endpoint change: K EndpointSlice updates, each moving one endpoint
// of one Service to a new address; time from the API write to the new
// address in that Service's chain in each running daemon's kernel tables.
func (b *bench) updates(ctx context.Context) error {
	n := len(b.ds)
	before := b.snapshotMetrics(ctx)
	cpuBefore := b.cpu()
	lat := make([][]float64, n)
	written := make([][]float64, n)
	for u := 0; u < b.cfg.K; u++ {
		got, err := b.update(ctx, u)
		if err != nil {
			return err
		}
		ms := b.snapshotMetrics(ctx)
		for k, d := range b.ds {
			if d.running {
				lat[k] = append(lat[k], got[k].Seconds()*1000)
				if !d.nft {
					written[k] = append(written[k], ms[k][natLast]+ms[k][filterLast])
				}
			}
		}
		sleep(ctx, 300*time.Millisecond+b.cfg.MinSync) // the next change is not rate-limited by the previous sync
	}
	after := b.snapshotMetrics(ctx)
	cpuAfter := b.cpu()
	restoreBytes := nans(n)
	for k, d := range b.ds {
		if d.svcproxy && d.running {
			if log, err := os.ReadFile(d.proc.Log); err == nil {
				restoreBytes[k] = quantile(lastN(partialRestoreBytes(string(log)), b.cfg.K), 0.5)
			}
		}
	}
	med := perDaemon(lat, func(x []float64) float64 { return quantile(x, 0.5) })
	cpu := scale(1000/float64(b.cfg.K), minus(cpuAfter, cpuBefore))
	b.res.update, b.res.cpuPerUpdate = med, cpu

	t := b.results
	t.sec(fmt.Sprintf("b. one-endpoint change: %d EndpointSlice updates (one endpoint of one Service moves), API write → new address in that Service's chain (ip6tables -S / nft list chain)", b.cfg.K))
	t.add("latency median (ms)", "%.0f", med...)
	t.add("latency p90 (ms)", "%.0f", perDaemon(lat, func(x []float64) float64 { return quantile(x, 0.9) })...)
	t.add("latency max (ms)", "%.0f", perDaemon(lat, func(x []float64) float64 { return quantile(x, 1) })...)
	t.add("kubeproxy_network_programming_duration_seconds mean (ms)", "%.0f", scale(1000, mean(before, after, programming))...)
	t.add("mean sync duration (ms)", "%.1f", scale(1000, mean(before, after, syncDuration))...)
	t.add("restore bytes per change, median (svcproxy log restoreBytes)", "%.0f", restoreBytes...)
	t.add("rules written per change, median (kubeproxy_sync_proxy_rules_iptables_last nat+filter)", "%.0f", perDaemon(written, func(x []float64) float64 { return quantile(x, 0.5) })...)
	t.add("daemon CPU per update, incl. iptables-restore / nft (ms)", "%.1f", cpu...)
	return nil
}

// update makes change u (endpoint 0 of one Service moves to a new address)
// and returns how long each running daemon took to program it.
func (b *bench) update(ctx context.Context, u int) ([]time.Duration, error) {
	i := (u*7919 + 13) % b.cfg.N
	sl := b.slices[i].DeepCopy()
	addr := updateAddr(u)
	sl.Endpoints[0].Addresses = []string{addr}
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
	took := make([]time.Duration, len(b.ds))
	var g errgroup.Group
	for k, d := range b.ds {
		if !d.running {
			continue
		}
		g.Go(func() error {
			var err error
			if took[k], err = b.waitEndpoint(ctx, d, t0, b.serviceName(i), addr); err != nil {
				return fmt.Errorf("%s: %s of %s not programmed: %w", d.label, addr, b.serviceName(i), err)
			}
			return nil
		})
	}
	return took, g.Wait()
}

// waitEndpoint returns how long after t0 d's chain of Service name first
// listed addr. It watches the last-sync metric every 20 ms and lists the
// chain after each new sync (and every 2 s regardless).
func (b *bench) waitEndpoint(ctx context.Context, d *daemon, t0 time.Time, name, addr string) (time.Duration, error) {
	deadline := t0.Add(updateBound)
	last := -1.0
	lastList := time.Time{}
	for i := 0; time.Now().Before(deadline) && ctx.Err() == nil && i < 100000; i++ {
		m, err := b.metrics(ctx, d)
		now := time.Now()
		ts := m[lastSync]
		if err == nil && ts != last || now.Sub(lastList) > 2*time.Second {
			last = ts
			lastList = now
			if s, err := b.svcChain(ctx, d, name); err == nil && hasEndpoint(s, name, addr, d.nft) {
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

var restoreBytesRE = regexp.MustCompile(`"Synced proxy rules"[^\n]* changedServices=[1-9][0-9]* restoreBytes=([0-9]+)`)

// partialRestoreBytes returns restoreBytes of every partial sync svcproxy
// logged (at --v 2) that changed a Service, in order (a family whose
// Services did not change logs changedServices=0).
func partialRestoreBytes(log string) []float64 {
	var out []float64
	for _, m := range restoreBytesRE.FindAllStringSubmatch(log, -1) {
		v, err := strconv.ParseFloat(m[1], 64)
		if err == nil {
			out = append(out, v)
		}
	}
	return out
}

func lastN(xs []float64, n int) []float64 {
	if len(xs) > n {
		return xs[len(xs)-n:]
	}
	return xs
}
