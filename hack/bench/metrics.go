package main

import (
	"context"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/svcproxy/svcproxy/hack/lab"
)

// Metric names the measurements read (kube-proxy's; svcproxy serves the same).
const (
	lastSync        = "kubeproxy_sync_proxy_rules_last_timestamp_seconds"
	syncDuration    = "kubeproxy_sync_proxy_rules_duration_seconds"
	fullSync        = "kubeproxy_sync_full_proxy_rules_duration_seconds"
	partialSync     = "kubeproxy_sync_partial_proxy_rules_duration_seconds"
	programming     = "kubeproxy_network_programming_duration_seconds"
	natRulesByTable = `kubeproxy_sync_proxy_rules_iptables_total{table="nat"}`
)

// metrics scrapes d's metrics endpoint (127.0.0.1:10249 in its node) with
// hack/lab's scraper (the Prometheus text parser) and keeps the bench
// family's samples (lab.Metrics.Flat): every daemon runs dual-stack in the
// lab and an idle family's syncs would dilute the means.
func (b *bench) metrics(ctx context.Context, d *daemon) (map[string]float64, error) {
	m, err := lab.ScrapeMetrics(ctx, d.node.NS, lab.MetricsURL)
	if err != nil {
		return nil, err
	}
	return m.Flat(b.family), nil
}

// snapshotMetrics scrapes every running daemon (an empty map for one that
// is not running or fails, logged).
func (b *bench) snapshotMetrics(ctx context.Context) []map[string]float64 {
	out := make([]map[string]float64, len(b.ds))
	for k, d := range b.ds {
		if !d.running {
			out[k] = map[string]float64{}
			continue
		}
		m, err := b.metrics(ctx, d)
		if err != nil {
			logf("metrics of %s: %v", d.label, err)
			m = map[string]float64{}
		}
		out[k] = m
	}
	return out
}

// delta is after − before of key, per daemon.
func delta(before, after []map[string]float64, key string) []float64 {
	out := make([]float64, len(after))
	for k := range after {
		out[k] = after[k][key] - before[k][key]
	}
	return out
}

// mean of a histogram or summary between two scrapes, per daemon (NaN when
// no samples).
func mean(before, after []map[string]float64, name string) []float64 {
	sums, counts := delta(before, after, name+"_sum"), delta(before, after, name+"_count")
	out := make([]float64, len(after))
	for k := range out {
		out[k] = math.NaN()
		if counts[k] != 0 {
			out[k] = sums[k] / counts[k]
		}
	}
	return out
}

// countRules counts the rules of chain in `iptables -S` output.
func countRules(listing, chain string) int {
	n := 0
	for _, line := range strings.Split(listing, "\n") {
		if strings.HasPrefix(line, "-A "+chain+" ") {
			n++
		}
	}
	return n
}

var nan = math.NaN()

// nans is n NaNs (a row's "n/a" values).
func nans(n int) []float64 {
	out := make([]float64, n)
	for k := range out {
		out[k] = nan
	}
	return out
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func unix(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(q*float64(len(s)-1) + 0.5)
	return s[min(i, len(s)-1)]
}

// perDaemon applies f to each daemon's values.
func perDaemon(xs [][]float64, f func([]float64) float64) []float64 {
	out := make([]float64, len(xs))
	for k, x := range xs {
		out[k] = f(x)
	}
	return out
}

// Small helpers for per-daemon rows.

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
