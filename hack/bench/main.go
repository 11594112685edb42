// Command bench measures svcproxy side by side with the real kube-proxy
// (iptables mode) in one lab: node1 runs svcproxy, node2 runs kube-proxy
// v1.36.3, both with the same flags against the same kube-apiserver, each in
// its own node namespace. It creates N service ports × M endpoints through
// the API and measures sync times, rule-update latency and the cost of a
// connection to a ClusterIP, then prints a table (also written to -out).
//
// Run it through hack/bench.sh (`make bench`); it needs root, the lab tools
// and the pinned kube-apiserver and kube-proxy binaries.
//
// Addresses: the service CIDR of the lab is 203.0.113.0/25 (about 120
// ClusterIPs), so N service ports are made of ceil(N/P) Services with P ports
// each (P = ceil(N/100)). Every service port has its own KUBE-SVC chain and
// KUBE-SERVICES rule, which is what sync cost and dispatch depend on.
// Endpoints are fake addresses in 198.51.100.128/25 (no pod lives there; the
// rules are programmed but never used); the per-connection part uses real
// echo backends in the lab's pods.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/svcproxy/svcproxy/hack/lab"
)

const (
	kns      = "bench"
	echoPort = 8080
)

var (
	flagN        = flag.Int("n", 1000, "service ports to create")
	flagM        = flag.Int("m", 10, "endpoints per service port")
	flagK        = flag.Int("k", 20, "single-EndpointSlice updates for the latency measurement")
	flagConns    = flag.Int("conns", 2000, "sequential TCP connections per node for the per-connection cost")
	flagPrefix   = flag.String("prefix", "svpbn", "lab prefix")
	flagSvcproxy = flag.String("svcproxy", "bin/svcproxy", "svcproxy binary")
	flagKP       = flag.String("kube-proxy", "", "kube-proxy binary (default: the cached pinned build)")
	flagMinSync  = flag.Duration("min-sync", time.Second, "--iptables-min-sync-period for both")
	flagOut      = flag.String("out", "_output/bench.txt", "where to write the table")
	flagTimeout  = flag.Duration("timeout", 15*time.Minute, "bound on the whole run")
)

var logf = log.New(os.Stderr, "bench: ", log.Ltime|log.Lmicroseconds).Printf

// daemon is one proxy under test on one node.
type daemon struct {
	label string // "svcproxy" / "kube-proxy"
	node  *lab.Node
	argv  []string
	proc  *lab.Proc
	start time.Time
}

type bench struct {
	l       *lab.Lab
	cp      *lab.ControlPlane
	cs      kubernetes.Interface
	ds      []*daemon // [0] svcproxy on node1, [1] kube-proxy on node2
	echos   []*lab.Proc
	svcs    int // Services
	ports   int // ports per Service
	slices  []*discovery.EndpointSlice
	results *table
}

func main() {
	flag.Parse()
	results := &table{}
	if err := run(results); err != nil {
		if len(results.rows) > 0 {
			fmt.Print(results.String())
			fmt.Println("\n(incomplete: the run failed; see the error below)")
		}
		logf("FAILED: %v", err)
		os.Exit(1)
	}
}

