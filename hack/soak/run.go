package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/svcproxy/svcproxy/hack/lab"
)

// run builds the environment, runs churn, faults and probes for the
// configured duration, checks drift, prints the report and returns the exit
// code.
func (s *soak) run(ctx context.Context) int {
	s.start = time.Now()
	logf("seed %d, duration %s, %d nodes", s.cfg.Seed, s.cfg.Duration, s.cfg.Nodes)
	setupCtx, cancel := context.WithTimeout(ctx, 6*time.Minute)
	err := s.setup(setupCtx)
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "soak: environment: %v\n", err)
		return 2
	}

	// Observers run until the very end (drift check included).
	obsCtx, stopObs := context.WithCancel(ctx)
	var obs sync.WaitGroup
	for _, nd := range s.nodes {
		for _, o := range []struct {
			every time.Duration
			f     func()
		}{
			{300 * time.Millisecond, nd.tailLog},
			{500 * time.Millisecond, func() { nd.pollRules(obsCtx) }},
			{500 * time.Millisecond, nd.pollHealth},
		} {
			obs.Add(1)
			go func() { defer obs.Done(); s.observe(obsCtx, nd, "", o.every, o.f) }()
		}
	}
	defer func() { stopObs(); obs.Wait() }()

	if err := s.waitReady(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "soak: %v\n", err)
		return 2
	}
	logf("all nodes programmed the probed services; soak runs for %s", s.cfg.Duration)

	runStart := time.Now()
	until := runStart.Add(s.cfg.Duration)
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); s.runChurn(ctx, until) }()
	go func() { defer wg.Done(); s.runProbes(ctx, until) }()
	go func() { defer wg.Done(); s.runFaults(ctx, until) }()
	wg.Wait()
	s.churnEnd = time.Now()
	logf("churn, probes and faults done after %s; checking drift", s.churnEnd.Sub(runStart).Round(time.Second))
	if ctx.Err() == nil {
		s.checkDrift(ctx)
	}
	time.Sleep(time.Second) // a last log and health read
	stopObs()
	obs.Wait()
	for _, nd := range s.nodes {
		nd.tailLog()
	}
	return s.report(runStart)
}

// waitReady waits until every node shows every probed Service as the API
// has it and answers /healthz with 200 (bounded: 3 minutes, and a daemon
// that exits fails it at once).
func (s *soak) waitReady(ctx context.Context) error {
	for _, nd := range s.nodes {
		start := time.Now()
		err := lab.Poll(ctx, 3*time.Minute, 200*time.Millisecond, func() error {
			nd.mu.Lock()
			crashed := len(nd.crashes) > 0
			var last snapshot
			if len(nd.snaps) > 0 {
				last = nd.snaps[len(nd.snaps)-1]
			}
			var code int
			if len(nd.health) > 0 {
				code = nd.health[len(nd.health)-1].code
			}
			nd.mu.Unlock()
			if crashed {
				return fmt.Errorf("%w: svcproxy on %s exited", lab.ErrStop, nd.n.Name)
			}
			if !last.jumps {
				return fmt.Errorf("no KUBE-SERVICES jumps yet")
			}
			for _, p := range s.probeSvcs {
				if u, ok := p.shownUntil(last); !ok || u.Before(last.t) {
					return fmt.Errorf("%s not programmed yet", p.name)
				}
			}
			if code != 200 {
				return fmt.Errorf("/healthz: %d", code)
			}
			return nil
		})
		if err != nil {
			nd.mu.Lock()
			p := nd.proc
			nd.mu.Unlock()
			return fmt.Errorf("svcproxy on %s not ready: %v\n--- log tail:\n%s", nd.n.Name, err, p.LogTail(3000))
		}
		logf("svcproxy on %s ready %.1fs after the wait began", nd.n.Name, time.Since(start).Seconds())
	}
	return nil
}

