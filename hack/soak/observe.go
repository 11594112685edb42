package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/svcproxy/svcproxy/hack/lab"
)

// ---- the daemon's log ---------------------------------------------------------

// logEvent is one line of a daemon's log that the soak uses.
type logEvent struct {
	t       time.Time
	kind    string // "start", "cache", "sync", "fail"
	full    bool
	elapsed time.Duration
	what    string // cache: which informer
}

// start of the sync the event ends (sync and fail events).
func (e logEvent) begin() time.Time { return e.t.Add(-e.elapsed) }

// klog's header: Lmmdd hh:mm:ss.uuuuuu threadid file:line] msg
var klogRE = regexp.MustCompile(`^([IWEF])(\d{2})(\d{2}) (\d{2}:\d{2}:\d{2}\.\d{6})\s+\d+ [^\]]*\] "((?:[^"\\]|\\.)*)"(.*)$`)
var kvElapsed = regexp.MustCompile(`\belapsed="?([0-9.]+[a-zµ]+)"?`)
var kvController = regexp.MustCompile(`\bcontroller="([^"]*)"`)

func parseLogLine(line string, now time.Time) (logEvent, bool) {
	m := klogRE.FindStringSubmatch(line)
	if m == nil {
		return logEvent{}, false
	}
	ts, err := time.ParseInLocation("2006-01-02 15:04:05.000000", now.Format("2006")+"-"+m[2]+"-"+m[3]+" "+m[4], time.Local)
	if err != nil {
		return logEvent{}, false
	}
	msg, rest := m[5], m[6]
	ev := logEvent{t: ts}
	ipv4 := strings.Contains(rest, `ipFamily="IPv4"`) || strings.Contains(rest, "sync-proxy-rules-IPv4")
	switch {
	case msg == "Starting svcproxy":
		ev.kind = "start"
	case msg == "Caches are synced":
		ev.kind = "cache"
		if c := kvController.FindStringSubmatch(rest); c != nil {
			ev.what = c[1]
		}
	case ipv4 && (msg == "Synced all proxy rules" || msg == "Synced proxy rules"):
		ev.kind = "sync"
		ev.full = msg == "Synced all proxy rules"
	case ipv4 && strings.HasPrefix(msg, "Failed to sync proxy rules"):
		ev.kind = "fail"
		ev.full = strings.Contains(rest, "full=true")
	default:
		return logEvent{}, false
	}
	if e := kvElapsed.FindStringSubmatch(rest); e != nil {
		ev.elapsed, _ = time.ParseDuration(e[1])
	}
	return ev, true
}

// tailLog reads what the daemon's log gained since the last call.
func (nd *node) tailLog() {
	path := nd.logPath()
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	nd.mu.Lock()
	off := nd.logOffset
	nd.mu.Unlock()
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return
	}
	data, err := io.ReadAll(io.LimitReader(f, 8<<20))
	if err != nil {
		return
	}
	end := bytes.LastIndexByte(data, '\n')
	if end < 0 {
		return
	}
	data = data[:end+1]
	now := time.Now()
	var evs []logEvent
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	// klog writes a multi-line value as key=<, its lines tab-indented,
	// then " > " and the rest of the pairs: join those into one record.
	var rec string
	flush := func() {
		if rec != "" {
			if ev, ok := parseLogLine(rec, now); ok {
				evs = append(evs, ev)
			}
		}
		rec = ""
	}
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, " > "):
			if rec != "" {
				rec += " " + line[3:]
			}
		case strings.HasPrefix(line, "\t"):
		default:
			flush()
			rec = line
		}
	}
	flush()
	nd.mu.Lock()
	nd.logOffset = off + int64(len(data))
	nd.events = append(nd.events, evs...)
	nd.mu.Unlock()
}

func (nd *node) logPath() string {
	return nd.s.l.StateDir + "/logs/svcproxy-" + nd.n.Name + ".log"
}

// eventsAfter returns the node's events of kind at or after t.
func (nd *node) eventsAfter(kind string, t time.Time) []logEvent {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	var out []logEvent
	for _, e := range nd.events {
		if e.kind == kind && !e.t.Before(t) {
			out = append(out, e)
		}
	}
	return out
}

// ---- the rules ----------------------------------------------------------------

