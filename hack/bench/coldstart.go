package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/svcproxy/svcproxy/hack/lab"
)

// a'. cold start: each daemon restarted alone with every service programmed;
// its first (full) sync's duration and exec → end of that sync.
func (b *bench) coldStart(ctx context.Context) error {
	n := b.servicePorts()
	var wall, full, count []float64
	for _, d := range b.ds {
		m, err := b.restart(ctx, d, n+3)
		if err != nil {
			return err
		}
		w := m[lastSync] - unix(d.start)
		f := m[fullSync+"_sum"] / m[fullSync+"_count"]
		logf("%s cold start: first sync done %.2fs after exec, full sync %.0f ms", d.label, w, f*1000)
		wall, full, count = append(wall, w), append(full, f), append(count, m[fullSync+"_count"])
	}
	t := b.results
	t.sec(fmt.Sprintf("a'. cold start with %d service ports programmed (each daemon restarted alone, the other idle)", n))
	t.add("full sync duration (kubeproxy_sync_full_proxy_rules_duration_seconds) (ms)", "%.0f", scale(1000, full)...)
	t.add("exec → end of first sync (last_timestamp − start) (s)", "%.2f", wall...)
	t.add("full syncs counted by then", "%.0f", count...)
	return nil
}

// restart stops d, starts it again and waits until it has made a full sync
// with want KUBE-SVC chains; it returns d's metrics then. (startDaemon
// returns after the first sync; kube-proxy syncs only once both informers
// synced, as svcproxy does, but make sure that sync was a full one with
// every service.)
func (b *bench) restart(ctx context.Context, d *daemon, want int) (map[string]float64, error) {
	d.stop()
	sleep(ctx, time.Second)
	if err := b.startDaemon(ctx, d, restartBound); err != nil {
		return nil, err
	}
	var m map[string]float64
	err := lab.Poll(ctx, 2*time.Minute, 50*time.Millisecond, func() error {
		var err error
		if m, err = b.metrics(ctx, d); err != nil {
			return err
		}
		if m[fullSync+"_count"] < 1 {
			return errors.New("no full sync yet")
		}
		nat, err := b.nat(ctx, d)
		if err != nil {
			return err
		}
		if countSvcChains(nat) < want {
			return errors.New("not all chains yet")
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%s after restart: %w", d.label, err)
	}
	return m, nil
}

// resources: each daemon's RSS and CPU since its restart (after the cold
// start, so the same history for every daemon).
func (b *bench) resources(context.Context) error {
	var rss, cpu []float64
	for _, d := range b.ds {
		c, r := procStats(d.proc.Pid())
		cpu, rss = append(cpu, c), append(rss, r/1024)
	}
	t := b.results
	t.sec("resources (after the cold start)")
	t.add("daemon RSS (MiB)", "%.0f", rss...)
	t.add("daemon CPU since the restart, incl. iptables-restore (s)", "%.2f", cpu...)
	return nil
}
