package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/svcproxy/svcproxy/hack/lab"
)

// Metric names (kube-proxy's; svcproxy serves the same, plus its own).
const (
	lastSync     = "kubeproxy_sync_proxy_rules_last_timestamp_seconds"
	syncDuration = "kubeproxy_sync_proxy_rules_duration_seconds"
	fullSync     = "kubeproxy_sync_full_proxy_rules_duration_seconds"
	stalePending = "svcproxy_stale_chains_pending"
)

// Probe cadence: one TCP connection to the probe Service every probeEvery,
// each given probeTimeout.
const (
	probeEvery   = 200 * time.Millisecond
	probeTimeout = time.Second
	metricsEvery = 250 * time.Millisecond
)

// daemon is one process start of a case.
type daemon struct {
	id, label string
	node      *lab.Node
	svcproxy  bool
	argv      []string
}

// result is one case's row.
type result struct {
	id, label string
	served    time.Duration // start → new endpoint answered (0: not served)
	bound     time.Duration
	changeAt  time.Duration // start → the slice update returned
	firstSync float64       // seconds: the first full sync's duration (metric)
	syncEnd   time.Duration // start → end of the first full sync (0: not seen)
	staleZero time.Duration // start → svcproxy_stale_chains_pending = 0 after the first sync (svcproxy; 0: not seen)
	syncLines []string      // svcproxy's "Synced all proxy rules" lines (IPv6) of this process
	before    string        // what the probe reached just before the start
	load      string
	err       string
}

func (r *runner) commonArgs(n *lab.Node) []string {
	return []string{
		"--kubeconfig", r.cp.Kubeconfig(),
		"--hostname-override", n.Name,
		"--cluster-cidr", lab.PodNetwork + "," + lab.PodNetwork6,
		"--iptables-min-sync-period", "1s",
		"--iptables-sync-period", "1h",
		"--conntrack-max-per-core", "0",
		"--healthz-bind-address", n.IP + ":10256",
		"--metrics-bind-address", "127.0.0.1:10249",
		"--v", "1",
	}
}

func (r *runner) kubeProxy(id, label string, n *lab.Node) daemon {
	argv := append([]string{r.cfg.KubeProxy}, r.commonArgs(n)...)
	return daemon{id: id, label: label, node: n, argv: append(argv, "--proxy-mode", "nftables")}
}

func (r *runner) svcproxy(id, label string, n *lab.Node, layout string) daemon {
	argv := append([]string{r.cfg.Svcproxy, "run"}, r.commonArgs(n)...)
	if layout != "" {
		argv = append(argv, "--rule-layout="+layout)
	}
	return daemon{id: id, label: label, node: n, svcproxy: true, argv: argv}
}