func run(results *table) error {
	if err := lab.ControlPlaneAvailable(); err != nil {
		return err
	}
	kp := *flagKP
	if kp == "" {
		kp = lab.KubeBinary("kube-proxy")
	}
	for _, b := range []string{*flagSvcproxy, kp} {
		if _, err := os.Stat(b); err != nil {
			return fmt.Errorf("binary: %w", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), *flagTimeout)
	defer cancel()

	b := &bench{results: results}
	b.ports = (*flagN + 99) / 100
	b.svcs = (*flagN + b.ports - 1) / b.ports
	n := b.svcs * b.ports

	stateDir := filepath.Join(os.TempDir(), "svcproxy-lab-"+*flagPrefix)
	_ = os.RemoveAll(filepath.Join(stateDir, "logs"))
	var err error
	b.l, err = lab.Up(ctx, lab.Options{Prefix: *flagPrefix, Nodes: 2, PodsPerNode: 2, StateDir: stateDir, Logf: logf})
	if err != nil {
		return fmt.Errorf("lab up: %w", err)
	}
	defer b.teardown()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s := <-sig
		logf("got %v: tearing down", s)
		b.teardown()
		os.Exit(1)
	}()

	if b.cp, err = b.l.StartControlPlane(ctx); err != nil {
		return fmt.Errorf("control plane: %w", err)
	}
	cfg := b.cp.RESTConfig()
	cfg.QPS, cfg.Burst = 500, 1000
	if b.cs, err = kubernetes.NewForConfig(cfg); err != nil {
		return err
	}
	if err := b.clusterObjects(ctx); err != nil {
		return err
	}
	for _, pod := range []*lab.Pod{b.l.Pod(1, 2), b.l.Pod(2, 2)} {
		p, err := b.l.StartEcho(pod.NS, pod.Name, echoPort)
		if err != nil {
			return err
		}
		b.echos = append(b.echos, p)
	}

	common := func(node *lab.Node) []string {
		return []string{
			"--kubeconfig", b.cp.Kubeconfig(),
			"--hostname-override", node.Name,
			"--cluster-cidr", lab.PodNetwork,
			"--proxy-mode", "iptables",
			"--iptables-min-sync-period", flagMinSync.String(),
			"--iptables-sync-period", "1h",
			"--conntrack-max-per-core", "0",
			"--healthz-bind-address", node.IP + ":10256",
			"--metrics-bind-address", "127.0.0.1:10249",
			"--v", "1",
		}
	}
	b.ds = []*daemon{
		{label: "svcproxy", node: b.l.Node(1), argv: append([]string{*flagSvcproxy}, common(b.l.Node(1))...)},
		{label: "kube-proxy", node: b.l.Node(2), argv: append([]string{kp}, common(b.l.Node(2))...)},
	}
	for _, d := range b.ds {
		if err := b.startDaemon(ctx, d); err != nil {
			return err
		}
	}
	b.results.note("N=%d service ports (%d Services × %d ports) × M=%d endpoints; K=%d updates; %d connections; --iptables-min-sync-period=%s; %d CPUs; %s",
		n, b.svcs, b.ports, *flagM, *flagK, *flagConns, *flagMinSync, numCPU(), time.Now().UTC().Format("2006-01-02 15:04 UTC"))

	if err := b.bulkCreate(ctx, n); err != nil {
		return err
	}
	if err := b.updates(ctx); err != nil {
		return err
	}
	if err := b.connections(ctx); err != nil {
		return err
	}
	if err := b.restarts(ctx, n); err != nil {
		return err
	}
	var rss, cpu [2]float64
	for k, d := range b.ds {
		cpu[k], rss[k] = procStats(d.proc.Pid())
	}
	b.results.sec("resources (after the cold start)")
	b.results.add("daemon RSS (MiB)", "%.0f", rss[0]/1024, rss[1]/1024)
	b.results.add("daemon CPU since the restart, incl. iptables-restore (s)", "%.2f", cpu[0], cpu[1])

	out := b.results.String()
	fmt.Print(out)
	if err := os.MkdirAll(filepath.Dir(*flagOut), 0o755); err == nil {
		_ = os.WriteFile(*flagOut, []byte(out), 0o644)
	}
	return nil
}

func numCPU() int {
	data, _ := os.ReadFile("/proc/cpuinfo")
	return strings.Count(string(data), "processor\t:")
}

func (b *bench) teardown() {
	for _, d := range b.ds {
		if d.proc != nil {
			_ = d.proc.Stop()
		}
	}
	for _, p := range b.echos {
		_ = p.Stop()
	}
	if b.cp != nil {
		b.cp.Stop()
	}
	if b.l != nil {
		if err := b.l.Down(); err != nil {
			logf("lab down: %v", err)
		}
		b.l = nil
	}
}

func (b *bench) clusterObjects(ctx context.Context) error {
	if _, err := b.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: kns}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	for _, n := range b.l.Nodes {
		node := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: n.Name, Labels: map[string]string{"kubernetes.io/hostname": n.Name}},
			Spec:       corev1.NodeSpec{PodCIDR: n.PodCIDR, PodCIDRs: []string{n.PodCIDR}},
			Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
				{Type: corev1.NodeInternalIP, Address: n.IP}, {Type: corev1.NodeHostName, Address: n.Name},
			}},
		}
		created, err := b.cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
		if err != nil {
			return err
		}
		created.Status = node.Status
		if _, err := b.cs.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
			return err
		}
	}
	// The per-connection targets: one Service per node whose only endpoint
	// is a pod on that node, so each path crosses one proxy only.
	for i := 1; i <= 2; i++ {
		pod := b.l.Pod(i, 2)
		name := b.echoName(i)
		if _, err := b.cs.CoreV1().Services(kns).Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "tcp", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(echoPort)}}},
		}, metav1.CreateOptions{}); err != nil {
			return err
		}
		if _, err := b.cs.DiscoveryV1().EndpointSlices(kns).Create(ctx, &discovery.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Name: name + "-1", Labels: map[string]string{discovery.LabelServiceName: name}},
			AddressType: discovery.AddressTypeIPv4,
			Endpoints: []discovery.Endpoint{{Addresses: []string{pod.IP}, NodeName: ptr.To(b.l.Node(i).Name),
				Conditions: discovery.EndpointConditions{Ready: ptr.To(true)}}},
			Ports: []discovery.EndpointPort{{Name: ptr.To("tcp"), Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To(int32(echoPort))}},
		}, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	return nil
}