// report prints the figures and the verdicts, and returns the exit code.
func (s *soak) report(runStart time.Time) int {
	var missed []string
	stale := s.classify()
	w := os.Stdout
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	p("")
	p("==== svcproxy soak: %s of churn and faults on %d nodes (seed %d, wall %s incl. setup) ====", s.churnEnd.Sub(runStart).Round(time.Second), len(s.nodes), s.cfg.Seed, time.Since(s.start).Round(time.Second))
	p("daemons: --iptables-min-sync-period %s --iptables-sync-period %s (healthz threshold %s), cluster CIDRs %s (ipset)", s.cfg.MinSync, s.cfg.SyncPeriod, 2*s.cfg.SyncPeriod, s.clusterCIDRs())
	if s.interrupted.Load() {
		missed = append(missed, "interrupted")
	}

	// Churn.
	s.churn.mu.Lock()
	var ops []string
	total, failed := 0, 0
	for op, n := range s.churn.ops {
		ops = append(ops, fmt.Sprintf("%s %d", op, n))
		total += n
		failed += s.churn.failed[op]
	}
	fails := s.churn.fails
	s.churn.mu.Unlock()
	sort.Strings(ops)
	outsideAPI := 0
	for _, t := range fails {
		if !s.faults.coversKind("apiserver", t) {
			outsideAPI++
		}
	}
	p("churn: %d API writes (%d failed, %d of them outside API server restarts): %s", total, failed, outsideAPI, strings.Join(ops, ", "))

	// Probes.
	s.probes.mu.Lock()
	recs := s.probes.recs
	s.probes.mu.Unlock()
	outcomes := map[string]int{}
	wrong := map[bool]map[string]int{true: {}, false: {}}
	var examples []string
	switchRaces := 0
	for _, r := range recs {
		outcomes[r.outcome]++
		if r.switchRace {
			switchRaces++
		}
		if r.verdict != "" {
			wrong[r.inWindow][r.verdict]++
			if !r.inWindow && len(examples) < 10 {
				examples = append(examples, fmt.Sprintf("  %s %s: %s (%s%s)", r.t0.Format("15:04:05.000"), r.tg, r.verdict, r.outcome, orEmpty(" by ", r.backend)+orEmpty(" ", r.errText))+"\n      "+r.detail)
			}
		}
	}
	p("probes: %d sent (TCP and UDP; from pods, nodes and the outside client): %d answered, %d refused, %d timed out, %d other",
		len(recs), outcomes["ok"], outcomes["refused"], outcomes["timeout"], outcomes["other"])
	p("  (%d timeouts or refusals accepted at a switch between endpoints and none: the first packet met one state's nat and the other's filter rules)", switchRaces)
	p(windowDefinition)
	for _, in := range []bool{false, true} {
		where := "outside fault windows"
		if in {
			where = "inside fault windows "
		}
		p("  wrong answers %s: %s", where, kinds(wrong[in]))
	}
	if n := sum(wrong[false]); n > 0 {
		missed = append(missed, fmt.Sprintf("%d wrong answers outside fault windows", n))
		p("  first ones outside windows:")
		for _, e := range examples {
			p("%s", e)
		}
	}
	if len(stale) > 0 {
		missed = append(missed, fmt.Sprintf("rules more than %s stale outside fault windows (%d probes)", propBound, len(stale)))
		p("  rules stale > %s outside fault windows: %d probes, e.g.", propBound, len(stale))
		for _, e := range stale[:min(3, len(stale))] {
			p("    %s", e)
		}
	}

	// Faults.
	p("faults (R-S: the fault itself; E-R: time to converge; syncs: ended in (R,E], failed included; repair: the first")
	p("successful sync (full for flush/ipsets/kill) begun after the daemon could know — R, or both caches synced after a kill —")
	p("must begin within --iptables-min-sync-period + detection + %s slack):", s.cfg.Slack)
	s.faults.mu.Lock()
	faults := s.faults.faults
	s.faults.mu.Unlock()
	for i, f := range faults {
		for _, c := range f.conv {
			line := fmt.Sprintf("  %2d %-9s %-6s at +%5.1fs  R-S %5.1fs", i+1, f.kind, c.nd.n.Name, f.S.Sub(runStart).Seconds(), f.R.Sub(f.S).Seconds())
			if c.ok {
				line += fmt.Sprintf("  E-R %5.2fs  syncs %2d  repair began %+.2fs after %s (bound %.1fs), took %s",
					c.E.Sub(f.R).Seconds(), c.syncs, c.startedIn.Seconds(), detectName(f.kind), c.bound.Seconds(), c.repair.elapsed.Round(time.Millisecond))
				if c.startedIn > c.bound {
					missed = append(missed, fmt.Sprintf("fault %d (%s on %s): repair began %.1fs after %s, bound %.1fs", i+1, f.kind, c.nd.n.Name, c.startedIn.Seconds(), detectName(f.kind), c.bound.Seconds()))
					line += "  MISSED"
				}
			} else {
				line += "  NOT CONVERGED: " + c.why
				missed = append(missed, fmt.Sprintf("fault %d (%s on %s) did not converge: %s", i+1, f.kind, c.nd.n.Name, c.why))
			}
			if f.note != "" {
				line += "  [" + f.note + "]"
			}
			p("%s", line)
		}
	}
	if len(faults) == 0 {
		p("  none (soak too short)")
	}

	// Healthz, restarts, crashes.
	p("healthz (poll of :10256/healthz every 0.5 s; 0 = no answer within 3 s):")
	for _, nd := range s.nodes {
		nd.mu.Lock()
		var tr []string
		bad := 0
		for i, h := range nd.health {
			if i > 0 {
				tr = append(tr, fmt.Sprintf("+%.1fs→%d", h.t.Sub(runStart).Seconds(), h.code))
			}
			if h.code == 503 && h.t.After(runStart) && !s.faults.covers(nd, h.t, h.t) {
				bad++
			}
		}
		starts, crashes := len(nd.starts), nd.crashes
		nd.mu.Unlock()
		p("  %s: %d transitions %s", nd.n.Name, len(tr), strings.Join(tr, " "))
		if bad > 0 {
			missed = append(missed, fmt.Sprintf("%s: /healthz unhealthy %d times outside fault windows", nd.n.Name, bad))
		}
		p("  %s: daemon started %d times (1 + kills), crashes %d", nd.n.Name, starts, len(crashes))
		for _, c := range crashes {
			p("    crash: %s", c)
		}
		if len(crashes) > 0 {
			missed = append(missed, fmt.Sprintf("%s: %d crashes", nd.n.Name, len(crashes)))
		}
		full, partial, fails := 0, 0, 0
		for _, e := range nd.eventsAfter("sync", runStart) {
			if e.full {
				full++
			} else {
				partial++
			}
		}
		fails = len(nd.eventsAfter("fail", runStart))
		p("  %s: syncs %d full, %d partial, %d failed (IPv4); most DNAT rules seen at once in unreferenced (stale, to be deleted) chains: %d", nd.n.Name, full, partial, fails, nd.maxOrphanDNAT)
	}

	if ex := s.orphanExample.Load(); ex != nil {
		p("  e.g. %s", *ex)
	}

	s.writeTimeline()

	// Drift.
	p("drift after churn stopped (live nat+filter KUBE-* chains and rules vs svcproxy dump of the API's final state, canaries aside):")
	if s.drift.err != "" {
		p("  not checked: %s", s.drift.err)
		if !s.interrupted.Load() {
			missed = append(missed, "drift check failed: "+s.drift.err)
		}
	}
	for _, d := range s.drift.nodes {
		p("  %s: %d chains, %d rules compared (a sync began %.1fs after the last write; equal after %.1fs more): %d missing, %d extra", d.name, d.chains, d.rules, s.drift.quiesce[d.name].Seconds(), d.after.Seconds(), len(d.missing), len(d.extra))
		for i, l := range d.missing {
			if i < 10 {
				p("    missing: %s", l)
			}
		}
		for i, l := range d.extra {
			if i < 10 {
				p("    extra:   %s", l)
			}
		}
		if len(d.missing)+len(d.extra) > 0 {
			missed = append(missed, fmt.Sprintf("%s: drift (%d missing, %d extra)", d.name, len(d.missing), len(d.extra)))
		}
	}

	if len(missed) > 0 {
		p("RESULT: FAIL — targets missed:")
		for _, m := range missed {
			p("  - %s", m)
		}
		p("(daemon logs: %s/logs)", s.l.StateDir)
		return 1
	}
	p("RESULT: PASS — no wrong answer outside fault windows, every fault converged within its bound, healthz unhealthy only in fault windows, no crash, no drift")
	return 0
}