// cases runs every case in order (see the package comment). A case whose
// change is not served within its bound is reported as such and the run
// goes on; a failure to prepare a table ends the run.
func (r *runner) cases(ctx context.Context) error {
	n1, n2, n3 := r.l.Node(1), r.l.Node(2), r.l.Node(3)

	// Cold starts: kube-proxy nftables on node1, svcproxy compact on node2.
	if err := r.caseThen(ctx, r.kubeProxy("a0", "kube-proxy nftables, cold start on an empty node", n1), stopTerm); err != nil {
		return err
	}
	if err := r.caseThen(ctx, r.svcproxy("ref", "svcproxy compact, cold start on an empty node", n2, ""), stopTerm); err != nil {
		return err
	}
	// Each restarted over its own table, alternately (-repeat times), so
	// both see the same load.
	for k := 1; k <= r.cfg.Repeat; k++ {
		suffix := ""
		if k > 1 {
			suffix = fmt.Sprintf("#%d", k)
		}
		if err := r.caseThen(ctx, r.kubeProxy("a"+suffix, "kube-proxy nftables, restart over its own table", n1), stopTerm); err != nil {
			return err
		}
		if err := r.caseThen(ctx, r.svcproxy("b"+suffix, "svcproxy compact, restart over its own table", n2, ""), stopTerm); err != nil {
			return err
		}
	}
	if !r.cfg.Layouts {
		r.notef("cases e, c, d skipped (-layouts=false)")
		return nil
	}

	// kube-proxy's layout (by svcproxy --rule-layout=kube-proxy) on node2
	// (over the compact table) and node3 (empty), at once.
	var g errgroup.Group
	var p2, p3 *lab.Proc
	g.Go(func() (err error) {
		p2, err = r.prepare(ctx, r.svcproxy("prep2", "svcproxy kube-proxy layout over the compact table (layout switch)", n2, "kube-proxy"))
		return err
	})
	g.Go(func() (err error) {
		p3, err = r.prepare(ctx, r.svcproxy("prep3", "svcproxy kube-proxy layout, cold start on an empty node", n3, "kube-proxy"))
		return err
	})
	err := g.Wait()
	if p2 != nil {
		stopTerm(p2)
	}
	if p3 != nil {
		stopKill(p3) // case d starts over a SIGKILLed kube-proxy-layout table
	}
	if err != nil {
		return err
	}

	// e: kube-proxy layout restarted over its own table; SIGKILLed after.
	if err := r.caseThen(ctx, r.svcproxy("e", "svcproxy kube-proxy layout, restart over its own table", n2, "kube-proxy"), stopKill); err != nil {
		return err
	}
	// c: compact over kube-proxy's layout, with kubelet's hint chain.
	for _, bin := range []string{"iptables", "ip6tables"} {
		if out, err := r.l.ExecContext(ctx, n2.NS, bin, "-t", "mangle", "-N", "KUBE-IPTABLES-HINT"); err != nil {
			return fmt.Errorf("%s: create the hint chain: %v: %s", n2.Name, err, out)
		}
	}
	r.notef("case c: %s has KUBE-IPTABLES-HINT in iptables and ip6tables mangle (created as kubelet does)", n2.Name)
	if err := r.caseThen(ctx, r.svcproxy("c", "svcproxy compact over kube-proxy's layout (SIGKILLed), with hint chain", n2, ""), stopTerm); err != nil {
		return err
	}
	// d: the same without the hint chain (node3 never had one).
	for _, bin := range []string{"iptables", "ip6tables"} {
		for _, chain := range []string{"KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY"} {
			if _, err := r.l.ExecContext(ctx, n3.NS, bin, "-t", "mangle", "-S", chain); err == nil {
				return fmt.Errorf("%s: %s mangle has %s; case d needs none", n3.Name, bin, chain)
			}
		}
	}
	r.notef("case d: %s has no KUBE-IPTABLES-HINT / KUBE-KUBELET-CANARY in iptables or ip6tables mangle", n3.Name)
	return r.caseThen(ctx, r.svcproxy("d", "svcproxy compact over kube-proxy's layout (SIGKILLed), no hint chain", n3, ""), stopTerm)
}

// caseThen measures d, records its row and ends its process with stop.
func (r *runner) caseThen(ctx context.Context, d daemon, stop func(*lab.Proc)) error {
	logf("case %s: %s on %s (load %s)", d.id, d.label, d.node.Name, loadavg())
	res, p, err := r.measure(ctx, d)
	if p != nil {
		stop(p)
	}
	r.results = append(r.results, res)
	if res.served > 0 {
		logf("case %s: served after %.2fs (first full sync %.2fs, ended %.2fs after the start; stale chains 0 at %.2fs)",
			d.id, res.served.Seconds(), res.firstSync, res.syncEnd.Seconds(), res.staleZero.Seconds())
	} else {
		logf("case %s: %s", d.id, res.err)
	}
	return err
}

