package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/svcproxy/svcproxy/hack/lab"
	"github.com/svcproxy/svcproxy/iptables"
)

// driftResult is the end-of-soak comparison, per node.
type driftResult struct {
	quiesce map[string]time.Duration // node -> last write → first sync begun after it
	nodes   []nodeDrift
	err     string
}

type nodeDrift struct {
	name           string
	chains, rules  int // compared (rendered)
	missing, extra []string
	after          time.Duration // comparing until equal (or the deadline)
}

// chainRE: what is compared — every KUBE-* chain svcproxy writes (service,
// endpoint, external, firewall, dispatch and base chains), canaries aside.
var chainRE = regexp.MustCompile(`^KUBE-[A-Z0-9-]+$`)

// normalize returns the declarations and rules of the compared chains in an
// iptables-save text, without counters, sorted, prefixed by table.
func normalize(table, save string) []string {
	var out []string
	for _, line := range strings.Split(save, "\n") {
		var chain string
		switch {
		case strings.HasPrefix(line, ":"):
			chain, _, _ = strings.Cut(line[1:], " ")
			line = ":" + chain
		case strings.HasPrefix(line, "-A "):
			chain, _, _ = strings.Cut(line[3:], " ")
		default:
			continue
		}
		if !chainRE.MatchString(chain) || strings.HasSuffix(chain, "-CANARY") {
			continue
		}
		out = append(out, table+" "+line)
	}
	sort.Strings(out)
	return out
}

// checkDrift waits until every node has begun a sync after the last API
// write, then compares each node's live nat and filter rules with what
// `svcproxy dump` renders for it from the API's final state (applied to an
// empty scratch namespace and read back with iptables-save, so both sides
// are in iptables-save's canonical form).
func (s *soak) checkDrift(ctx context.Context) {
	s.churn.mu.Lock()
	last := s.churn.last
	s.churn.mu.Unlock()
	s.drift.quiesce = map[string]time.Duration{}
	for _, nd := range s.nodes {
		err := lab.Poll(ctx, s.cfg.Converge, 200*time.Millisecond, func() error {
			for _, ev := range nd.eventsAfter("sync", last) {
				if ev.begin().After(last.Add(500 * time.Millisecond)) {
					s.drift.quiesce[nd.n.Name] = ev.t.Sub(last)
					return nil
				}
			}
			return fmt.Errorf("%s: no sync begun after the last write", nd.n.Name)
		})
		if err != nil {
			s.drift.err = err.Error()
			return
		}
	}
	file := filepath.Join(s.l.StateDir, "final-state.json")
	if err := s.exportState(ctx, file); err != nil {
		s.drift.err = "export: " + err.Error()
		return
	}
	scratch := s.l.Prefix + "-node9" // a name lab.Down removes too
	if out, err := exec.Command("ip", "netns", "add", scratch).CombinedOutput(); err != nil {
		s.drift.err = fmt.Sprintf("scratch namespace: %v: %s", err, out)
		return
	}
	defer exec.Command("ip", "netns", "del", scratch).Run()
	// Compared until equal (bounded): stale chains go a batch per sync,
	// so a node may need a few more syncs after it has caught up.
	for _, nd := range s.nodes {
		var d nodeDrift
		start := time.Now()
		err := lab.Poll(ctx, s.cfg.Converge, time.Second, func() error {
			var err error
			if d, err = s.driftOf(ctx, nd, file, scratch); err != nil {
				return fmt.Errorf("%w: %v", lab.ErrStop, err)
			}
			if len(d.missing)+len(d.extra) > 0 {
				return fmt.Errorf("%d missing, %d extra", len(d.missing), len(d.extra))
			}
			return nil
		})
		if errors.Is(err, lab.ErrStop) {
			s.drift.err = fmt.Sprintf("%s: %v", nd.n.Name, err)
			return
		}
		d.after = time.Since(start)
		s.drift.nodes = append(s.drift.nodes, d)
	}
}