func detectName(kind string) string {
	switch kind {
	case "kill":
		return "caches synced"
	case "flush", "ipsets":
		return "R (canary)"
	}
	return "R"
}

func kinds(m map[string]int) string {
	if len(m) == 0 {
		return "0"
	}
	var out []string
	for k, n := range m {
		out = append(out, fmt.Sprintf("%s %d", k, n))
	}
	sort.Strings(out)
	return fmt.Sprintf("%d (%s)", sum(m), strings.Join(out, ", "))
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func orEmpty(prefix, s string) string {
	if s == "" {
		return ""
	}
	return prefix + s
}

// writeTimeline saves, for a post-mortem, each probed Service's API
// versions and each node's rule reads next to the daemons' logs.
func (s *soak) writeTimeline() {
	var b strings.Builder
	for _, p := range s.probeSvcs {
		p.mu.Lock()
		for _, v := range p.versions {
			fmt.Fprintf(&b, "api %s %s..%s ready=%v notReady=%v local=%v affinity=%v\n", p.name, v.From.Format("15:04:05.000"), v.Until.Format("15:04:05.000"), v.st.Ready, v.st.NotReady, v.st.Local, v.st.Affinity)
		}
		p.mu.Unlock()
	}
	for _, nd := range s.nodes {
		nd.mu.Lock()
		for _, sn := range nd.snaps {
			fmt.Fprintf(&b, "rules %s %s err=%v jumps=%v", nd.n.Name, sn.t.Format("15:04:05.000"), sn.err, sn.jumps)
			for _, p := range s.probeSvcs {
				st := sn.states[p.name]
				fmt.Fprintf(&b, " %s=%v/%v/local=%v", p.name, st.HTTP, st.DNS, st.Local)
			}
			b.WriteString("\n")
		}
		for _, e := range nd.events {
			fmt.Fprintf(&b, "log %s %s %s full=%v elapsed=%s %s\n", nd.n.Name, e.t.Format("15:04:05.000"), e.kind, e.full, e.elapsed, e.what)
		}
		nd.mu.Unlock()
	}
	// In the logs directory, which outlives the lab.
	path := filepath.Join(s.l.StateDir, "logs", "soak-timeline.txt")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		logf("timeline: %v", err)
	}
}