// echoName is the per-connection Service of node i. svcproxy orders
// KUBE-SERVICES by namespace/name:port, so this name puts its rule in the
// middle of the bench services' rules (≈ N/2), where an average service sits.
func (b *bench) echoName(i int) string { return fmt.Sprintf("svc-%04d-echo%d", b.svcs/2, i) }

func (b *bench) startDaemon(ctx context.Context, d *daemon) error {
	return b.startDaemonWithin(ctx, d, 90*time.Second)
}

// startDaemonWithin starts d and waits up to bound for its first sync.
func (b *bench) startDaemonWithin(ctx context.Context, d *daemon, bound time.Duration) error {
	d.start = time.Now()
	p, err := b.l.StartProcess(d.node.NS, d.label+"-"+d.node.Name, d.argv...)
	if err != nil {
		return err
	}
	d.proc = p
	// Ready: a sync after start that programmed the kubernetes Service.
	err = poll(ctx, bound, 100*time.Millisecond, func() error {
		if exited, werr := p.Exited(); exited {
			return fmt.Errorf("%w: %s exited: %v\n%s", errStop, d.label, werr, p.LogTail(3000))
		}
		m, err := metrics(d.node.NS)
		if err != nil {
			return err
		}
		if m["kubeproxy_sync_proxy_rules_last_timestamp_seconds"] < unix(d.start) {
			return errors.New("no sync yet")
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("%s on %s not ready: %w", d.label, d.node.Name, err)
	}
	logf("%s on %s ready in %s (pid %d)", d.label, d.node.Name, time.Since(d.start).Round(time.Millisecond), p.Pid())
	return nil
}

// --- a. bulk creation and full sync -----------------------------------------

func (b *bench) serviceName(i int) string { return fmt.Sprintf("svc-%04d", i) }

func (b *bench) objects(i int) (*corev1.Service, *discovery.EndpointSlice) {
	name := b.serviceName(i)
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name}}
	sl := &discovery.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name + "-1", Labels: map[string]string{discovery.LabelServiceName: name}},
		AddressType: discovery.AddressTypeIPv4,
	}
	for p := 0; p < b.ports; p++ {
		pn := "p" + strconv.Itoa(p)
		svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: pn, Protocol: corev1.ProtocolTCP, Port: int32(1000 + p), TargetPort: intstr.FromInt32(int32(10000 + p))})
		sl.Ports = append(sl.Ports, discovery.EndpointPort{Name: ptr.To(pn), Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To(int32(10000 + p))})
	}
	for j := 0; j < *flagM; j++ {
		ip := fmt.Sprintf("198.51.100.%d", 128+(i*(*flagM)+j)%120)
		sl.Endpoints = append(sl.Endpoints, discovery.Endpoint{Addresses: []string{ip}, NodeName: ptr.To(fmt.Sprintf("node%d", 1+j%2)),
			Conditions: discovery.EndpointConditions{Ready: ptr.To(true)}})
	}
	// Fake endpoints may repeat across Services (the /25 is small) but not
	// within one: M <= 120.
	return svc, sl
}

// countSvcChains counts KUBE-SVC-* chain declarations in iptables-save -t nat.
func countSvcChains(nat string) int { return strings.Count(nat, "\n:KUBE-SVC-") }