func (s *soak) driftOf(ctx context.Context, nd *node, file, scratch string) (nodeDrift, error) {
	d := nodeDrift{name: nd.n.Name}
	args := []string{"dump", "-f", file, "--node-name", nd.n.Name, "--cluster-cidr", s.clusterCIDRs(), "--jumps"}
	// A node that has kube-proxy's nfacct counters (the daemon made them)
	// counts into them: render so, and give the scratch namespace them too.
	counted, err := hasNFAcctCounters(nd.n.NS)
	if err != nil {
		return d, err
	}
	if counted {
		args = append(args, "--nfacct")
		if err := ensureNFAcctCounters(scratch); err != nil {
			return d, err
		}
	}
	dump, err := exec.CommandContext(ctx, s.bin, args...).Output()
	if err != nil {
		return d, fmt.Errorf("svcproxy dump: %w", err)
	}
	// Rules name ipsets: give the scratch namespace empty ones.
	sets := map[string]bool{}
	for _, m := range regexp.MustCompile(`--match-set (\S+)`).FindAllStringSubmatch(string(dump), -1) {
		sets[m[1]] = true
	}
	script := "iptables-nft -t nat -F; iptables-nft -t nat -X; iptables-nft -t filter -F; iptables-nft -t filter -X; "
	for name := range sets {
		script += fmt.Sprintf("ipset -exist create %s hash:net; ", name)
	}
	if err := s.nsExec(ctx, scratch, "sh", "-c", script); err != nil {
		return d, err
	}
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", scratch, "iptables-nft-restore", "--noflush")
	cmd.Stdin = strings.NewReader(string(dump))
	if out, err := cmd.CombinedOutput(); err != nil {
		return d, fmt.Errorf("restoring the rendered rules: %v: %s", err, out)
	}
	var want, got []string
	for _, table := range []string{"nat", "filter"} {
		w, err := lab.SaveStdout(ctx, scratch, "iptables-nft-save", table)
		if err != nil {
			return d, err
		}
		g, err := lab.SaveStdout(ctx, nd.n.NS, "iptables-nft-save", table)
		if err != nil {
			return d, err
		}
		want = append(want, normalize(table, w)...)
		got = append(got, normalize(table, g)...)
	}
	have := map[string]bool{}
	for _, l := range got {
		have[l] = true
	}
	wanted := map[string]bool{}
	for _, l := range want {
		wanted[l] = true
		if strings.Contains(l, " :") {
			d.chains++
		} else {
			d.rules++
		}
		if !have[l] {
			d.missing = append(d.missing, l)
		}
	}
	for _, l := range got {
		if !wanted[l] {
			d.extra = append(d.extra, l)
		}
	}
	return d, nil
}

// hasNFAcctCounters reports whether namespace ns has kube-proxy's nfacct
// counters (both, or none: an error otherwise).
func hasNFAcctCounters(ns string) (bool, error) {
	acct, err := iptables.NewNFAcct(ns)
	if err != nil {
		return false, nil // no nfnetlink_acct: nothing is counted
	}
	counters := iptables.KubeProxyNFAcctCounters()
	have := 0
	for _, name := range counters {
		if _, err := acct.Get(name); err == nil {
			have++
		} else if !errors.Is(err, iptables.ErrNoCounter) {
			return false, fmt.Errorf("nfacct in %s: %w", ns, err)
		}
	}
	if have != 0 && have != len(counters) {
		return false, fmt.Errorf("nfacct in %s: %d of the %d counters", ns, have, len(counters))
	}
	return have > 0, nil
}

func ensureNFAcctCounters(ns string) error {
	acct, err := iptables.NewNFAcct(ns)
	if err != nil {
		return err
	}
	for _, name := range iptables.KubeProxyNFAcctCounters() {
		if err := acct.Ensure(name); err != nil {
			return fmt.Errorf("nfacct in %s: %w", ns, err)
		}
	}
	return nil
}

// exportState writes the API's Services, EndpointSlices and Nodes as one
// JSON List, as `svcproxy dump -f` reads them.
func (s *soak) exportState(ctx context.Context, file string) error {
	svcs, err := s.cs.CoreV1().Services("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	slices, err := s.cs.DiscoveryV1().EndpointSlices("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	nodes, err := s.cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	var items []runtime.RawExtension
	add := func(apiVersion, kind string, obj any) error {
		b, err := json.Marshal(obj)
		if err != nil {
			return err
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			return err
		}
		m["apiVersion"], m["kind"] = apiVersion, kind
		b, err = json.Marshal(m)
		items = append(items, runtime.RawExtension{Raw: b})
		return err
	}
	for i := range svcs.Items {
		if err := add("v1", "Service", &svcs.Items[i]); err != nil {
			return err
		}
	}
	for i := range slices.Items {
		if err := add("discovery.k8s.io/v1", "EndpointSlice", &slices.Items[i]); err != nil {
			return err
		}
	}
	for i := range nodes.Items {
		if err := add("v1", "Node", &nodes.Items[i]); err != nil {
			return err
		}
	}
	b, err := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "List", "items": items})
	if err != nil {
		return err
	}
	return os.WriteFile(file, b, 0o644)
}
