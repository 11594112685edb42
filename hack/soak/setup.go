package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/svcproxy/svcproxy/hack/lab"
)

// stem of the lab prefix (lab.RunPrefix: stem + pid).
const stem = "svpsk"

// ns is the Kubernetes namespace of the soak's objects.
const ns = "soak"

// echoPort is where every pod's echo server listens (TCP and UDP).
const echoPort = 8080

// soak is one run.
type soak struct {
	cfg config
	rnd *rand.Rand // churn only (one goroutine)
	// probeWrites orders the probed Services' writes: the churn's and the
	// fault injector's marker write (each reads the current state, then
	// writes a changed one). The injector holds it from its marker write
	// until the fault converged; the churn then skips the probed Services.
	probeWrites sync.Mutex

	l       *lab.Lab
	cp      *lab.ControlPlane
	cs      kubernetes.Interface
	bin     string
	wrapDir string
	nodes   []*node
	echos   []*lab.Proc
	// capturing: the recorders of -capture (capture.go).
	capturing []*lab.Proc
	podByIP   map[string]string // pod IP -> pod name

	start, churnEnd time.Time
	interrupted     atomic.Bool
	teardownOnce    sync.Once

	probeSvcs     []*probeSvc
	orphanExample atomic.Pointer[string]
	udpMu         sync.Mutex
	udpNext       map[string]int
	churn         churnStats
	faults        faultLog
	probes        probeLog
	drift         driftResult
}

// node is one lab node and the svcproxy it runs.
type node struct {
	s        *soak
	n        *lab.Node
	idx      int
	flagFile string // present: one iptables-restore in ten fails
	counter  string

	mu        sync.Mutex
	proc      *lab.Proc
	starts    []time.Time // each exec of the daemon
	killing   bool        // we are killing it: its exit is expected
	crashes   []string    // exits we did not cause
	logOffset int64
	events    []logEvent
	snaps     []snapshot
	health    []healthObs
	// maxOrphanDNAT: most DNAT rules seen in unreferenced chains at once.
	maxOrphanDNAT int
}

// clusterCIDRs are two CIDRs, so that the pod network is matched through
// svcproxy's ipset (SVCPROXY-POD-CIDRS), which the ipset fault destroys.
func (s *soak) clusterCIDRs() string {
	var out []string
	for _, n := range s.l.Nodes {
		out = append(out, n.PodCIDR)
	}
	return strings.Join(out, ",")
}

func (s *soak) daemonArgs(nd *node) []string {
	return []string{
		"env", "PATH=" + s.wrapDir + ":" + os.Getenv("PATH") + ":/usr/sbin:/sbin",
		s.bin, "run",
		"--kubeconfig", s.cp.Kubeconfig(),
		"--hostname-override", nd.n.Name,
		"--cluster-cidr", s.clusterCIDRs(),
		"--iptables-min-sync-period", s.cfg.MinSync.String(),
		"--iptables-sync-period", s.cfg.SyncPeriod.String(),
		"--healthz-bind-address", nd.n.IP + ":10256",
		"--metrics-bind-address", "127.0.0.1:10249",
		"--conntrack-max-per-core", "0",
		// V(2): one line per sync, partial ones too; the soak reads them.
		"--v", "2",
	}
}