func (b *bench) bulkCreate(ctx context.Context, n int) error {
	if *flagM > 120 {
		return errors.New("-m must be <= 120")
	}
	want := n + 3 // + kubernetes, echo1, echo2
	before := b.snapshotMetrics()
	cpuBefore := b.cpu()
	b.slices = make([]*discovery.EndpointSlice, b.svcs)

	// Watch both nodes for "all KUBE-SVC chains present". iptables-save of a
	// large table costs a lot of CPU (which the daemons under test need), so
	// it runs only after each new sync (last-sync metric watched every 100
	// ms); the time reported is that sync's end (its metric) minus t0.
	t0 := time.Now()
	reached := make([]time.Duration, len(b.ds))
	var wg sync.WaitGroup
	watchCtx, stopWatch := context.WithTimeout(ctx, 8*time.Minute)
	defer stopWatch()
	for k, d := range b.ds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			last := -1.0
			for watchCtx.Err() == nil {
				m, err := metrics(d.node.NS)
				ts := m["kubeproxy_sync_proxy_rules_last_timestamp_seconds"]
				if err == nil && ts != last && ts > unix(t0) {
					last = ts
					nat, err := save(d.node.NS)
					if err == nil && countSvcChains(nat) >= want {
						// A sync that ended during the save may be the one
						// that completed the table: take the latest (an
						// upper bound).
						if m2, err := metrics(d.node.NS); err == nil {
							ts = max(ts, m2["kubeproxy_sync_proxy_rules_last_timestamp_seconds"])
						}
						reached[k] = time.Duration((ts - unix(t0)) * 1e9)
						return
					}
				}
				sleep(watchCtx, 100*time.Millisecond)
			}
		}()
	}

	// Create with a few workers.
	work := make(chan int)
	errc := make(chan error, 8)
	var cw sync.WaitGroup
	for w := 0; w < 8; w++ {
		cw.Add(1)
		go func() {
			defer cw.Done()
			for i := range work {
				svc, sl := b.objects(i)
				if _, err := b.cs.CoreV1().Services(kns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
					errc <- fmt.Errorf("create service %s: %w", svc.Name, err)
					return
				}
				created, err := b.cs.DiscoveryV1().EndpointSlices(kns).Create(ctx, sl, metav1.CreateOptions{})
				if err != nil {
					errc <- fmt.Errorf("create slice %s: %w", sl.Name, err)
					return
				}
				b.slices[i] = created
			}
		}()
	}
	var createErr error