// programmed is what a node's nat table does for one probed Service: the
// pods its DNAT rules reach (per port) and whether external traffic goes to
// node-local endpoints only.
type programmed struct {
	HTTP, DNS []string
	Local     bool
}

// snapshot is one read of a node's nat table.
type snapshot struct {
	// t is when the read began, end when it returned: the rules it shows
	// were in place at some moment between the two.
	t, end time.Time
	err    bool
	jumps  bool // nat PREROUTING and OUTPUT jump to KUBE-SERVICES
	states map[string]programmed
}

var (
	commentRE = regexp.MustCompile(`--comment (?:"([^"]*)"|(\S+))`)
	dnatRE    = regexp.MustCompile(`--to-destination \[?([0-9a-f.:]+?)\]?:\d+`)
)

func comment(line string) string {
	m := commentRE.FindStringSubmatch(line)
	if m == nil {
		return ""
	}
	if m[1] != "" {
		return m[1]
	}
	return m[2]
}

// parseNAT reads the probed Services' state from iptables-save -t nat.
// DNAT rules in chains no built-in chain reaches (stale chains waiting to
// be deleted) are not counted; orphans says how many there were.
func (s *soak) parseNAT(save string) (jumps bool, states map[string]programmed, orphans int) {
	eps := map[string]map[string]bool{} // "ns/name:port" -> pods
	localExt := map[string]bool{}       // "ns/name:port" with Local external policy
	var pre, out bool
	lines := strings.Split(save, "\n")
	// Chains reachable from the built-in ones: a stale chain keeps its
	// rules (and its jumps) until it is deleted, but nothing reaches it.
	edges := map[string][]string{}
	for _, line := range lines {
		if strings.HasPrefix(line, "-A ") {
			from, _, _ := strings.Cut(line[3:], " ")
			for _, m := range jumpRE.FindAllStringSubmatch(line, -1) {
				edges[from] = append(edges[from], m[1])
			}
		}
	}
	referenced := map[string]bool{}
	queue := []string{"PREROUTING", "OUTPUT", "INPUT", "POSTROUTING"}
	for len(queue) > 0 {
		c := queue[0]
		queue = queue[1:]
		for _, to := range edges[c] {
			if !referenced[to] {
				referenced[to] = true
				queue = append(queue, to)
			}
		}
	}
	for _, line := range lines {
		if !strings.HasPrefix(line, "-A ") {
			continue
		}
		if chain, _, _ := strings.Cut(line[3:], " "); strings.HasPrefix(chain, "KUBE-") && !referenced[chain] && strings.Contains(line, "-j DNAT") {
			orphans++
			if s.orphanExample.Load() == nil {
				ex := line
				s.orphanExample.Store(&ex)
			}
			continue
		}
		if strings.HasPrefix(line, "-A PREROUTING ") && strings.Contains(line, "-j KUBE-SERVICES") {
			pre = true
		}
		if strings.HasPrefix(line, "-A OUTPUT ") && strings.Contains(line, "-j KUBE-SERVICES") {
			out = true
		}
		c := comment(line)
		if k, ok := strings.CutPrefix(c, "pod traffic for "); ok {
			if k, ok = strings.CutSuffix(k, " external destinations"); ok {
				localExt[k] = true
			}
		}
		key, _, _ := strings.Cut(c, " ")
		if !strings.HasPrefix(key, ns+"/p-") {
			continue
		}
		if m := dnatRE.FindStringSubmatch(line); m != nil && strings.Contains(line, "-j DNAT") {
			if eps[key] == nil {
				eps[key] = map[string]bool{}
			}
			name := s.podByIP[m[1]]
			if name == "" {
				name = "?" + m[1]
			}
			eps[key][name] = true
		}
	}
	states = map[string]programmed{}
	for _, p := range s.probeSvcs {
		k := ns + "/" + p.name
		st := programmed{HTTP: setList(eps[k+":http"]), DNS: setList(eps[k+":dns"])}
		// externalTrafficPolicy Local: its external chain short-circuits
		// pod traffic (kube-proxy's "pod traffic for ... external
		// destinations"), with or without local endpoints.
		st.Local = localExt[k+":http"]
		states[p.name] = st
	}
	return pre && out, states, orphans
}

var jumpRE = regexp.MustCompile(`-[jg] (KUBE-\S+)`)