// setup builds the lab, the control plane, the echo backends, the probed
// Services and the daemons, and waits until every node has programmed them.
func (s *soak) setup(ctx context.Context) error {
	bin, err := filepath.Abs(s.cfg.Svcproxy)
	if err != nil {
		return err
	}
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("svcproxy binary: %w (make build)", err)
	}
	s.bin = bin
	if err := lab.ControlPlaneAvailable(); err != nil {
		return fmt.Errorf("control plane: %w (make deps kube-apiserver)", err)
	}
	prefix, err := lab.RunPrefix(stem)
	if err != nil {
		return err
	}
	stateDir := filepath.Join(os.TempDir(), "svcproxy-lab-"+prefix)
	_ = os.RemoveAll(stateDir)
	s.l, err = lab.Up(ctx, lab.Options{Prefix: prefix, Nodes: s.cfg.Nodes, PodsPerNode: s.cfg.PodsPerNode, StateDir: stateDir, Logf: logf})
	if err != nil {
		return fmt.Errorf("lab up: %w", err)
	}
	if s.cp, err = s.l.StartControlPlane(ctx); err != nil {
		return fmt.Errorf("control plane: %w", err)
	}
	if s.cs, err = kubernetes.NewForConfig(s.cp.RESTConfig()); err != nil {
		return err
	}
	actx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if _, err := s.cs.CoreV1().Namespaces().Create(actx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("namespace: %w", err)
	}
	if err := lab.RegisterNodes(actx, s.cs, s.l); err != nil {
		return err
	}
	// REJECT answers with ICMP; the kernel's per-destination rate limit
	// (1/s) would turn refusals into timeouts. Nodes only (lab namespaces).
	for _, n := range s.l.Nodes {
		if out, err := lab.Exec(actx, n.NS, "sysctl", "-q", "-w", "net.ipv4.icmp_ratelimit=0", "net.ipv4.icmp_msgs_per_sec=100000", "net.ipv6.icmp.ratelimit=0"); err != nil {
			return fmt.Errorf("icmp rate limit in %s: %v: %s", n.NS, err, out)
		}
	}
	s.podByIP = map[string]string{}
	for _, p := range s.l.Pods() {
		s.podByIP[p.IP] = p.Name
		proc, err := s.l.StartEcho(p.NS, p.Name, echoPort)
		if err != nil {
			return err
		}
		s.echos = append(s.echos, proc)
	}
	if err := s.writeWrappers(); err != nil {
		return err
	}
	if err := s.createProbeServices(actx); err != nil {
		return err
	}
	for i := range s.l.Nodes {
		n := &s.l.Nodes[i]
		nd := &node{s: s, n: n, idx: i,
			flagFile: filepath.Join(s.l.StateDir, fmt.Sprintf("fail-restore-%s", n.Name)),
			counter:  filepath.Join(s.l.StateDir, fmt.Sprintf("restore-count-%s", n.Name))}
		s.nodes = append(s.nodes, nd)
	}
	if s.cfg.Capture {
		// Before the daemons: their first rules' packets are recorded too.
		if err := s.startCaptures(); err != nil {
			return err
		}
	}
	for _, nd := range s.nodes {
		if err := nd.startDaemon(); err != nil {
			return err
		}
	}
	return nil
}

// writeWrappers puts iptables-restore wrappers (both backends, both
// families) in wrapDir, first on the daemons' PATH. While the node's flag
// file exists, every tenth restore fails (exit 1, input read and dropped,
// as iptables-restore does on a bad line); otherwise they exec the real one.
func (s *soak) writeWrappers() error {
	s.wrapDir = filepath.Join(s.l.StateDir, "wrap")
	if err := os.MkdirAll(s.wrapDir, 0o755); err != nil {
		return err
	}
	for _, name := range []string{"iptables-nft-restore", "ip6tables-nft-restore", "iptables-legacy-restore", "ip6tables-legacy-restore"} {
		script := `#!/bin/sh
# soak fault wrapper: see hack/soak/setup.go
flag="$SOAK_FAIL_FLAG"
if [ -n "$flag" ] && [ -e "$flag" ]; then
	n=$( (flock 9; n=$(cat "$flag.count" 2>/dev/null || echo 0); n=$((n+1)); echo "$n" >"$flag.count"; echo "$n") 9>"$flag.lock")
	if [ $((n % 10)) -eq 0 ]; then
		cat >/dev/null
		echo "soak: injected failure of restore $n" >&2
		echo "iptables-restore: line 1 failed" >&2
		exit 1
	fi
fi
exec /usr/sbin/` + name + ` "$@"
`
		if err := os.WriteFile(filepath.Join(s.wrapDir, name), []byte(script), 0o755); err != nil {
			return err
		}
	}
	return nil
}