feed:
	for i := 0; i < b.svcs; i++ {
		select {
		case work <- i:
		case createErr = <-errc:
			break feed
		}
	}
	close(work)
	cw.Wait()
	if createErr == nil {
		select {
		case createErr = <-errc:
		default:
		}
	}
	created := time.Since(t0)
	if createErr != nil {
		stopWatch()
		wg.Wait()
		return createErr
	}
	logf("created %d Services + %d EndpointSlices (%d service ports) in %s", b.svcs, b.svcs, n, created.Round(time.Millisecond))
	wg.Wait()
	for k, d := range b.ds {
		if reached[k] == 0 {
			return fmt.Errorf("%s on %s: not all %d KUBE-SVC chains present within the bound\n%s", d.label, d.node.Name, want, d.proc.LogTail(3000))
		}
		logf("%s: all KUBE-SVC chains present %s after the first create", d.label, reached[k].Round(time.Millisecond))
	}
	// Converged: a sync later than the last change, then rule counts stable.
	lastChange := unix(t0.Add(created))
	for _, d := range b.ds {
		err := poll(ctx, 2*time.Minute, 200*time.Millisecond, func() error {
			m, err := metrics(d.node.NS)
			if err != nil {
				return err
			}
			if m["kubeproxy_sync_proxy_rules_last_timestamp_seconds"] < lastChange {
				return errors.New("no sync after the last change yet")
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("%s did not converge: %w", d.label, err)
		}
	}
	if err := b.waitStable(ctx); err != nil {
		return err
	}
	after := b.snapshotMetrics()
	cpuAfter := b.cpu()

	t := b.results
	t.sec(fmt.Sprintf("a. bulk: create %d service ports × %d endpoints through the API (took %s), both proxies running", n, *flagM, created.Round(time.Millisecond)))
	t.add("create → all KUBE-SVC chains present (s)", "%.2f", reached[0].Seconds(), reached[1].Seconds())
	t.add("syncs during the bulk phase", "%.0f", delta(before, after, 0, "kubeproxy_sync_proxy_rules_duration_seconds_count"), delta(before, after, 1, "kubeproxy_sync_proxy_rules_duration_seconds_count"))
	t.add("mean sync duration in the bulk phase (ms)", "%.1f", 1000*mean(before, after, 0, "kubeproxy_sync_proxy_rules_duration_seconds"), 1000*mean(before, after, 1, "kubeproxy_sync_proxy_rules_duration_seconds"))
	t.add("daemon CPU in the bulk phase, incl. iptables-restore (s)", "%.2f", cpuAfter[0]-cpuBefore[0], cpuAfter[1]-cpuBefore[1])
	t.add("nat rules (kubeproxy_sync_proxy_rules_iptables_total{table=nat})", "%.0f", after[0][`kubeproxy_sync_proxy_rules_iptables_total{table="nat"}`], after[1][`kubeproxy_sync_proxy_rules_iptables_total{table="nat"}`])
	var nat [2]float64
	for k, d := range b.ds {
		s, _ := save(d.node.NS)
		nat[k] = float64(strings.Count(s, "\n-A "))
	}
	t.add("nat rules (iptables-save -t nat | grep -c ^-A)", "%.0f", nat[0], nat[1])
	var saveMS [2]float64
	for k, d := range b.ds {
		var xs []float64
		for r := 0; r < 5; r++ {
			st := time.Now()
			if _, err := save(d.node.NS); err != nil {
				return err
			}
			xs = append(xs, float64(time.Since(st).Microseconds())/1000)
		}
		saveMS[k] = quantile(xs, 0.5)
	}
	t.add("one `iptables-save -t nat` of that table (ms, median of 5; same size on both)", "%.0f", saveMS[0], saveMS[1])
	return nil
}

// waitStable waits (bounded) until neither node's nat rule count changes over
// two consecutive one-second samples.
func (b *bench) waitStable(ctx context.Context) error {
	prev := []int{-1, -1}
	stable := 0
	for i := 0; i < 60 && stable < 2; i++ {
		cur := make([]int, len(b.ds))
		for k, d := range b.ds {
			s, err := save(d.node.NS)
			if err != nil {
				return err
			}
			cur[k] = strings.Count(s, "\n-A ")
		}
		if slices.Equal(cur, prev) {
			stable++
		} else {
			stable = 0
		}
		prev = cur
		sleep(ctx, time.Second)
	}
	if stable < 2 {
		return errors.New("rule counts did not settle within 60s")
	}
	return nil
}

// --- b. rule-update latency ---------------------------------------------------

func (b *bench) updates(ctx context.Context) error {
	before := b.snapshotMetrics()
	cpuBefore := b.cpu()
	lat := make([][]float64, len(b.ds))
	for u := 0; u < *flagK; u++ {
		i := (u*7919 + 13) % b.svcs
		p := u % b.ports
		sl := b.slices[i].DeepCopy()
		newPort := int32(20000 + u)
		sl.Ports[p].Port = ptr.To(newPort)
		if sl.Annotations == nil {
			sl.Annotations = map[string]string{}
		}
		t0 := time.Now()
		sl.Annotations[corev1.EndpointsLastChangeTriggerTime] = t0.UTC().Format(time.RFC3339Nano)
		updated, err := b.cs.DiscoveryV1().EndpointSlices(kns).Update(ctx, sl, metav1.UpdateOptions{})
		if err != nil {
			return fmt.Errorf("update %s: %w", sl.Name, err)
		}
		b.slices[i] = updated
		target := fmt.Sprintf("--to-destination %s:%d", sl.Endpoints[0].Addresses[0], newPort)
		var wg sync.WaitGroup
		errs := make([]error, len(b.ds))
		for k, d := range b.ds {
			wg.Add(1)
			go func() {
				defer wg.Done()
				got, err := waitRule(ctx, d.node.NS, t0, target, 30*time.Second)
				if err != nil {
					errs[k] = fmt.Errorf("%s: %s not programmed: %w", d.label, target, err)
					return
				}
				lat[k] = append(lat[k], got.Seconds()*1000)
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return err
		}
		sleep(ctx, 300*time.Millisecond+*flagMinSync) // the next update is not rate-limited by the previous sync
	}
	after := b.snapshotMetrics()
	cpuAfter := b.cpu()
	t := b.results
	t.sec(fmt.Sprintf("b. rule-update latency: %d single-EndpointSlice updates (one service port's target port changes), API update → new DNAT in iptables-save", *flagK))
	t.add("latency median (ms)", "%.0f", quantile(lat[0], 0.5), quantile(lat[1], 0.5))
	t.add("latency p90 (ms)", "%.0f", quantile(lat[0], 0.9), quantile(lat[1], 0.9))
	t.add("latency max (ms)", "%.0f", quantile(lat[0], 1), quantile(lat[1], 1))
	t.add("kubeproxy_network_programming_duration_seconds mean (ms)", "%.0f", 1000*mean(before, after, 0, "kubeproxy_network_programming_duration_seconds"), 1000*mean(before, after, 1, "kubeproxy_network_programming_duration_seconds"))
	t.add("syncs during the updates", "%.0f", delta(before, after, 0, "kubeproxy_sync_proxy_rules_duration_seconds_count"), delta(before, after, 1, "kubeproxy_sync_proxy_rules_duration_seconds_count"))
	t.add("mean sync duration, updates (ms)", "%.1f", 1000*mean(before, after, 0, "kubeproxy_sync_proxy_rules_duration_seconds"), 1000*mean(before, after, 1, "kubeproxy_sync_proxy_rules_duration_seconds"))
	t.add("mean partial sync duration (ms)", "%.1f", 1000*mean(before, after, 0, "kubeproxy_sync_partial_proxy_rules_duration_seconds"), 1000*mean(before, after, 1, "kubeproxy_sync_partial_proxy_rules_duration_seconds"))
	t.add("daemon CPU per update, incl. iptables-restore (ms)", "%.0f", 1000*(cpuAfter[0]-cpuBefore[0])/float64(*flagK), 1000*(cpuAfter[1]-cpuBefore[1])/float64(*flagK))
	return nil
}

// waitRule returns how long after t0 the nat table of ns first held target.
// It watches the last-sync metric every 20 ms and checks iptables-save after
// each new sync (and every 2 s regardless), so the resolution is ~20 ms
// rather than the duration of an iptables-save of the whole table.
func waitRule(ctx context.Context, ns string, t0 time.Time, target string, bound time.Duration) (time.Duration, error) {
	deadline := t0.Add(bound)
	last := -1.0
	lastSave := time.Time{}
	for i := 0; time.Now().Before(deadline) && ctx.Err() == nil && i < 100000; i++ {
		m, err := metrics(ns)
		now := time.Now()
		ts := m["kubeproxy_sync_proxy_rules_last_timestamp_seconds"]
		if err == nil && ts != last || now.Sub(lastSave) > 2*time.Second {
			last = ts
			lastSave = now
			s, err := save(ns)
			if err == nil && strings.Contains(s, target) {
				return now.Sub(t0), nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return 0, errors.New("timed out")
}

// --- c. per-connection cost ----------------------------------------------------

func (b *bench) connections(ctx context.Context) error {
	t := b.results
	t.sec(fmt.Sprintf("c. per connection: %d sequential TCP connect+echo+close (5 alternating rounds, median round) from a pod to a ClusterIP whose endpoint is a pod on the same node", *flagConns))
	var per, direct, pos, total [2]float64
	for k, d := range b.ds {
		i := k + 1
		svc, err := b.cs.CoreV1().Services(kns).Get(ctx, b.echoName(i), metav1.GetOptions{})
		if err != nil {
			return err
		}
		nat, err := save(d.node.NS)
		if err != nil {
			return err
		}
		pos[k], total[k] = rulePosition(nat, fmt.Sprintf("%s/%s:tcp cluster IP", kns, b.echoName(i)))
		client := b.l.Pod(i, 1)
		backend := b.l.Pod(i, 2)
		// Warm up (and check the path works).
		if _, err := connLoop(client.NS, backend.IP, echoPort, 50); err != nil {
			return fmt.Errorf("%s: direct: %w", d.label, err)
		}
		if _, err := connLoop(client.NS, svc.Spec.ClusterIP, 80, 50); err != nil {
			return fmt.Errorf("%s: ClusterIP: %w", d.label, err)
		}
		// Alternate rounds of direct and ClusterIP connections; the median
		// round is reported (less sensitive to the other daemon's or the API
		// server's bursts on 2 CPUs).
		const rounds = 5
		var dr, cr []float64
		for r := 0; r < rounds; r++ {
			dd, err := connLoop(client.NS, backend.IP, echoPort, *flagConns/rounds)
			if err != nil {
				return fmt.Errorf("%s: direct: %w", d.label, err)
			}
			cd, err := connLoop(client.NS, svc.Spec.ClusterIP, 80, *flagConns/rounds)
			if err != nil {
				return fmt.Errorf("%s: ClusterIP: %w", d.label, err)
			}
			dr = append(dr, dd.Seconds()*1e6/float64(*flagConns/rounds))
			cr = append(cr, cd.Seconds()*1e6/float64(*flagConns/rounds))
		}
		per[k] = quantile(cr, 0.5)
		direct[k] = quantile(dr, 0.5)
		logf("%s: ClusterIP %.0f µs/conn, pod IP %.0f µs/conn, rule %.0f of %.0f in KUBE-SERVICES", d.label, per[k], direct[k], pos[k], total[k])
	}
	t.add("ClusterIP: time per connection (µs)", "%.0f", per[0], per[1])
	t.add("pod IP directly (no DNAT; still walks KUBE-SERVICES): time per connection (µs)", "%.0f", direct[0], direct[1])
	t.add("ClusterIP − pod IP (µs)", "%.0f", per[0]-direct[0], per[1]-direct[1])
	t.add("KUBE-SERVICES rules", "%.0f", total[0], total[1])
	t.add("position of the echo Service's rule in KUBE-SERVICES", "%.0f", pos[0], pos[1])
	t.note("A random service's rule sits at ≈ N/2 in KUBE-SERVICES for both (svcproxy sorts by name; kube-proxy writes in map order); a packet to a pod IP or an unknown address walks all of it.")
	return nil
}

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

// connLoop makes n sequential TCP connections from namespace ns, reading the
// echo server's one-line greeting each time, and returns the total time.
func connLoop(ns, addr string, port, n int) (time.Duration, error) {
	var took time.Duration
	dst := net.JoinHostPort(addr, strconv.Itoa(port))
	err := lab.InNetns(ns, func() error {
		start := time.Now()
		buf := make([]byte, 256)
		for i := 0; i < n; i++ {
			c, err := net.DialTimeout("tcp4", dst, 2*time.Second)
			if err != nil {
				return fmt.Errorf("connection %d to %s: %w", i, dst, err)
			}
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
				c.Close()
				return fmt.Errorf("connection %d to %s: read: %w", i, dst, err)
			}
			_ = buf
			// RST on close (SO_LINGER 0): no TIME_WAIT pile-up over thousands of connections.
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
			c.Close()
		}
		took = time.Since(start)
		return nil
	})
	return took, err
}

// --- a (cont.). cold start: full sync of N services ------------------------------

func (b *bench) restarts(ctx context.Context, n int) error {
	want := float64(n + 3)
	var wall, full, list [2]float64
	for k, d := range b.ds {
		_ = d.proc.Stop()
		sleep(ctx, time.Second)
		// A cold start with a large N takes minutes (kube-proxy's first
		// restore of 160k rules: several minutes on 2 CPUs).
		if err := b.startDaemonWithin(ctx, d, 10*time.Minute); err != nil {
			return err
		}
		// startDaemon returned after the first sync; make sure it was a full
		// one with every service (kube-proxy syncs only once both informers
		// synced, as svcproxy does).
		var m map[string]float64
		err := poll(ctx, 2*time.Minute, 50*time.Millisecond, func() error {
			var err error
			if m, err = metrics(d.node.NS); err != nil {
				return err
			}
			if m["kubeproxy_sync_full_proxy_rules_duration_seconds_count"] < 1 {
				return errors.New("no full sync yet")
			}
			nat, err := save(d.node.NS)
			if err != nil {
				return err
			}
			if float64(countSvcChains(nat)) < want {
				return errors.New("not all chains yet")
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("%s after restart: %w", d.label, err)
		}
		wall[k] = m["kubeproxy_sync_proxy_rules_last_timestamp_seconds"] - unix(d.start)
		full[k] = m["kubeproxy_sync_full_proxy_rules_duration_seconds_sum"] / m["kubeproxy_sync_full_proxy_rules_duration_seconds_count"]
		list[k] = m["kubeproxy_sync_full_proxy_rules_duration_seconds_count"]
		logf("%s cold start: first sync done %.2fs after exec, full sync %.0f ms", d.label, wall[k], full[k]*1000)
	}
	t := b.results
	t.sec(fmt.Sprintf("a'. cold start with %d service ports programmed (each daemon restarted alone, the other idle)", n))
	t.add("full sync duration (kubeproxy_sync_full_proxy_rules_duration_seconds) (ms)", "%.0f", full[0]*1000, full[1]*1000)
	t.add("exec → end of first sync (last_timestamp − start) (s)", "%.2f", wall[0], wall[1])
	t.add("full syncs counted by then", "%.0f", list[0], list[1])
	return nil
}

// --- metrics, iptables, CPU -------------------------------------------------------

var httpClients sync.Map // ns -> *http.Client

func client(ns string) *http.Client {
	if c, ok := httpClients.Load(ns); ok {
		return c.(*http.Client)
	}
	c := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DialContext: lab.DialContextInNetns(ns), MaxIdleConns: 2}}
	httpClients.Store(ns, c)
	return c
}

var sampleRE = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)$`)

// metrics scrapes 127.0.0.1:10249/metrics in ns. Keys are the metric name
// with labels as printed, except that samples labelled ip_family="IPv6" are
// skipped (both daemons run dual-stack in the lab, every bench Service is
// IPv4, and an idle IPv6 family's syncs would dilute the means) and the
// ip_family label is dropped; labelled samples are also summed under the
// bare name.
func metrics(ns string) (map[string]float64, error) {
	resp, err := client(ns).Get("http://127.0.0.1:10249/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("/metrics: HTTP %d", resp.StatusCode)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 16<<20))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		m := sampleRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		v, err := strconv.ParseFloat(m[2], 64)
		if err != nil {
			continue
		}
		key := m[1]
		if j := strings.IndexByte(key, '{'); j >= 0 {
			name, labels := key[:j], strings.Split(strings.Trim(key[j:], "{}"), ",")
			if slices.Contains(labels, `ip_family="IPv6"`) {
				continue // both daemons run dual-stack here; only IPv4 has services
			}
			labels = slices.DeleteFunc(labels, func(s string) bool { return strings.HasPrefix(s, "ip_family=") || s == "" })
			if strings.HasSuffix(name, "_bucket") {
				continue
			}
			if name == "kubeproxy_sync_proxy_rules_last_timestamp_seconds" {
				out[name] = max(out[name], v)
			} else {
				out[name] += v
			}
			if len(labels) > 0 {
				out[name+"{"+strings.Join(labels, ",")+"}"] += v
			}
			continue
		}
		out[key] = v
	}
	return out, sc.Err()
}

func (b *bench) snapshotMetrics() []map[string]float64 {
	out := make([]map[string]float64, len(b.ds))
	for k, d := range b.ds {
		m, err := metrics(d.node.NS)
		if err != nil {
			logf("metrics of %s: %v", d.label, err)
			m = map[string]float64{}
		}
		out[k] = m
	}
	return out
}

func delta(before, after []map[string]float64, k int, key string) float64 {
	return after[k][key] - before[k][key]
}

// mean of a histogram or summary between two scrapes (NaN when no samples).
func mean(before, after []map[string]float64, k int, name string) float64 {
	c := delta(before, after, k, name+"_count")
	if c == 0 {
		return nan()
	}
	return delta(before, after, k, name+"_sum") / c
}

func nan() float64 { var z float64; return z / z }

func save(ns string) (string, error) {
	out, err := lab.Exec(context.Background(), ns, "iptables-save", "-t", "nat")
	return string(out), err
}

// cpu returns each daemon's CPU seconds (user+system, including waited-for
// children such as iptables-restore).
func (b *bench) cpu() []float64 {
	out := make([]float64, len(b.ds))
	for k, d := range b.ds {
		out[k], _ = procStats(d.proc.Pid())
	}
	return out
}

// procStats reads utime+stime+cutime+cstime (seconds) and VmRSS (KiB).
func procStats(pid int) (cpu, rssKiB float64) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err == nil {
		s := string(data)
		if j := strings.LastIndexByte(s, ')'); j >= 0 {
			f := strings.Fields(s[j+1:])
			// fields after ")" start at field 3 (state); utime is field 14.
			if len(f) > 14 {
				for _, x := range f[11:15] {
					v, _ := strconv.ParseFloat(x, 64)
					cpu += v
				}
				cpu /= 100 // USER_HZ
			}
		}
	}
	if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for _, line := range strings.Split(string(st), "\n") {
			if strings.HasPrefix(line, "VmRSS:") {
				f := strings.Fields(line)
				if len(f) >= 2 {
					rssKiB, _ = strconv.ParseFloat(f[1], 64)
				}
			}
		}
	}
	return cpu, rssKiB
}

// --- helpers -------------------------------------------------------------------

var errStop = errors.New("stop")

func poll(ctx context.Context, bound, every time.Duration, f func() error) error {
	deadline := time.Now().Add(bound)
	var last error
	for i := 0; i < 1_000_000; i++ {
		if last = f(); last == nil || errors.Is(last, errStop) {
			return last
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		sleep(ctx, every)
	}
	return fmt.Errorf("after %s: %w", bound, last)
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
		return nan()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(q*float64(len(s)-1) + 0.5)
	return s[min(i, len(s)-1)]
}

// --- the table -----------------------------------------------------------------

type row struct {
	section      string
	name         string
	format       string
	svcproxy, kp float64
}

type table struct {
	notes   []string
	rows    []row
	section string
}

func (t *table) note(format string, args ...any) {
	t.notes = append(t.notes, fmt.Sprintf(format, args...))
}
func (t *table) sec(s string) { t.section = s }

func (t *table) add(name, format string, svcproxy, kp float64) {
	t.rows = append(t.rows, row{section: t.section, name: name, format: format, svcproxy: svcproxy, kp: kp})
}

func (t *table) String() string {
	var sb strings.Builder
	sb.WriteString("svcproxy vs kube-proxy v1.36.3 (iptables mode), same lab, same API server, same flags\n")
	for _, n := range t.notes {
		sb.WriteString("  " + n + "\n")
	}
	w := 0
	for _, r := range t.rows {
		w = max(w, len([]rune(r.name)))
	}
	sec := ""
	for _, r := range t.rows {
		if r.section != sec {
			sec = r.section
			fmt.Fprintf(&sb, "\n%s\n  %-*s %12s %12s %8s\n", sec, w, "metric", "svcproxy", "kube-proxy", "kp/svp")
		}
		ratio := "-"
		if r.svcproxy > 0 && r.kp > 0 { // (also false for NaN)
			ratio = fmt.Sprintf("%.2f", r.kp/r.svcproxy)
		}
		fmt.Fprintf(&sb, "  %-*s %12s %12s %8s\n", w+(len(r.name)-len([]rune(r.name))), r.name, fmtv(r.format, r.svcproxy), fmtv(r.format, r.kp), ratio)
	}
	return sb.String()
}

func fmtv(format string, v float64) string {
	if v != v {
		return "n/a"
	}
	return fmt.Sprintf(format, v)
}
