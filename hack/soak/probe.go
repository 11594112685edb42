package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/svcproxy/svcproxy/hack/lab"
)

// target is one probed path: from a pod, a node or the outside client, to
// a probed Service's cluster IP or (client) a node's NodePort. via is the
// node whose rules DNAT the packets.
type target struct {
	from     string // "pod", "node", "client"
	ns       string
	proto    string
	svc      *probeSvc
	via      *node
	addr     string
	port     int
	nodePort bool
}

func (t target) String() string {
	return fmt.Sprintf("%s %s -> %s %s:%d (via %s)", t.from, t.ns, t.proto, t.addr, t.port, t.via.n.Name)
}

// probeRec is one probe and its outcome.
type probeRec struct {
	tg      *target
	t0, t1  time.Time
	backend string
	outcome string // "ok", "refused", "timeout", "other"
	errText string
	verdict string // "" right, else the kind of wrong answer
	detail  string
	// switchRace: a timeout or refusal accepted at an endpoints/none switch.
	switchRace bool
	inWindow   bool
}

type probeLog struct {
	mu   sync.Mutex
	recs []*probeRec
}

func (s *soak) targets() []*target {
	var out []*target
	for _, nd := range s.nodes {
		pod := nd.n.Pods[0]
		web, np := s.probeSvcs[0], s.probeSvcs[1]
		out = append(out,
			&target{from: "pod", ns: pod.NS, proto: "tcp", svc: web, via: nd, addr: web.clusterIP, port: 80},
			&target{from: "pod", ns: pod.NS, proto: "udp", svc: web, via: nd, addr: web.clusterIP, port: 53},
			&target{from: "pod", ns: pod.NS, proto: "tcp", svc: np, via: nd, addr: np.clusterIP, port: 80},
			&target{from: "node", ns: nd.n.NS, proto: "tcp", svc: web, via: nd, addr: web.clusterIP, port: 80},
			&target{from: "node", ns: nd.n.NS, proto: "udp", svc: np, via: nd, addr: np.clusterIP, port: 53},
			&target{from: "client", ns: s.l.Client.NS, proto: "tcp", svc: np, via: nd, addr: nd.n.IP, port: nodePortTCP, nodePort: true},
			&target{from: "client", ns: s.l.Client.NS, proto: "udp", svc: np, via: nd, addr: nd.n.IP, port: nodePortUDP, nodePort: true},
		)
	}
	return out
}

// runProbes probes the targets round-robin from two goroutines until ctx
// ends (bounded: one probe per 50 ms at most).
func (s *soak) runProbes(ctx context.Context, until time.Time) {
	tgs := s.targets()
	var wg sync.WaitGroup
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			limit := int(time.Until(until)/(50*time.Millisecond)) + 1
			for i := 0; i < limit && ctx.Err() == nil && time.Now().Before(until); i++ {
				tg := tgs[(2*i+w)%len(tgs)]
				rec := &probeRec{tg: tg, t0: time.Now()}
				spec := lab.ProbeSpec{NS: tg.ns, Proto: tg.proto, Addr: tg.addr, Port: tg.port, Timeout: s.cfg.ProbeTimeout}
				if tg.proto == "udp" {
					// A fresh source port per probe: a reused one could
					// find the conntrack entry of an earlier probe, whose
					// flow is kept as kube-proxy keeps it (to an endpoint
					// since removed, while the Service has none).
					spec.SourcePort = s.udpPort(tg.ns)
				}
				r, err := lab.ProbeWith(spec)
				rec.t1 = time.Now()
				switch {
				case err == nil:
					rec.outcome, rec.backend = "ok", r.Backend
				case errors.Is(err, lab.ErrRefused), errors.Is(err, syscall.EPERM):
					// EPERM: a REJECT in the sender's own OUTPUT chain (a
					// node's UDP to a Service without endpoints).
					rec.outcome, rec.errText = "refused", err.Error()
				case errors.Is(err, lab.ErrTimeout):
					// The text tells a dial timeout (no SYN-ACK) from a read
					// timeout (connected, no reply line).
					rec.outcome, rec.errText = "timeout", err.Error()
				default:
					rec.outcome, rec.errText = "other", err.Error()
				}
				s.probes.mu.Lock()
				s.probes.recs = append(s.probes.recs, rec)
				s.probes.mu.Unlock()
				if rec.t1.Sub(rec.t0) < 50*time.Millisecond {
					time.Sleep(50*time.Millisecond - rec.t1.Sub(rec.t0))
				}
			}
		}()
	}
	wg.Wait()
}

// udpPort returns the next source port for UDP probes from ns: 20000-29999
// in turn (below the ephemeral range), so a port comes back only after
// 10,000 UDP probes from that namespace, long after its conntrack entry
// expired.
func (s *soak) udpPort(ns string) int {
	s.udpMu.Lock()
	defer s.udpMu.Unlock()
	if s.udpNext == nil {
		s.udpNext = map[string]int{}
	}
	p := 20000 + s.udpNext[ns]%10000
	s.udpNext[ns]++
	return p
}

