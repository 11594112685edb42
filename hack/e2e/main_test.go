package e2e

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/svcproxy/svcproxy/hack/lab"
)

const (
	// stem of the lab's prefix (stem + pid, lab.RunPrefix); distinct from
	// the other test tiers' (svpt, svpu, svpe, svpdp, svpip, svp6d).
	stem        = "svpee"
	nodes       = 2
	podsPerNode = 3
	// echoPort is where every pod's echo server listens (TCP and UDP); it
	// answers "<pod name> <client ip>:<port>".
	echoPort = 8080
	// ns is the Kubernetes namespace of the tests' objects.
	ns = "e2e"

	syncPeriod    = 5 * time.Second
	minSyncPeriod = 100 * time.Millisecond
	// converge bounds every wait for svcproxy to program a change.
	converge = 15 * time.Second
)

// env is the lab, control plane and daemons shared by every test.
type env struct {
	lab *lab.Lab
	cp  *lab.ControlPlane
	cs  kubernetes.Interface
	bin string // svcproxy binary

	mu      sync.Mutex
	daemons map[int]*lab.Proc // by node index
	started map[int]time.Time // when each daemon was started
	extra   map[int][]string  // flags added to a node's daemon (a test sets and resets them)
	echos   []*lab.Proc
	binDir  string // temp dir holding bin (removed at teardown)
}

var (
	setupOnce sync.Once
	shared    *env
	setupErr  error
	skipWhy   string

	teardownOnce sync.Once
)

// logf is the lab's progress logger. It must not be a t.Logf: the lab
// outlives the test that happened to create it.
var logf = log.New(os.Stderr, "e2e: ", log.Ltime|log.Lmicroseconds).Printf

func TestMain(m *testing.M) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s := <-sig
		logf("got %v: tearing the lab down", s)
		teardown()
		os.Exit(1)
	}()
	code := m.Run()
	teardown()
	os.Exit(code)
}

// setup returns the shared environment, creating it on first use. It skips
// the test when e2e tests are not enabled or cannot run here, and fails it
// when the environment could not be built.
func setup(t *testing.T) *env {
	t.Helper()
	setupOnce.Do(func() {
		skipWhy, shared, setupErr = buildEnv()
	})
	if skipWhy != "" {
		t.Skip(skipWhy)
	}
	if setupErr != nil {
		t.Fatalf("e2e environment: %v", setupErr)
	}
	e := shared
	e.checkDaemons(t)
	t.Cleanup(func() {
		e.checkDaemons(t)
		if t.Failed() {
			e.diagnose(t)
		}
	})
	return e
}

func buildEnv() (skip string, e *env, err error) {
	if os.Getenv("SVCPROXY_E2E") != "1" {
		return "e2e tests are off: set SVCPROXY_E2E=1 (needs root, iproute2, iptables, etcd and the pinned kube-apiserver)", nil, nil
	}
	if err := lab.ControlPlaneAvailable(); err != nil {
		return fmt.Sprintf("e2e tests need a control plane: %v\n"+
			"  build the pinned kube-apiserver once (~7 min cold, cached afterwards):\n"+
			"      hack/build-kube-apiserver.sh      # -> %s\n"+
			"  and install the tools with hack/install-deps.sh", err, lab.KubeBinary("kube-apiserver")), nil, nil
	}
	start := time.Now()
	e = &env{daemons: map[int]*lab.Proc{}, started: map[int]time.Time{}, extra: map[int][]string{}}
	shared = e // so that teardown can clean up a half-built environment
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	if e.bin, e.binDir, err = buildSvcproxy(ctx); err != nil {
		return "", nil, err
	}
	prefix, err := lab.RunPrefix(stem)
	if err != nil {
		return "", nil, err
	}
	stateDir := filepath.Join(os.TempDir(), "svcproxy-lab-"+prefix)
	_ = os.RemoveAll(filepath.Join(stateDir, "logs")) // logs are appended to: start afresh
	e.lab, err = lab.Up(ctx, lab.Options{
		Prefix: prefix, Nodes: nodes, PodsPerNode: podsPerNode,
		StateDir: stateDir,
		Logf:     logf,
	})
	if err != nil {
		return "", nil, fmt.Errorf("lab up: %w", err)
	}
	if !e.lab.BridgeNetfilter {
		logf("warning: bridge-nf-call-iptables is off in the node namespaces; same-node hairpin traffic may misbehave")
	}
	if e.cp, err = e.lab.StartControlPlane(ctx); err != nil {
		return "", nil, fmt.Errorf("control plane: %w", err)
	}
	if e.cs, err = kubernetes.NewForConfig(e.cp.RESTConfig()); err != nil {
		return "", nil, err
	}
	if err := e.createClusterObjects(ctx); err != nil {
		return "", nil, err
	}
	for _, p := range e.lab.Pods() {
		proc, err := e.lab.StartEchoArgs(p.NS, p.Name, echoPort)
		if err != nil {
			return "", nil, fmt.Errorf("echo server in %s: %w", p.NS, err)
		}
		e.echos = append(e.echos, proc)
		if !e.lab.IPv6 {
			continue
		}
		// The echo server serves one family: a second one, same name and
		// port, answers on the pod's IPv6 address.
		if proc, err = e.lab.StartEchoArgs(p.NS, p.Name, echoPort, "--addr", "::"); err != nil {
			return "", nil, fmt.Errorf("IPv6 echo server in %s: %w", p.NS, err)
		}
		e.echos = append(e.echos, proc)
	}
	for _, n := range e.lab.Nodes {
		if err := e.startDaemon(n.Index); err != nil {
			return "", nil, err
		}
	}
	for _, n := range e.lab.Nodes {
		if err := e.waitDaemonReady(n.Index); err != nil {
			return "", nil, err
		}
	}
	logf("environment ready in %s: lab %s, svcproxy %s, logs in %s/logs", time.Since(start).Round(time.Millisecond), prefix, e.bin, e.lab.StateDir)
	return "", e, nil
}

