package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/svcproxy/svcproxy/hack/lab"
)

// Fault windows. A fault on a node runs from S, when the injector starts
// it, to R, when the injector has undone it (flush: the flush returned;
// apiserver: the restarted API server answers /readyz; kill: the new
// daemon was exec'd; restore: the wrapper stopped failing; ipsets: the sets
// were destroyed; pause: SIGCONT sent). It has converged at E: the end
// (daemon's own log timestamp) of the first successful sync after R — a
// full one for flush, ipsets and kill — after which a read of the node's
// nat table shows every probed Service as the API had it at some moment
// at or after R, and the KUBE-SERVICES jumps in place. The fault's window
// is [S, E + probe timeout + 1 s] on that node (apiserver: on every node);
// a probe is inside it when the probe's own [start, end] overlaps it.
const windowDefinition = `fault window = [S, E + probe timeout + 1 s] on the faulted node (API server: every node), where
  S = injector starts the fault, R = injector has undone it, E = end (daemon log time) of the first successful
  sync after R (from the first full one on, for flush/ipsets/kill) after which the node's nat table shows every probed Service as the
  API had it at or after R (API server: and the marker writes made after R, to a Service and then its EndpointSlice), with the KUBE-SERVICES jumps in place.
  A probe is inside when its [start,end] overlaps the window.`

type fault struct {
	kind    string
	node    *node // nil: every node (API server)
	S, R, E time.Time
	// apiserver: the start of the marker's EndpointSlice write made after
	// the restart (zero if it failed); see markerWrite.
	marker time.Time
	// release ends the freeze of probed-Service writes that a successful
	// marker write begins (nil: no freeze).
	release func()
	// per node: converged, and how
	conv []nodeConv
	note string
}

type nodeConv struct {
	nd        *node
	E         time.Time
	ok        bool
	syncs     int           // syncs ended in (R, E], failed ones included
	repair    logEvent      // the converging sync
	detect    time.Time     // when the daemon could know (target base)
	bound     time.Duration // repair sync must start within detect + bound
	startedIn time.Duration // repair start - detect
	why       string
}

// windowGrace is how long a fault's window lasts after E: one probe
// timeout (a probe begun just before E may still be waiting) and 1 s.
var windowGrace = 6 * time.Second

type faultLog struct {
	mu     sync.Mutex
	faults []*fault
}

func (l *faultLog) add(f *fault) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.faults = append(l.faults, f)
}

// covers reports whether [a, b] overlaps a fault window of nd.
func (l *faultLog) covers(nd *node, a, b time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	grace := windowGrace
	for _, f := range l.faults {
		if f.node != nil && f.node != nd {
			continue
		}
		end := time.Now().Add(time.Hour)
		for _, c := range f.conv {
			if c.nd == nd && c.ok {
				end = c.E.Add(grace)
			}
		}
		if !a.After(end) && !b.Before(f.S) {
			return true
		}
	}
	return false
}

// coversKind reports whether t falls in [S, E + 5 s] of a fault of kind.
func (l *faultLog) coversKind(kind string, t time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, f := range l.faults {
		end := f.E
		if end.IsZero() {
			end = time.Now()
		}
		if f.kind == kind && !t.Before(f.S) && !t.After(end.Add(5*time.Second)) {
			return true
		}
	}
	return false
}

var faultKinds = []string{"flush", "kill", "restore", "apiserver", "ipsets", "pause"}

// runFaults injects one fault at a time, in faultKinds order, alternating
// nodes, waiting for convergence after each, until less than stopBefore of
// the soak is left (bounded: at most one fault per 10 s of soak).
func (s *soak) runFaults(ctx context.Context, until time.Time) {
	const warmup, gap, stopBefore = 10 * time.Second, 5 * time.Second, 45 * time.Second
	sleep(ctx, warmup)
	limit := int(s.cfg.Duration/(10*time.Second)) + 1
	for i := 0; i < limit && ctx.Err() == nil; i++ {
		if time.Until(until) < stopBefore {
			return
		}
		kinds := s.cfg.Faults
		kind := kinds[i%len(kinds)]
		// Alternate nodes; when the kinds divide evenly among the nodes,
		// shift each round so every kind meets every node.
		k := i
		if len(kinds)%len(s.nodes) == 0 {
			k += i / len(kinds)
		}
		nd := s.nodes[k%len(s.nodes)]
		f := &fault{kind: kind, node: nd}
		if kind == "apiserver" {
			f.node = nil
		}
		s.faults.add(f)
		s.inject(ctx, f)
		s.converge(ctx, f)
		if f.release != nil {
			f.release() // the probed Services may change again
		}
		sleep(ctx, gap)
	}
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func (s *soak) nsExec(ctx context.Context, nsName string, argv ...string) error {
	out, err := lab.Exec(ctx, nsName, argv...)
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, out)
	}
	return nil
}