// startDaemon execs svcproxy on the node and watches for its exit.
func (nd *node) startDaemon() error {
	s := nd.s
	argv := s.daemonArgs(nd)
	// The wrapper's flag file is per node: pass it in the environment.
	argv = append([]string{"env", "SOAK_FAIL_FLAG=" + nd.flagFile}, argv...)
	nd.mu.Lock()
	defer nd.mu.Unlock()
	p, err := s.l.StartProcess(nd.n.NS, "svcproxy-"+nd.n.Name, argv...)
	if err != nil {
		return fmt.Errorf("start svcproxy on %s: %w", nd.n.Name, err)
	}
	nd.proc = p
	nd.killing = false
	nd.starts = append(nd.starts, time.Now())
	go nd.watch(p)
	return nil
}

// watch records an exit we did not cause as a crash and restarts the
// daemon (bounded: at most 20 crash restarts per node).
func (nd *node) watch(p *lab.Proc) {
	<-p.Done()
	_, err := p.Exited()
	nd.mu.Lock()
	expected := nd.killing || nd.proc != p
	if !expected {
		nd.crashes = append(nd.crashes, fmt.Sprintf("%s: exited (%v); log tail:\n%s", time.Now().Format("15:04:05.000"), err, p.LogTail(1500)))
	}
	n := len(nd.crashes)
	nd.mu.Unlock()
	if expected || nd.s.stopping() || n > 20 {
		return
	}
	logf("svcproxy on %s crashed (%v); restarting", nd.n.Name, err)
	time.Sleep(time.Second)
	if err := nd.startDaemon(); err != nil {
		logf("restart after crash: %v", err)
	}
}

// kill SIGKILLs the daemon (an expected exit) and waits for it.
func (nd *node) kill() error {
	nd.mu.Lock()
	p := nd.proc
	nd.killing = true
	nd.mu.Unlock()
	if err := syscall.Kill(p.Pid(), syscall.SIGKILL); err != nil {
		return err
	}
	select {
	case <-p.Done():
		return nil
	case <-time.After(30 * time.Second):
		return errors.New("svcproxy did not exit 30 s after SIGKILL")
	}
}

func (nd *node) signal(sig syscall.Signal) error {
	nd.mu.Lock()
	p := nd.proc
	nd.mu.Unlock()
	return syscall.Kill(p.Pid(), sig)
}

func (s *soak) stopping() bool {
	return s.interrupted.Load() || !s.churnEnd.IsZero() && time.Now().After(s.churnEnd.Add(10*time.Minute))
}

// teardown stops everything the soak started and removes the lab
// (idempotent; also on SIGINT).
func (s *soak) teardown() {
	s.teardownOnce.Do(func() {
		s.interrupted.Store(true)
		for _, nd := range s.nodes {
			nd.mu.Lock()
			p := nd.proc
			nd.killing = true
			nd.mu.Unlock()
			if p != nil {
				_ = syscall.Kill(p.Pid(), syscall.SIGCONT)
				_ = p.Stop()
			}
		}
		for _, p := range s.echos {
			_ = p.Stop()
		}
		for _, p := range s.capturing {
			_ = p.Stop()
		}
		if s.cfg.Keep && s.l != nil {
			logf("lab %s kept (state in %s); remove it with: hack/lab.sh down --prefix %s", s.l.Prefix, s.l.StateDir, s.l.Prefix)
			return
		}
		if s.cp != nil {
			s.cp.Stop()
		}
		if s.l != nil {
			if err := s.l.Down(); err != nil {
				logf("lab down: %v", err)
			}
			logf("lab %s removed (logs in %s/logs)", s.l.Prefix, s.l.StateDir)
		}
	})
}