// buildSvcproxy builds ./cmd/svcproxy into a fresh temp dir ($SVCPROXY_BIN
// overrides), so that `go test ./hack/e2e` works from a clean checkout and
// concurrent runs never share a half-written binary.
func buildSvcproxy(ctx context.Context) (bin, dir string, err error) {
	if p := os.Getenv("SVCPROXY_BIN"); p != "" {
		return p, "", nil
	}
	dir, err = os.MkdirTemp("", "svcproxy-e2e-bin-")
	if err != nil {
		return "", "", err
	}
	bin = filepath.Join(dir, "svcproxy")
	start := time.Now()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/svcproxy/svcproxy/cmd/svcproxy")
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return "", "", fmt.Errorf("building svcproxy: %w: %s", err, out)
	}
	logf("built svcproxy in %s", time.Since(start).Round(time.Millisecond))
	return bin, dir, nil
}

// createClusterObjects creates what a real cluster would already have: the
// tests' namespace and the Node objects (kubelet registers them; svcproxy's
// /healthz needs its Node, and reads its addresses and pod CIDR).
func (e *env) createClusterObjects(ctx context.Context) error {
	if _, err := e.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create namespace %s: %w", ns, err)
	}
	return lab.RegisterNodes(ctx, e.cs, e.lab)
}

// daemonArgs is kube-proxy's command line, as a DaemonSet would pass it,
// plus the node's extra flags. In a dual-stack lab --cluster-cidr names
// both pod networks (IPv4 first), as in a dual-stack cluster.
func (e *env) daemonArgs(i int) []string {
	n := e.lab.Node(i)
	e.mu.Lock()
	extra := e.extra[i]
	e.mu.Unlock()
	clusterCIDR := lab.PodNetwork
	if e.lab.IPv6 {
		clusterCIDR += "," + lab.PodNetwork6
	}
	return append([]string{e.bin,
		"--kubeconfig", e.cp.Kubeconfig(),
		"--hostname-override", n.Name,
		"--cluster-cidr", clusterCIDR,
		"--iptables-min-sync-period", minSyncPeriod.String(),
		"--iptables-sync-period", syncPeriod.String(),
		"--healthz-bind-address", n.IP + ":10256",
		"--metrics-bind-address", "127.0.0.1:10249",
		// nf_conntrack_max is global and read-only inside a network
		// namespace; kind runs kube-proxy the same way.
		"--conntrack-max-per-core", "0",
		"--v", "2",
	}, extra...)
}

func (e *env) startDaemon(i int) error {
	n := e.lab.Node(i)
	started := time.Now()
	p, err := e.lab.StartProcess(n.NS, "svcproxy-"+n.Name, e.daemonArgs(i)...)
	if err != nil {
		return fmt.Errorf("start svcproxy on %s: %w", n.Name, err)
	}
	e.mu.Lock()
	e.daemons[i] = p
	e.started[i] = started
	e.mu.Unlock()
	return nil
}

func (e *env) daemon(i int) *lab.Proc {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.daemons[i]
}