// inject performs the fault and undoes it, setting S and R.
func (s *soak) inject(ctx context.Context, f *fault) {
	f.S = time.Now()
	where := "all nodes"
	if f.node != nil {
		where = f.node.n.Name
	}
	logf("fault %s on %s", f.kind, where)
	var err error
	switch f.kind {
	case "flush":
		err = s.nsExec(ctx, f.node.n.NS, "sh", "-c", "iptables -t nat -F && iptables -t filter -F")
	case "apiserver":
		if err = s.cp.KillAPIServer(); err == nil {
			sleep(ctx, 2*time.Second)
			actx, cancel := context.WithTimeout(ctx, 3*time.Minute)
			err = s.cp.StartAPIServer(actx)
			cancel()
		}
	case "kill":
		if err = f.node.kill(); err == nil {
			err = f.node.startDaemon()
		}
	case "restore":
		_ = os.Remove(f.node.flagFile + ".count")
		if err = os.WriteFile(f.node.flagFile, nil, 0o644); err == nil {
			sleep(ctx, 15*time.Second)
			b, _ := os.ReadFile(f.node.flagFile + ".count")
			f.note = fmt.Sprintf("%s restores in 15 s, every 10th failed", strings.TrimSpace(string(b)))
			err = os.Remove(f.node.flagFile)
		}
	case "ipsets":
		// The sets are in use by rules: flush them away first. nf_tables
		// drops a flushed rule's reference to a set a moment after the
		// commit, so a destroy is tried again (at most 20 times, 0.1 s
		// apart). The daemon's repair of the flush may take the sets back
		// first: the fault was then only a flush, undone when the flush
		// ended, and it is judged as one (R = the flush's end).
		if err = s.nsExec(ctx, f.node.n.NS, "sh", "-c", "iptables -t nat -F && iptables -t filter -F"); err != nil {
			break
		}
		flushed := time.Now()
		if derr := s.nsExec(ctx, f.node.n.NS, "sh", "-c", `for s in $(ipset list -n | grep ^SVCPROXY-); do
	i=0; until ipset destroy "$s" 2>/dev/null; do i=$((i+1)); [ $i -ge 20 ] && { echo "set $s still in use"; exit 1; }; sleep 0.1; done
done`); derr != nil {
			f.note = "sets taken back by the daemon's repair of the flush before they could be destroyed: judged as a flush"
			f.R = flushed
			return
		}
	case "pause":
		pause := 2*s.cfg.SyncPeriod + 3*time.Second
		if err = f.node.signal(syscall.SIGSTOP); err == nil {
			sleep(ctx, pause)
			err = f.node.signal(syscall.SIGCONT)
			f.note = fmt.Sprintf("stopped %s (healthz threshold %s)", pause, 2*s.cfg.SyncPeriod)
		}
	}
	f.R = time.Now()
	if f.kind == "apiserver" && err == nil {
		if f.marker, f.release = s.markerWrite(ctx, f.S); f.marker.IsZero() {
			f.note = strings.TrimSpace(f.note + " marker write failed: convergence is judged on any write after the restart")
		}
	}
	if err != nil {
		f.note = strings.TrimSpace(f.note + " injection failed: " + err.Error())
		logf("fault %s: %v", f.kind, err)
	}
}