// measure starts d, moves the probe Service to the other echo pod of d's
// node at that moment, and waits (bounded) until a connection from pod 1 of
// that node to the probe Service reaches it; meanwhile it watches the
// metrics for the first full sync. Then, for svcproxy, it waits until no
// stale chains are pending. The error is for a run that cannot go on (the
// context ended, the API failed); a change not served is in the result.
func (r *runner) measure(ctx context.Context, d daemon) (result, *lab.Proc, error) {
	res := result{id: d.id, label: d.label, bound: r.cfg.CaseBound, load: loadavg()}
	client := r.l.Pod(d.node.Index, 1)
	// The target is neither where the probe Service points now nor where
	// this node's table sent it last (the node may have been left behind
	// while another node's case moved the probe Service).
	target := r.l.Pod(d.node.Index, 2)
	if r.current == target || r.lastTarget[d.node.Index] == target {
		target = r.l.Pod(d.node.Index, 3)
	}
	r.lastTarget[d.node.Index] = target
	spec := lab.ProbeSpec{NS: client.NS, Proto: "tcp", Addr: r.probeIP, Port: svcPort, Timeout: probeTimeout}
	if pr, err := lab.ProbeWith(spec); err != nil {
		res.before = "no answer (" + shortErr(err) + ")"
	} else {
		res.before = pr.Backend
	}
	if res.before == target.Name {
		return res, nil, fmt.Errorf("case %s: %s already answers before the start; the measurement would be void", d.id, target.Name)
	}
	logName := fmt.Sprintf("%s-%s-%s", d.id, strings.Fields(d.label)[0], d.node.Name)
	cctx, cancel := context.WithTimeout(ctx, r.cfg.CaseBound)
	defer cancel()

	t0 := time.Now()
	p, err := r.l.StartProcess(d.node.NS, logName, d.argv...)
	if err != nil {
		return res, nil, err
	}
	r.procs = append(r.procs, p)
	if err := r.moveProbe(ctx, target); err != nil {
		return res, p, fmt.Errorf("move the probe Service to %s: %w", target.Name, err)
	}
	res.changeAt = time.Since(t0)

	// The first full sync, watched while the probe runs.
	type syncSeen struct {
		dur float64
		end time.Duration
	}
	syncCh := make(chan syncSeen, 1)
	wctx, stopWatch := context.WithCancel(cctx)
	go func() {
		defer close(syncCh)
		for i := 0; wctx.Err() == nil && i < int(r.cfg.CaseBound/metricsEvery)+1; i++ {
			m, err := lab.ScrapeMetrics(wctx, d.node.NS, lab.MetricsURL)
			if err == nil {
				f := m.Flat(lab.IPv6)
				count, sum := f[fullSync+"_count"], f[fullSync+"_sum"]
				if _, ok := f[fullSync+"_count"]; !ok {
					count, sum = f[syncDuration+"_count"], f[syncDuration+"_sum"]
				}
				if count >= 1 {
					end := time.Since(t0)
					if ts := f[lastSync]; ts > 0 && f[syncDuration+"_count"] == 1 {
						end = time.Unix(0, int64(ts*1e9)).Sub(t0)
					}
					if count > 1 {
						sum = -1 // more than one full sync between two scrapes
					}
					syncCh <- syncSeen{dur: sum, end: end}
					return
				}
			}
			sleep(wctx, metricsEvery)
		}
	}()

	served, lastSeen := r.waitServed(cctx, p, spec, target.Name, t0)
	if served > 0 {
		res.served = served
	} else {
		res.err = fmt.Sprintf("not served in %s (last probe: %s)", r.cfg.CaseBound, lastSeen)
	}
	// Give the watcher the rest of the bound to see the first sync.
	var seen syncSeen
	var ok bool
	select {
	case seen, ok = <-syncCh:
	case <-cctx.Done():
	}
	stopWatch()
	for range syncCh { // wait for the watcher
	}
	if ok {
		res.firstSync, res.syncEnd = seen.dur, seen.end
	}
	if exited, werr := p.Exited(); exited {
		res.err = strings.TrimSpace(fmt.Sprintf("%s; process exited: %v: %s", res.err, werr, p.LogTail(1500)))
		return res, p, ctx.Err()
	}
	if d.svcproxy && ok {
		res.staleZero = r.waitStaleZero(cctx, d.node, t0)
	}
	if d.svcproxy {
		res.syncLines = syncedLines(p.Log)
	}
	return res, p, ctx.Err()
}

// waitServed probes every probeEvery until want answers, p exits or ctx
// ends; it returns the time since t0 (0: not served) and the last outcome.
func (r *runner) waitServed(ctx context.Context, p *lab.Proc, spec lab.ProbeSpec, want string, t0 time.Time) (time.Duration, string) {
	last := "none"
	for i := 0; ctx.Err() == nil && i < int(r.cfg.CaseBound/probeEvery)+1; i++ {
		if exited, _ := p.Exited(); exited {
			return 0, "process exited"
		}
		pr, err := lab.ProbeWith(spec)
		if err == nil && pr.Backend == want {
			return time.Since(t0), want
		}
		if err != nil {
			last = shortErr(err)
		} else {
			last = "answered by " + pr.Backend
		}
		sleep(ctx, probeEvery)
	}
	return 0, last
}

