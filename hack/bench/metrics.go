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
// family's samples (lab.Metrics.Flat): both daemons run dual-stack in the
// lab and an idle family's syncs would dilute the means.
func (b *bench) metrics(ctx context.Context, d *daemon) (map[string]float64, error) {
	m, err := lab.ScrapeMetrics(ctx, d.node.NS, lab.MetricsURL)
	if err != nil {
		return nil, err
	}
	return m.Flat(b.family), nil
}

// snapshotMetrics scrapes every daemon (an empty map for one that fails,
// logged).
func (b *bench) snapshotMetrics(ctx context.Context) []map[string]float64 {
	out := make([]map[string]float64, len(b.ds))
	for k, d := range b.ds {
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

// nat is d's nat table (iptables-save -t nat; ip6tables for an IPv6 bench).
func (b *bench) nat(ctx context.Context, d *daemon) (string, error) {
	return lab.SaveTable(ctx, d.node.NS, b.family, "nat")
}

// countSvcChains counts KUBE-SVC-* chain declarations in iptables-save -t nat.
func countSvcChains(nat string) int { return strings.Count(nat, "\n:KUBE-SVC-") }

// countRules counts the rules in iptables-save output.
func countRules(save string) int { return strings.Count(save, "\n-A ") }

// rulePosition returns the 1-based index of the first KUBE-SERVICES rule
// containing comment, and the number of KUBE-SERVICES rules.
func rulePosition(nat, comment string) (pos, total float64) {
	for _, line := range strings.Split(nat, "\n") {
		if !strings.HasPrefix(line, "-A KUBE-SERVICES ") {
			continue
		}
		total++
		if pos == 0 && strings.Contains(line, comment) {
			pos = total
		}
	}
	return pos, total
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