// converge waits (at most cfg.Converge) until every affected node has
// converged after f, and records how.
func (s *soak) converge(ctx context.Context, f *fault) {
	nodes := s.nodes
	if f.node != nil {
		nodes = []*node{f.node}
	}
	for _, nd := range nodes {
		c := nodeConv{nd: nd, bound: s.cfg.MinSync + s.cfg.Slack}
		needFull := f.kind == "flush" || f.kind == "ipsets" || f.kind == "kill"
		c.detect = f.R
		switch f.kind {
		case "flush", "ipsets":
			// Found by the canary check, every max(min(syncPeriod/3, 10s), 100ms).
			c.bound += max(min(s.cfg.SyncPeriod/3, 10*time.Second), 100*time.Millisecond)
		case "restore":
			// After a failed restore the retry comes at the next change or
			// after min(syncPeriod, 30 s).
			c.bound += min(s.cfg.SyncPeriod, 30*time.Second)
		case "apiserver":
			// client-go's watch retry backs off up to 30 s.
			c.bound += 30 * time.Second
		}
		deadline := time.Now().Add(s.cfg.Converge)
		for i := 0; ctx.Err() == nil; i++ {
			if f.kind == "kill" && c.detect == f.R {
				// The daemon can program once both initial lists are in.
				var svc, sl time.Time
				for _, e := range nd.eventsAfter("cache", f.R) {
					switch e.what {
					case "services":
						svc = e.t
					case "endpoint slices":
						sl = e.t
					}
				}
				if !svc.IsZero() && !sl.IsZero() {
					c.detect = svc
					if sl.After(svc) {
						c.detect = sl
					}
				}
			}
			if s.convergedAt(nd, f, needFull, &c) {
				break
			}
			if time.Now().After(deadline) {
				c.why = fmt.Sprintf("not converged %s after R", s.cfg.Converge)
				break
			}
			sleep(ctx, 200*time.Millisecond)
		}
		if c.ok {
			c.startedIn = c.repair.begin().Sub(c.detect)
			logf("fault %s: %s converged %.2fs after R (%d syncs)", f.kind, nd.n.Name, c.E.Sub(f.R).Seconds(), c.syncs)
		} else {
			logf("fault %s: %s: %s", f.kind, nd.n.Name, c.why)
		}
		s.faults.mu.Lock()
		f.conv = append(f.conv, c)
		if c.E.After(f.E) {
			f.E = c.E
		}
		s.faults.mu.Unlock()
	}
}

// convergedAt checks the convergence condition once (see windowDefinition),
// and finds the repair: the first successful sync (full when needed) that
// began at or after the moment the daemon could know of the fault.
func (s *soak) convergedAt(nd *node, f *fault, needFull bool, c *nodeConv) bool {
	syncs := nd.eventsAfter("sync", f.R)
	fails := nd.eventsAfter("fail", f.R)
	var conv *logEvent
	for i, ev := range syncs {
		if c.repair.t.IsZero() && (!needFull || ev.full) && !ev.begin().Before(c.detect.Add(-10*time.Millisecond)) {
			c.repair = ev
		}
		// The rules may be right only after a later (partial) sync, when
		// the repair rendered a view the informers had not caught up with
		// yet (after an API server restart, for one).
		if needFull && (c.repair.t.IsZero() || ev.t.Before(c.repair.t)) {
			continue
		}
		next := time.Now()
		if i+1 < len(syncs) {
			next = syncs[i+1].t
		}
		if conv == nil && s.showsAfterSync(nd, ev, next, f) {
			conv = &syncs[i]
		}
	}
	if conv == nil || c.repair.t.IsZero() {
		return false
	}
	c.ok, c.E = true, conv.t
	c.syncs = 0
	for _, e := range append(append([]logEvent{}, syncs...), fails...) {
		if !e.t.After(conv.t) {
			c.syncs++
		}
	}
	return true
}

// showsAfterSync reports whether a read of nd's nat table taken after the
// sync ev (and before the next one ends) shows the KUBE-SERVICES jumps and
// every probed Service as the API had it at or after f.R. After an API
// server restart the rules were right all along, so the node must also
// show a write made after the restart, proof that its informers are back:
// the marker writes (to a Service, then to its EndpointSlice: the two
// watches come back separately), or any write when the marker failed.
func (s *soak) showsAfterSync(nd *node, ev logEvent, next time.Time, f *fault) bool {
	needWrite := f.kind == "apiserver"
	for _, sn := range nd.snapsBetween(ev.t, next) {
		if sn.t.Before(ev.t) || sn.t.After(next) || !sn.jumps {
			continue
		}
		all, fresh := true, false
		for _, p := range s.probeSvcs {
			if !p.showsAfter(sn, f.R) {
				all = false
				break
			}
			switch {
			case f.marker.IsZero():
				fresh = fresh || p.showsWrittenAfter(sn, f.R)
			case p.nodePort:
				// The marker's own version (no probed Service is
				// written again before this fault converged).
				fresh = fresh || p.showsWrittenAfter(sn, f.marker.Add(-time.Nanosecond))
			}
		}
		if all && (!needWrite || fresh) {
			return true
		}
	}
	return false
}