// waitStaleZero waits (bounded by ctx) until node's svcproxy reports no
// stale chains pending, and returns the time since t0 (0: not seen).
func (r *runner) waitStaleZero(ctx context.Context, n *lab.Node, t0 time.Time) time.Duration {
	var at time.Duration
	err := lab.Poll(ctx, r.cfg.CaseBound, time.Second, func() error {
		m, err := lab.ScrapeMetrics(ctx, n.NS, lab.MetricsURL)
		if err != nil {
			return err
		}
		f := m.Flat(lab.IPv6)
		v, ok := f[stalePending]
		if !ok {
			return errors.New("no " + stalePending)
		}
		if v > 0 {
			return fmt.Errorf("%.0f stale chains pending", v)
		}
		at = time.Since(t0)
		return nil
	})
	if err != nil {
		logf("%s: stale chains: %v", n.Name, err)
		return 0
	}
	return at
}

// prepare starts d without a change and waits (bounded by cfg.PrepBound)
// for its first full sync and, for svcproxy, no stale chains pending: the
// table it leaves is a later case's starting point.
func (r *runner) prepare(ctx context.Context, d daemon) (*lab.Proc, error) {
	logf("prep %s: %s on %s (load %s)", d.id, d.label, d.node.Name, loadavg())
	logName := fmt.Sprintf("%s-%s", d.id, d.node.Name)
	t0 := time.Now()
	p, err := r.l.StartProcess(d.node.NS, logName, d.argv...)
	if err != nil {
		return nil, err
	}
	r.procs = append(r.procs, p)
	var synced time.Duration
	err = lab.Poll(ctx, r.cfg.PrepBound, time.Second, func() error {
		if exited, werr := p.Exited(); exited {
			return fmt.Errorf("%w: exited: %v: %s", lab.ErrStop, werr, p.LogTail(1500))
		}
		m, err := lab.ScrapeMetrics(ctx, d.node.NS, lab.MetricsURL)
		if err != nil {
			return err
		}
		f := m.Flat(lab.IPv6)
		if f[fullSync+"_count"] < 1 {
			return errors.New("no full sync yet")
		}
		if synced == 0 {
			synced = time.Since(t0)
		}
		if v := f[stalePending]; v > 0 {
			return fmt.Errorf("%.0f stale chains pending", v)
		}
		return nil
	})
	if err != nil {
		return p, fmt.Errorf("prep %s on %s: %w", d.id, d.node.Name, err)
	}
	lines := syncedLines(p.Log)
	r.notef("prep %s (%s, %s): first full sync after %.1fs, no stale chains after %.1fs; %s",
		d.id, d.label, d.node.Name, synced.Seconds(), time.Since(t0).Seconds(), firstOr(lines, "no Synced line"))
	return p, nil
}

// stopTerm stops p as a DaemonSet update would (SIGTERM; SIGKILL after 5 s).
func stopTerm(p *lab.Proc) { _ = p.Stop() }

// stopKill SIGKILLs p (and its process group) and waits for it (bounded).
func stopKill(p *lab.Proc) {
	pid := p.Pid()
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	_ = syscall.Kill(pid, syscall.SIGKILL)
	select {
	case <-p.Done():
	case <-time.After(10 * time.Second):
		logf("pid %d did not exit 10s after SIGKILL", pid)
	}
}

// syncedLines returns svcproxy's "Synced all proxy rules" lines for IPv6
// from log (the part from the message on).
func syncedLines(log string) []string {
	b, err := os.ReadFile(log)
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		i := strings.Index(line, "Synced all proxy rules")
		if i < 0 || !strings.Contains(line, "IPv6") {
			continue
		}
		out = append(out, strings.TrimSpace(strings.Replace(line[i:], `"`, "", 1)))
		if len(out) == 20 {
			break
		}
	}
	return out
}

func firstOr(xs []string, def string) string {
	if len(xs) == 0 {
		return def
	}
	return xs[0]
}

func shortErr(err error) string {
	if kind := lab.ProbeErrorKind(err); kind != "" {
		return kind
	}
	s := err.Error()
	if len(s) > 80 {
		s = s[len(s)-80:]
	}
	return s
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