// waitDaemonReady waits until svcproxy on node i has completed a sync of
// every family of the lab (its last-sync metrics are later than its start:
// after a restart the old rules are still there and prove nothing),
// programmed the kubernetes Service, and answers /healthz with 200.
func (e *env) waitDaemonReady(i int) error {
	n := e.lab.Node(i)
	p := e.daemon(i)
	start := time.Now()
	e.mu.Lock()
	started := float64(e.started[i].UnixNano()) / 1e9
	e.mu.Unlock()
	err := lab.Poll(context.Background(), 60*time.Second, 100*time.Millisecond, func() error {
		if exited, werr := p.Exited(); exited {
			return fmt.Errorf("%w: svcproxy on %s exited: %v", lab.ErrStop, n.Name, werr)
		}
		for _, family := range e.families() {
			ts, err := lastSync(n.NS, family)
			if err != nil {
				return err
			}
			if ts < started {
				return fmt.Errorf("no %s sync yet (last sync metric %.3f, process started %.3f)", family, ts, started)
			}
		}
		nat, err := e.save(n.NS, "nat")
		if err != nil {
			return err
		}
		if !strings.Contains(nat, "default/kubernetes:https cluster IP") {
			return errors.New("kubernetes Service not programmed yet")
		}
		code, body, err := httpGet(n.NS, "http://"+n.IP+":10256/healthz")
		if err != nil {
			return err
		}
		if code != 200 {
			return fmt.Errorf("/healthz: %d %s", code, body)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("svcproxy on %s not ready: %w\n--- log tail:\n%s", n.Name, err, p.LogTail(4000))
	}
	logf("svcproxy on %s ready in %s (pid %d)", n.Name, time.Since(start).Round(time.Millisecond), p.Pid())
	return nil
}

// families are the IP families the lab has, hence those every daemon must
// run (svcproxy runs dual-stack wherever both iptables families work).
func (e *env) families() []lab.Family {
	if e.lab.IPv6 {
		return []lab.Family{lab.IPv4, lab.IPv6}
	}
	return []lab.Family{lab.IPv4}
}

// lastSync reads kubeproxy_sync_proxy_rules_last_timestamp_seconds (unix
// seconds of family's last successful sync; 0 before the first) from the
// metrics server of the svcproxy running in node namespace nodeNS.
func lastSync(nodeNS string, family lab.Family) (float64, error) {
	m, err := lab.ScrapeMetrics(context.Background(), nodeNS, lab.MetricsURL)
	if err != nil {
		return 0, err
	}
	ts, ok := m.Flat(family)["kubeproxy_sync_proxy_rules_last_timestamp_seconds"]
	if !ok {
		return 0, fmt.Errorf("/metrics lacks kubeproxy_sync_proxy_rules_last_timestamp_seconds for %s", family)
	}
	return ts, nil
}

// checkDaemons fails t if a daemon died.
func (e *env) checkDaemons(t *testing.T) {
	t.Helper()
	for _, n := range e.lab.Nodes {
		p := e.daemon(n.Index)
		if p == nil {
			continue
		}
		if exited, err := p.Exited(); exited {
			t.Fatalf("svcproxy on %s exited unexpectedly (%v); log tail:\n%s", n.Name, err, p.LogTail(4000))
		}
	}
}

// diagnose logs what helps to understand a failure.
func (e *env) diagnose(t *testing.T) {
	for _, n := range e.lab.Nodes {
		if p := e.daemon(n.Index); p != nil {
			t.Logf("--- svcproxy on %s: %s (tail)\n%s", n.Name, p.Log, p.LogTail(3000))
		}
		if nat, err := e.save(n.NS, "nat"); err == nil {
			t.Logf("--- iptables-save -t nat on %s (%d lines; tail)\n%s", n.Name, strings.Count(nat, "\n"), tail(nat, 5000))
		}
		if !e.lab.IPv6 {
			continue
		}
		if nat, err := e.saveFamily(lab.IPv6, n.NS, "nat"); err == nil {
			t.Logf("--- ip6tables-save -t nat on %s (%d lines; tail)\n%s", n.Name, strings.Count(nat, "\n"), tail(nat, 5000))
		}
	}
}

func teardown() {
	teardownOnce.Do(func() {
		e := shared
		if e == nil {
			return
		}
		start := time.Now()
		e.mu.Lock()
		for _, p := range e.daemons {
			_ = p.Stop()
		}
		for _, p := range e.echos {
			_ = p.Stop()
		}
		e.mu.Unlock()
		if e.cp != nil {
			e.cp.Stop()
		}
		if e.lab != nil {
			if err := e.lab.Down(); err != nil {
				logf("lab down: %v", err)
			}
		}
		if e.binDir != "" {
			os.RemoveAll(e.binDir)
		}
		logf("teardown in %s", time.Since(start).Round(time.Millisecond))
	})
}

// save returns `iptables-save -t table` inside namespace nsName.
func (e *env) save(nsName, table string) (string, error) {
	return e.saveFamily(lab.IPv4, nsName, table)
}

// saveFamily is save for family (ip6tables-save for IPv6).
func (e *env) saveFamily(family lab.Family, nsName, table string) (string, error) {
	return lab.SaveTable(context.Background(), nsName, family, table)
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

func itoa(i int) string { return strconv.Itoa(i) }