// expect is what a version of a Service lets a probe of tg see.
type expect struct {
	answers          map[string]bool
	refused, timeout bool
}

func (s *soak) expected(tg *target, st svcState) expect {
	e := expect{answers: map[string]bool{}}
	if len(st.Ready) == 0 {
		e.refused = true // REJECT: no endpoints
		return e
	}
	for _, p := range st.Ready {
		if tg.nodePort && st.Local && !s.onNode(p, tg.via) {
			continue
		}
		e.answers[p] = true
	}
	if len(e.answers) == 0 {
		e.timeout = true // DROP: externalTrafficPolicy Local, no local endpoint
	}
	return e
}

func (s *soak) onNode(pod string, nd *node) bool {
	for _, p := range nd.n.Pods {
		if p.Name == pod {
			return true
		}
	}
	return false
}

// propBound caps how stale a node's rules may be and still excuse an
// answer (outside fault windows, staler rules are reported as such).
const propBound = 30 * time.Second

// classify decides each probe: right when the answer is one that a version
// of the Service current during the probe allows, or one that a version
// the node's rules still showed (normal propagation: the node's rules lag
// the API by their measured staleness) allows.
func (s *soak) classify() (stale []string) {
	s.probes.mu.Lock()
	recs := s.probes.recs
	s.probes.mu.Unlock()
	for _, r := range recs {
		tg := r.tg
		// The node's rules during the probe showed states the API had
		// until some moment; the oldest of those bounds the lag.
		oldest := r.t0
		var oldestSn snapshot
		for _, sn := range tg.via.bracket(r.t0, r.t1) {
			// A read taken while the rules were flushed says nothing
			// about propagation.
			if !sn.jumps {
				continue
			}
			if u, ok := tg.svc.shownUntil(sn); ok && u.Before(oldest) {
				oldest, oldestSn = u, sn
			}
		}
		lag := r.t0.Sub(oldest)
		r.inWindow = s.faults.covers(tg.via, r.t0, r.t1)
		if lag > propBound {
			if !r.inWindow && !s.faults.covers(tg.via, oldestSn.t, oldestSn.t) {
				st := oldestSn.states[tg.svc.name]
				now := tg.svc.stateAt(r.t0)
				stale = append(stale, fmt.Sprintf("%s at %s: rules %.1fs stale (read at %s: %v/%v local=%v; API now %v local=%v)", tg, r.t0.Format("15:04:05.000"),
					lag.Seconds(), oldestSn.t.Format("15:04:05.000"), st.HTTP, st.DNS, st.Local, now.Ready, now.Local))
			}
			lag = propBound
		}
		vs := tg.svc.during(r.t0.Add(-lag), r.t1)
		var ok, anyAnswer, anyNone bool
		for _, v := range vs {
			e := s.expected(tg, v.st)
			anyAnswer = anyAnswer || len(e.answers) > 0
			anyNone = anyNone || e.refused || e.timeout
			switch r.outcome {
			case "ok":
				ok = ok || e.answers[r.backend]
			case "refused":
				ok = ok || e.refused
			case "timeout":
				ok = ok || e.timeout
			}
		}
		// A connection whose first packet crosses a switch between a state
		// without endpoints to answer (filter REJECT, or DROP for Local
		// without local endpoints) and one with them meets the nat rules
		// of one and the filter rules of the other (the restore is atomic,
		// the packet's walk through nat, then filter, is not): un-DNATed,
		// it times out (conntrack keeps it so) or, to a node port, is
		// refused by the node itself. kube-proxy's rules have the same
		// race; the soak accepts those two outcomes at such a switch only.
		if !ok && (r.outcome == "timeout" || r.outcome == "refused") && anyNone && anyAnswer {
			r.switchRace = true
			ok = true
		}
		if ok {
			continue
		}
		var vd, sd []string
		for _, v := range vs {
			vd = append(vd, fmt.Sprintf("%v local=%v from %s", v.st.Ready, v.st.Local, v.From.Format("05.000")))
		}
		for _, sn := range tg.via.bracket(r.t0, r.t1) {
			st := sn.states[tg.svc.name]
			sd = append(sd, fmt.Sprintf("%s %v/%v local=%v", sn.t.Format("05.000"), st.HTTP, st.DNS, st.Local))
		}
		r.detail = fmt.Sprintf("lag %.2fs; API: %s; rules: %s", lag.Seconds(), strings.Join(vd, "; "), strings.Join(sd, "; "))
		switch r.outcome {
		case "ok":
			r.verdict = "reached a removed endpoint"
		case "refused":
			r.verdict = "refused while endpoints existed"
		case "timeout":
			r.verdict = "timed out"
			if !anyAnswer {
				r.verdict = "timed out (expected refused)"
			}
		default:
			r.verdict = "other error"
		}
	}
	return stale
}