func setList(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func (nd *node) pollRules(ctx context.Context) {
	t := time.Now()
	save, err := lab.SaveStdout(ctx, nd.n.NS, "iptables-nft-save", "nat")
	snap := snapshot{t: t, end: time.Now(), err: err != nil}
	if err == nil {
		var orphans int
		snap.jumps, snap.states, orphans = nd.s.parseNAT(save)
		nd.mu.Lock()
		nd.maxOrphanDNAT = max(nd.maxOrphanDNAT, orphans)
		nd.mu.Unlock()
	}
	nd.mu.Lock()
	nd.snaps = append(nd.snaps, snap)
	nd.mu.Unlock()
}

// matches reports whether a programmed state is what version v asks for.
func (p *probeSvc) matches(got programmed, v version) bool {
	want := strings.Join(v.st.Ready, ",")
	if strings.Join(got.HTTP, ",") != want || strings.Join(got.DNS, ",") != want {
		return false
	}
	return !p.nodePort || len(v.st.Ready) == 0 || got.Local == v.st.Local
}

// shownUntil is the last moment the state a snapshot shows for p was the
// API's: the snapshot's own time when that state is still current then;
// ok is false when it shows no state the API ever had.
func (p *probeSvc) shownUntil(sn snapshot) (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var best time.Time
	found := false
	for _, v := range p.versions {
		if v.From.After(sn.end) || !p.matches(sn.states[p.name], v) {
			continue
		}
		found = true
		u := v.Until
		if u.IsZero() || u.After(sn.t) {
			u = sn.t
		}
		if u.After(best) {
			best = u
		}
	}
	return best, found
}

// showsAfter reports whether the snapshot shows a version of p that was
// current at some moment at or after t.
func (p *probeSvc) showsAfter(sn snapshot, t time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, v := range p.versions {
		if v.From.After(sn.end) || !p.matches(sn.states[p.name], v) {
			continue
		}
		if v.Until.IsZero() || !v.Until.Before(t) {
			return true
		}
	}
	return false
}

// showsWrittenAfter reports whether the snapshot shows a version of p
// whose write began after t.
func (p *probeSvc) showsWrittenAfter(sn snapshot, t time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, v := range p.versions {
		if v.From.After(t) && !v.From.After(sn.end) && p.matches(sn.states[p.name], v) {
			return true
		}
	}
	return false
}

// snapsBetween returns the node's good snapshots taken in [a, b].
func (nd *node) snapsBetween(a, b time.Time) []snapshot {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	var in []snapshot
	for _, sn := range nd.snaps {
		if !sn.err && !sn.t.Before(a) && !sn.t.After(b) {
			in = append(in, sn)
		}
	}
	return in
}

// bracket returns the node's good snapshots that bracket [a, b]: the last
// one taken before a, every one inside, and the first one after b (the
// rules during [a, b] are among what they show, or between two of them).
func (nd *node) bracket(a, b time.Time) []snapshot {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	var out []snapshot
	var before *snapshot
	for i := range nd.snaps {
		sn := &nd.snaps[i]
		if sn.err {
			continue
		}
		switch {
		case sn.end.Before(a):
			before = sn
		case !sn.t.After(b):
			out = append(out, *sn)
		default:
			out = append(out, *sn)
			if before != nil {
				out = append(out, *before)
			}
			return out
		}
	}
	if before != nil {
		out = append(out, *before)
	}
	return out
}

// ---- healthz ------------------------------------------------------------------

// healthObs is a change of the node's /healthz answer (code 0: no answer).
type healthObs struct {
	t    time.Time
	code int
}

func (nd *node) pollHealth() {
	code, _, _, err := lab.HTTPGet(nd.n.NS, "http://"+nd.n.IP+":10256/healthz")
	if err != nil {
		code = 0
	}
	nd.mu.Lock()
	defer nd.mu.Unlock()
	if len(nd.health) == 0 || nd.health[len(nd.health)-1].code != code {
		nd.health = append(nd.health, healthObs{t: time.Now(), code: code})
	}
}

// observe polls logs, rules and healthz of every node until ctx ends
// (bounded: one round per interval).
func (s *soak) observe(ctx context.Context, nd *node, what string, interval time.Duration, f func()) {
	limit := int(2*time.Hour/interval) + 1
	for i := 0; i < limit; i++ {
		f()
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
	}
}
