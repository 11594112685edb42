//go:build migration

package migration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/svcproxy/svcproxy/hack/lab"
)

const (
	// stem of the lab's prefix; distinct from every other tier's (hack/README.md).
	stem        = "svpim"
	nodes       = 2
	podsPerNode = 2
	kubeSystem  = "kube-system"
	testNS      = "migration"
	echoPort    = 8080 // hack/echoserver: one answer per connection or datagram
	linePort    = 9000 // lineServer: answers every line, keeps the connection
	webNodePort = 30080

	// upstreamKubeProxyImage is what kubeadm's DaemonSet names;
	// kubeProxyImage the lab's stand-in the test's kubelet runs for it.
	upstreamKubeProxyImage = "registry.k8s.io/kube-proxy:v1.36.3"
	kubeProxyImage         = "localhost/svcproxy-lab/kube-proxy:v1.36.3"

	grace       = 30 * time.Second // a pod's default terminationGracePeriodSeconds
	readyWithin = 2 * time.Minute  // bound on a proxy's first sync and /healthz
	staleWithin = 3 * time.Minute  // bound on svcproxy deleting kube-proxy's leftover chains
	probeEvery  = 20 * time.Millisecond
	minProbes   = 25 // new connections a prober must make in a phase before it ends
)

// backendOf is each node's iptables backend: what kubelet's hint chain
// (mangle KUBE-IPTABLES-HINT) says, and what both proxies must follow.
var backendOf = map[int]string{1: "nft", 2: "legacy"}

var backends = []string{"nft", "legacy"}

// env is the lab, its API server and what runs on the nodes.
type env struct {
	t       *testing.T
	lab     *lab.Lab
	cp      *lab.ControlPlane
	cs      kubernetes.Interface
	kubelet *podEnv

	svcproxyObjs []runtime.Object // manifests/ (ConfigMap adapted to the lab)
	kubeadmObjs  []runtime.Object // kubeadm's add-on, ConfigMap included
	svcproxyDS   string           // names of the two DaemonSets
	kubeadmDS    string
	svcproxyImg  string // the image manifests/daemonset.yaml names

	web, live *corev1.Service

	kpSEPs    map[int][]string // kube-proxy's KUBE-SEP chains per node, before the migration
	kpMetrics []string         // kube-proxy's kubeproxy_* metric families
	start     time.Time        // of the test, for step's log

	mu    sync.Mutex
	pods  map[string]*pod // running, by pod name
	echos []*lab.Proc
	lines []*lineServer
}

// pod is a DaemonSet's pod on one node, run by podman.
type pod struct {
	name    string
	ds      string
	node    *lab.Node
	spec    lab.ContainerSpec
	c       *lab.Container
	started time.Time
}

func TestMigration(t *testing.T) {
	e := setup(t)
	for _, n := range e.lab.Nodes {
		e.markBackend(n.Index)
		e.step("%s: kubelet's hint chain says iptables backend %s", n.Name, backendOf[n.Index])
	}
	e.kubeadmCluster()
	live := e.openLive("kube-proxy")
	e.switchToSvcproxy(live)
	live = append(live, e.openLive("svcproxy")...)
	e.backWithCleanup(live)
	e.backInPlace(live)
}

// kubeadmCluster starts the cluster as kubeadm made it, kube-proxy on every
// node, checks it, and records kube-proxy's chains and metrics.
func (e *env) kubeadmCluster() {
	e.must(apply(e.ctx(), e.cs, e.kubeadmObjs))
	e.runDaemonSet(e.kubeadmDS)
	e.step("kube-proxy (%s) ready on every node", kubeProxyImage)
	e.changeEndpoints("np-kube-proxy")
	e.kpSEPs = map[int][]string{}
	for _, n := range e.lab.Nodes {
		e.checkNode(&n, "kube-proxy")
		e.waitNoStaleChains(&n)
		e.kpSEPs[n.Index] = e.chains(&n, "KUBE-SEP-")
		e.checkKubeProxyLayout(&n)
	}
	e.kpMetrics = e.metricNames(e.lab.Node(1))
	e.step("kube-proxy: traffic, /healthz, /livez and backends checked; KUBE-SEP chains per node: %d, %d", len(e.kpSEPs[1]), len(e.kpSEPs[2]))
}

// switchToSvcproxy is docs/kubeadm-migration.md, B: delete kubeadm's
// DaemonSet and ConfigMap, apply manifests/. No new connection may fail.
func (e *env) switchToSvcproxy(live []*liveConn) {
	probers := e.startProbers("kube-proxy running")
	e.waitProbes(probers, "kube-proxy running")
	setPhase(probers, "kube-proxy stopping")
	e.must(remove(e.ctx(), e.cs, e.kubeadmDaemonSetAndConfig()))
	e.stopPods(e.kubeadmDS)
	setPhase(probers, "no proxy (rules left in place)")
	e.waitProbes(probers, "no proxy (rules left in place)")
	e.step("kube-proxy stopped; its rules stay")
	setPhase(probers, "svcproxy starting")
	e.startSvcproxy()
	setPhase(probers, "svcproxy running")
	for _, n := range e.lab.Nodes {
		e.waitNoStaleChains(&n)
	}
	e.step("kube-proxy's leftover chains deleted by svcproxy")
	e.waitProbes(probers, "svcproxy running")
	e.endProbers(probers, "during the switch to svcproxy")
	e.checkLive(live, "after the switch to svcproxy")
	for _, n := range e.lab.Nodes {
		e.checkNode(&n, "svcproxy")
		e.checkChosenBackend(&n)
		e.step("%s: svcproxy chose iptables backend %s; KUBE-SEP chains %d (kube-proxy had %d)",
			n.Name, backendOf[n.Index], len(e.chains(&n, "KUBE-SEP-")), len(e.kpSEPs[n.Index]))
	}
	e.changeEndpoints("np-svcproxy")
	e.checkMetrics(e.lab.Node(1), e.kpMetrics)
	e.step("svcproxy: traffic, /healthz, /livez, metrics and backends checked")
}

// backWithCleanup is the reverse migration as the issue asks for it: delete
// manifests/, `svcproxy cleanup` from the image on every node, kubeadm's
// add-on again. New connections fail only between the cleanup and
// kube-proxy's first sync (no rules then); the test counts them.
func (e *env) backWithCleanup(live []*liveConn) {
	probers := e.startProbers("svcproxy running")
	e.waitProbes(probers, "svcproxy running")
	setPhase(probers, "svcproxy stopping")
	cleanupSpecs := e.stopPods(e.svcproxyDS)
	e.must(remove(e.ctx(), e.cs, e.svcproxyObjs))
	e.waitProbes(probers, "svcproxy stopping")
	setPhase(probers, "cleanup until kube-proxy's sync")
	for _, s := range cleanupSpecs {
		e.svcproxyCleanup(s)
	}
	e.step("svcproxy cleanup ran on every node; no kube-proxy or svcproxy chain left, kubelet's hint kept")
	e.startKubeProxy()
	setPhase(probers, "kube-proxy back")
	e.waitProbes(probers, "kube-proxy back")
	e.endProbers(probers, "outside the window from cleanup to kube-proxy's first sync", "cleanup until kube-proxy's sync")
	e.checkLive(live, "after the way back to kube-proxy with cleanup")
	e.checkKubeProxyBack()
}

// backInPlace switches to svcproxy once more and back to kube-proxy without
// cleanup (docs, A: "Rolling back"): kube-proxy takes svcproxy's rules over
// in place. No new connection may fail.
func (e *env) backInPlace(live []*liveConn) {
	probers := e.startProbers("kube-proxy running")
	e.waitProbes(probers, "kube-proxy running")
	setPhase(probers, "switch to svcproxy")
	e.must(remove(e.ctx(), e.cs, e.kubeadmDaemonSetAndConfig()))
	e.stopPods(e.kubeadmDS)
	e.startSvcproxy()
	for _, n := range e.lab.Nodes {
		e.waitNoStaleChains(&n)
	}
	setPhase(probers, "svcproxy running")
	e.waitProbes(probers, "svcproxy running")
	setPhase(probers, "back to kube-proxy, no cleanup")
	e.stopPods(e.svcproxyDS)
	e.must(remove(e.ctx(), e.cs, e.svcproxyObjs))
	e.startKubeProxy()
	setPhase(probers, "kube-proxy back")
	e.waitProbes(probers, "kube-proxy back")
	e.endProbers(probers, "going back to kube-proxy without cleanup")
	e.checkLive(live, "after going back to kube-proxy without cleanup")
	e.checkKubeProxyBack()
}

func (e *env) startSvcproxy() {
	e.must(apply(e.ctx(), e.cs, e.svcproxyObjs))
	e.runDaemonSet(e.svcproxyDS)
	e.step("svcproxy (%s) ready on every node", e.svcproxyImg)
}

func (e *env) startKubeProxy() {
	e.must(apply(e.ctx(), e.cs, e.kubeadmObjs))
	e.runDaemonSet(e.kubeadmDS)
	e.step("kube-proxy ready again on every node")
}

// endProbers stops the probers, logs their reports and fails the test for
// every failed probe outside the phases where failures are expected.
func (e *env) endProbers(ps []*prober, when string, expectFailures ...string) {
	stopProbers(ps)
	for _, p := range ps {
		e.t.Log(p.report())
		var phases []string
		for _, ph := range p.phases {
			if !slices.Contains(expectFailures, ph) {
				phases = append(phases, ph)
			}
		}
		if n := p.failures(phases...); n > 0 {
			e.t.Errorf("%s: %d new connections failed %s", p.spec.NS, n, when)
		}
	}
}

// checkKubeProxyBack checks that kube-proxy works and its layout is back:
// traffic, no stale chain, one KUBE-SEP chain per endpoint (those from
// before the migration among them), no svcproxy chain.
func (e *env) checkKubeProxyBack() {
	for _, n := range e.lab.Nodes {
		e.checkNode(&n, "kube-proxy")
		e.waitNoStaleChains(&n)
		e.checkKubeProxyLayout(&n)
		if got := e.chains(&n, "KUBE-SEP-"); !isSubset(e.kpSEPs[n.Index], got) {
			e.t.Errorf("%s: KUBE-SEP chains after the way back: %v, want all of kube-proxy's from before %v", n.Name, got, e.kpSEPs[n.Index])
		}
		if got := e.chains(&n, "SVCPROXY-"); len(got) > 0 {
			e.t.Errorf("%s: svcproxy chains left under kube-proxy: %v", n.Name, got)
		}
	}
	e.step("kube-proxy: traffic and chains (as before the migration) checked")
}

// ---- setup -----------------------------------------------------------------

func setup(t *testing.T) *env {
	if os.Geteuid() != 0 {
		t.Skip("the migration test needs root (network namespaces, podman)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := lab.PodmanAvailable(ctx); err != nil {
		t.Fatalf("podman cannot run containers here: %v", err)
	}
	if err := lab.ControlPlaneAvailable(); err != nil {
		t.Fatalf("no control plane: %v (hack/install-deps.sh; hack/build-kube-apiserver.sh)", err)
	}
	e := &env{t: t, pods: map[string]*pod{}}
	e.readObjects()
	for img, how := range map[string]string{e.svcproxyImg: "make image", kubeProxyImage: "hack/image.sh kube-proxy"} {
		if !lab.ImageExists(ctx, img) {
			t.Fatalf("image %s is not in podman's storage: run %s", img, how)
		}
	}

	prefix, err := lab.RunPrefix(stem)
	if err != nil {
		t.Fatal(err)
	}
	if err := lab.RemoveStaleContainers(stem); err != nil {
		t.Logf("removing stale containers: %v", err)
	}
	stateDir := filepath.Join(os.TempDir(), "svcproxy-lab-"+prefix)
	_ = os.RemoveAll(stateDir)
	t.Cleanup(e.teardown) // also after a failed Up: it removes what exists
	e.lab, err = lab.Up(ctx, lab.Options{Prefix: prefix, Nodes: nodes, PodsPerNode: podsPerNode, StateDir: stateDir, Logf: t.Logf})
	if err != nil {
		t.Fatalf("lab up: %v", err)
	}
	if e.cp, err = e.lab.StartControlPlane(ctx); err != nil {
		t.Fatalf("control plane: %v", err)
	}
	if e.cs, err = kubernetes.NewForConfig(e.cp.RESTConfig()); err != nil {
		t.Fatal(err)
	}
	ca, err := os.ReadFile(filepath.Join(e.cp.Dir, "certs", "apiserver.crt"))
	if err != nil {
		t.Fatalf("the API server's self-signed certificate (the pods' ca.crt): %v", err)
	}
	e.kubelet = &podEnv{lab: e.lab, cs: e.cs, caPEM: ca}
	e.adaptConfigMaps()
	e.must(lab.RegisterNodes(ctx, e.cs, e.lab))
	e.startBackends()
	e.createServices(ctx)
	e.start = time.Now()
	return e
}

// readObjects reads manifests/ and kubeadm's add-on; kubeadm's ConfigMap
// gets the manifests' data (an operator following the docs copies it the
// other way round: the same data either way).
func (e *env) readObjects() {
	var err error
	if e.svcproxyObjs, err = readKustomization(manifestsDir); err != nil {
		e.t.Fatal(err)
	}
	if e.kubeadmObjs, err = readObjects(kubeadmFile); err != nil {
		e.t.Fatal(err)
	}
	ds, err := only[*appsv1.DaemonSet](e.svcproxyObjs)
	e.must(err)
	e.svcproxyDS, e.svcproxyImg = ds.Name, ds.Spec.Template.Spec.Containers[0].Image
	kds, err := only[*appsv1.DaemonSet](e.kubeadmObjs)
	e.must(err)
	e.kubeadmDS = kds.Name
	cm, err := only[*corev1.ConfigMap](e.svcproxyObjs)
	e.must(err)
	kcm := cm.DeepCopy()
	kcm.ObjectMeta = metav1.ObjectMeta{Name: "kube-proxy", Namespace: kubeSystem, Labels: map[string]string{"app": "kube-proxy"}}
	e.kubeadmObjs = append(e.kubeadmObjs, kcm)
}

// adaptConfigMaps makes both ConfigMaps work in the lab (adaptConfigMap).
func (e *env) adaptConfigMaps() {
	lc := labConfig{server: e.cp.Server, clusterCIDRs: clusterCIDRs(e.lab)}
	for _, objs := range [][]runtime.Object{e.svcproxyObjs, e.kubeadmObjs} {
		cm, err := only[*corev1.ConfigMap](objs)
		e.must(err)
		changes, err := adaptConfigMap(cm, lc)
		e.must(err)
		e.t.Logf("ConfigMap %s/%s, changed for the lab: %s", cm.Namespace, cm.Name, strings.Join(changes, "; "))
	}
}

// kubeadmDaemonSetAndConfig are what docs B.2 deletes.
func (e *env) kubeadmDaemonSetAndConfig() []runtime.Object {
	var out []runtime.Object
	for _, o := range e.kubeadmObjs {
		switch o.(type) {
		case *appsv1.DaemonSet, *corev1.ConfigMap:
			out = append(out, o)
		}
	}
	return out
}

// backendPods are the Services' endpoints: pod 2 of every node.
func (e *env) backendPods() []*lab.Pod {
	var out []*lab.Pod
	for _, n := range e.lab.Nodes {
		out = append(out, e.lab.Pod(n.Index, 2))
	}
	return out
}

func (e *env) backendNames() []string {
	var out []string
	for _, p := range e.backendPods() {
		out = append(out, p.Name)
	}
	return out
}

// client is node i's client pod (pod 1): its traffic goes through node i's proxy.
func (e *env) client(i int) *lab.Pod { return e.lab.Pod(i, 1) }

func (e *env) startBackends() {
	for _, p := range e.backendPods() {
		proc, err := e.lab.StartEcho(p.NS, p.Name, echoPort)
		e.must(err)
		ls, err := startLineServer(p, linePort)
		e.must(err)
		e.mu.Lock()
		e.echos = append(e.echos, proc)
		e.lines = append(e.lines, ls)
		e.mu.Unlock()
	}
}

// createServices creates web (NodePort: TCP 80 and UDP 53 to the echo
// servers) and live (ClusterIP: TCP 9000 to the line servers), each with
// its EndpointSlice first, so that neither exists without endpoints.
func (e *env) createServices(ctx context.Context) {
	_, err := e.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testNS}}, metav1.CreateOptions{})
	e.must(err)
	web := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: testNS},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Ports: []corev1.ServicePort{
			{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(echoPort), NodePort: webNodePort},
			{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53, TargetPort: intstr.FromInt32(echoPort)},
		}},
	}
	live := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "live", Namespace: testNS},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{
			{Name: "line", Protocol: corev1.ProtocolTCP, Port: linePort, TargetPort: intstr.FromInt32(linePort)},
		}},
	}
	for _, svc := range []*corev1.Service{web, live} {
		*svc = *e.createService(ctx, svc)
	}
	e.web, e.live = web, live
}

// createService creates svc with an EndpointSlice for the backend pods,
// the slice first. The slice carries the last-change-trigger-time the
// EndpointSlice controller sets, from which proxies measure network
// programming latency.
func (e *env) createService(ctx context.Context, svc *corev1.Service) *corev1.Service {
	var eps []lab.SliceEndpoint
	for _, p := range e.backendPods() {
		eps = append(eps, lab.SliceEndpoint{Pod: p, Ready: true})
	}
	slice := lab.EndpointSliceFor(svc, testNS, svc.Name+"-1", "svpim-test", eps...)
	slice.Annotations = map[string]string{corev1.EndpointsLastChangeTriggerTime: time.Now().Format(time.RFC3339Nano)}
	_, err := e.cs.DiscoveryV1().EndpointSlices(testNS).Create(ctx, slice, metav1.CreateOptions{})
	e.must(err)
	created, err := e.cs.CoreV1().Services(testNS).Create(ctx, svc, metav1.CreateOptions{})
	e.must(err)
	e.t.Logf("service %s/%s: cluster IP %s, endpoints %v", testNS, svc.Name, created.Spec.ClusterIP, e.backendNames())
	return created
}

// changeEndpoints makes a Service change while a proxy runs (a new Service
// and its slice) and waits until the proxy on every node has programmed it
// and observed a network programming latency: kube-proxy and svcproxy only
// count changes made after they started, and a dashboard's latency panel
// reads that series. (The latency can be observed before the Service is
// programmed: the slice comes first.)
func (e *env) changeEndpoints(name string) {
	ctx := e.ctx()
	e.createService(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: testNS},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{
			{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(echoPort)},
		}},
	})
	for _, n := range e.lab.Nodes {
		n := n
		err := lab.Poll(ctx, readyWithin, 100*time.Millisecond, func() error {
			if c := e.histogramCount(&n, "kubeproxy_network_programming_duration_seconds"); c == 0 {
				return errors.New("no network programming latency observed")
			}
			nat, err := e.save(&n, "iptables", "nat")
			if err != nil {
				return err
			}
			if !strings.Contains(nat, testNS+"/"+name+":http cluster IP") {
				return fmt.Errorf("%s not programmed", name)
			}
			return nil
		})
		if err != nil {
			e.t.Errorf("%s: after creating %s: %v", n.Name, name, err)
		}
	}
}

// histogramCount is the sample count of a histogram family on n (all label
// values, both families).
func (e *env) histogramCount(n *lab.Node, name string) uint64 {
	m, err := lab.ScrapeMetrics(e.ctx(), n.NS, lab.MetricsURL)
	if err != nil {
		return 0
	}
	var total uint64
	if f := m[name]; f != nil {
		for _, s := range f.GetMetric() {
			total += s.GetHistogram().GetSampleCount()
		}
	}
	return total
}

// markBackend does what kubelet does at start: it creates its hint chain
// in the backend it uses (both families), which is how iptables-wrapper and
// svcproxy learn the node's backend.
func (e *env) markBackend(i int) {
	n := e.lab.Node(i)
	for _, fam := range e.families() {
		bin := fam + "-" + backendOf[i]
		for _, chain := range []string{"KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY"} {
			if _, err := e.lab.Exec(n.NS, bin, "-t", "mangle", "-N", chain); err != nil {
				e.t.Fatalf("%s: %s -t mangle -N %s: %v", n.Name, bin, chain, err)
			}
		}
	}
}

func (e *env) families() []string {
	if e.lab.IPv6 {
		return []string{"iptables", "ip6tables"}
	}
	return []string{"iptables"}
}

func (e *env) teardown() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, p := range e.pods {
		if e.t.Failed() {
			e.t.Logf("--- %s on %s (log tail)\n%s", p.ds, p.node.Name, p.c.LogTail(4000))
		}
		_ = p.c.Stop(ctx, 5*time.Second)
	}
	for _, ls := range e.lines {
		ls.Close()
	}
	for _, p := range e.echos {
		_ = p.Stop()
	}
	if e.lab == nil {
		return
	}
	if err := lab.RemoveContainers(e.lab.Prefix); err != nil {
		e.t.Logf("removing containers: %v", err)
	}
	if e.cp != nil {
		e.cp.Stop()
	}
	if err := e.lab.Down(); err != nil {
		e.t.Logf("lab down: %v", err)
	}
}

// ---- running DaemonSets -------------------------------------------------------

// runDaemonSet runs the DaemonSet's pod on every node, as its kubelet would
// (from the object the API server holds), and waits until each is ready.
func (e *env) runDaemonSet(name string) {
	ctx := e.ctx()
	ds, err := e.cs.AppsV1().DaemonSets(kubeSystem).Get(ctx, name, metav1.GetOptions{})
	e.must(err)
	var started []*pod
	for _, n := range e.lab.Nodes {
		n := n
		spec, err := e.kubelet.containerFor(ctx, ds, &n)
		e.must(err)
		if spec.Image == upstreamKubeProxyImage {
			spec.Image = kubeProxyImage
		}
		p := &pod{name: spec.Name, ds: name, node: &n, spec: spec, started: time.Now()}
		p.c, err = e.lab.StartContainer(ctx, spec)
		e.must(err)
		e.mu.Lock()
		e.pods[p.name] = p
		e.mu.Unlock()
		e.t.Logf("%s: started %s (%s): %s %s", n.Name, p.c.Name, spec.Image, strings.Join(spec.Entrypoint, " "), mountsString(spec.Mounts))
		started = append(started, p)
	}
	for _, p := range started {
		e.waitReady(p)
	}
}

func mountsString(ms []lab.Mount) string {
	var out []string
	for _, m := range ms {
		s := "-v " + m.Source + ":" + m.Target
		if m.ReadOnly {
			s += ":ro"
		}
		out = append(out, s)
	}
	return strings.Join(out, " ")
}

// stopPods stops the DaemonSet's pods (SIGTERM, then SIGKILL after the
// grace period, as kubelet deletes a pod) and returns their specs.
func (e *env) stopPods(ds string) []lab.ContainerSpec {
	ctx := e.ctx()
	e.mu.Lock()
	defer e.mu.Unlock()
	var specs []lab.ContainerSpec
	for name, p := range e.pods {
		if p.ds != ds {
			continue
		}
		if err := p.c.Stop(ctx, grace); err != nil {
			e.t.Fatalf("stopping %s: %v", p.c.Name, err)
		}
		delete(e.pods, name)
		specs = append(specs, p.spec)
	}
	slices.SortFunc(specs, func(a, b lab.ContainerSpec) int { return strings.Compare(a.Name, b.Name) })
	return specs
}

// waitReady waits until the proxy in p has synced since it started, serves
// /healthz with 200, and has the web Service programmed.
func (e *env) waitReady(p *pod) {
	ctx := e.ctx()
	started := float64(p.started.UnixNano()) / 1e9
	err := lab.Poll(ctx, readyWithin, 200*time.Millisecond, func() error {
		if err := p.c.Running(ctx); err != nil {
			return fmt.Errorf("%w: %v", lab.ErrStop, err)
		}
		m, err := lab.ScrapeMetrics(ctx, p.node.NS, lab.MetricsURL)
		if err != nil {
			return err
		}
		if ts := m.Flat(lab.IPv4)["kubeproxy_sync_proxy_rules_last_timestamp_seconds"]; ts < started {
			return fmt.Errorf("no sync since the start (last sync %.3f, started %.3f)", ts, started)
		}
		if code, _, body, err := lab.HTTPGet(e.lab.Client.NS, e.healthz(p.node, "healthz")); err != nil || code != 200 {
			return fmt.Errorf("/healthz: %d %s %v", code, body, err)
		}
		nat, err := e.save(p.node, "iptables", "nat")
		if err != nil {
			return err
		}
		if !strings.Contains(nat, testNS+"/web:http cluster IP") {
			return errors.New("web Service not programmed")
		}
		return nil
	})
	if err != nil {
		e.t.Fatalf("%s on %s not ready: %v\n--- log tail:\n%s", p.ds, p.node.Name, err, p.c.LogTail(4000))
	}
}

// svcproxyCleanup runs `svcproxy cleanup` from the svcproxy image with the pod's
// mounts and privileges, in its node's network namespace.
func (e *env) svcproxyCleanup(s lab.ContainerSpec) {
	s.Name += "-cleanup"
	s.Entrypoint = []string{"/usr/local/bin/svcproxy", "cleanup"}
	s.Args = nil
	out, err := e.lab.RunContainer(e.ctx(), s)
	if err != nil {
		e.t.Fatalf("%s: %v\n%s", s.Name, err, out)
	}
	e.t.Logf("%s: %s", s.Name, strings.TrimSpace(string(out)))
	n := e.nodeOf(s.NS)
	for _, b := range backends {
		for _, fam := range e.families() {
			for _, table := range []string{"nat", "filter", "mangle"} {
				save, err := e.save(n, fam+"-"+b, table)
				e.must(err)
				for _, c := range lab.DeclaredChains(save, regexp.MustCompile(`^(KUBE-|SVCPROXY-)`)) {
					if !slices.Contains(sharedChains, c) {
						e.t.Errorf("%s: %s-%s %s chain %s left after svcproxy cleanup", n.Name, fam, b, table, c)
					}
				}
			}
		}
		if b == backendOf[n.Index] && !e.hasChain(n, "iptables-"+b, "mangle", "KUBE-IPTABLES-HINT") {
			e.t.Errorf("%s: svcproxy cleanup removed kubelet's KUBE-IPTABLES-HINT", n.Name)
		}
	}
}

// sharedChains are kubelet's: its hint and canary, and KUBE-FIREWALL
// (which kube-proxy also fills, to drop martian packets to 127.0.0.1
// NodePorts); neither svcproxy cleanup nor kube-proxy --cleanup deletes them.
var sharedChains = []string{"KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY", "KUBE-FIREWALL"}

func (e *env) nodeOf(ns string) *lab.Node {
	for i := range e.lab.Nodes {
		if e.lab.Nodes[i].NS == ns {
			return &e.lab.Nodes[i]
		}
	}
	e.t.Fatalf("no node with namespace %s", ns)
	return nil
}

// ---- checks -------------------------------------------------------------------

// checkNode checks, on node n running proxy: ClusterIP TCP and UDP from the
// node's client pod, NodePort from outside, /healthz and /livez, and that
// the rules are in the node's backend only.
func (e *env) checkNode(n *lab.Node, proxy string) {
	e.t.Helper()
	want := e.backendNames()
	client := e.client(n.Index).NS
	for _, s := range []lab.ProbeSpec{
		{NS: client, Proto: "tcp", Addr: e.web.Spec.ClusterIP, Port: 80},
		{NS: client, Proto: "udp", Addr: e.web.Spec.ClusterIP, Port: 53},
		{NS: e.lab.Client.NS, Proto: "tcp", Addr: n.IP, Port: webNodePort},
		{NS: client, Proto: "tcp", Addr: e.live.Spec.ClusterIP, Port: linePort},
	} {
		s.Timeout = time.Second
		if err := reachAll(s, 30*time.Second, want...); err != nil {
			e.t.Errorf("%s under %s: %v", n.Name, proxy, err)
		}
	}
	for _, path := range []string{"healthz", "livez"} {
		code, ctype, body, err := lab.HTTPGet(e.lab.Client.NS, e.healthz(n, path))
		if err != nil || code != 200 || !strings.HasPrefix(ctype, "application/json") {
			e.t.Errorf("%s under %s: /%s: %d %q %q %v", n.Name, proxy, path, code, ctype, body, err)
		}
	}
	for _, b := range backends {
		for _, fam := range e.families() {
			has := e.hasChain(n, fam+"-"+b, "nat", "KUBE-SERVICES")
			if want := b == backendOf[n.Index]; has != want {
				e.t.Errorf("%s under %s: %s-%s nat KUBE-SERVICES exists: %v, want %v (the node's backend is %s)",
					n.Name, proxy, fam, b, has, want, backendOf[n.Index])
			}
		}
	}
}

func (e *env) healthz(n *lab.Node, path string) string {
	return fmt.Sprintf("http://%s:10256/%s", n.IP, path)
}

var backendLogRE = regexp.MustCompile(`"Starting svcproxy".*iptablesBackend="?([a-z]+)`)

// checkChosenBackend reads the backend svcproxy says it chose.
func (e *env) checkChosenBackend(n *lab.Node) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, p := range e.pods {
		if p.ds != e.svcproxyDS || p.node.Name != n.Name {
			continue
		}
		log, err := os.ReadFile(p.c.Log)
		e.must(err)
		m := backendLogRE.FindSubmatch(log)
		if m == nil {
			e.t.Errorf("%s: svcproxy's log has no \"Starting svcproxy\" line naming its backend", n.Name)
		} else if string(m[1]) != backendOf[n.Index] {
			e.t.Errorf("%s: svcproxy chose iptables backend %s, the node's is %s", n.Name, m[1], backendOf[n.Index])
		}
		return
	}
	e.t.Errorf("%s: no svcproxy pod", n.Name)
}

// dashboardMetrics are the kubeproxy_* series the kube-proxy dashboard of
// kubernetes-mixin (and Grafana's copies of it) reads: sync rate and
// latency, network programming rate and latency.
var dashboardMetrics = []string{
	"kubeproxy_sync_proxy_rules_duration_seconds",
	"kubeproxy_network_programming_duration_seconds",
}

// metricNames scrapes the proxy on n and returns its kubeproxy_* families.
func (e *env) metricNames(n *lab.Node) []string {
	m, err := lab.ScrapeMetrics(e.ctx(), n.NS, lab.MetricsURL)
	e.must(err)
	var out []string
	for name := range m {
		if strings.HasPrefix(name, "kubeproxy_") {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// checkMetrics checks that svcproxy on n serves the dashboard's series, as
// kube-proxy did, and logs which of kube-proxy's kubeproxy_* families it
// does not serve.
func (e *env) checkMetrics(n *lab.Node, kubeProxy []string) {
	got := e.metricNames(n)
	for _, name := range dashboardMetrics {
		if !slices.Contains(kubeProxy, name) {
			e.t.Errorf("%s: kube-proxy's /metrics lacked %s: the test does not exercise it", n.Name, name)
		}
		if !slices.Contains(got, name) {
			e.t.Errorf("%s: svcproxy's /metrics lacks %s (a kube-proxy dashboard reads it)", n.Name, name)
		}
	}
	var missing []string
	for _, name := range kubeProxy {
		if !slices.Contains(got, name) {
			missing = append(missing, name)
		}
	}
	e.t.Logf("%s: svcproxy serves %d kubeproxy_* families, kube-proxy served %d; kube-proxy's not served by svcproxy: %v",
		n.Name, len(got), len(kubeProxy), missing)
}

// waitNoStaleChains waits until no per-service chain in n's nat table is
// left unreferenced (svcproxy deletes kube-proxy's leftovers in batches
// over the syncs after its first).
func (e *env) waitNoStaleChains(n *lab.Node) {
	var last []string
	var nat string
	err := lab.Poll(e.ctx(), staleWithin, 500*time.Millisecond, func() error {
		var err error
		if nat, err = e.save(n, "iptables-"+backendOf[n.Index], "nat"); err != nil {
			return err
		}
		if last = lab.OrphanChains(nat); len(last) > 0 {
			return fmt.Errorf("%d unreferenced chains", len(last))
		}
		return nil
	})
	if err != nil {
		e.t.Errorf("%s: stale chains stay: %v: %v\n--- iptables-%s-save -t nat:\n%s", n.Name, err, last, backendOf[n.Index], nat)
	}
}

// checkKubeProxyLayout checks that n's nat table has kube-proxy's layout:
// one KUBE-SEP chain per Service port and endpoint.
func (e *env) checkKubeProxyLayout(n *lab.Node) {
	want := 1 // default/kubernetes: one port, one endpoint
	list, err := e.cs.DiscoveryV1().EndpointSlices(testNS).List(e.ctx(), metav1.ListOptions{})
	e.must(err)
	for _, s := range list.Items {
		want += len(s.Ports) * len(s.Endpoints)
	}
	if got := e.chains(n, "KUBE-SEP-"); len(got) != want {
		e.t.Errorf("%s: %d KUBE-SEP chains, want kube-proxy's %d (one per service port and endpoint): %v", n.Name, len(got), want, got)
	}
}

func isSubset(sub, of []string) bool {
	for _, s := range sub {
		if !slices.Contains(of, s) {
			return false
		}
	}
	return true
}

// chains lists n's IPv4 nat chains whose name starts with prefix.
func (e *env) chains(n *lab.Node, prefix string) []string {
	nat, err := e.save(n, "iptables-"+backendOf[n.Index], "nat")
	e.must(err)
	return lab.DeclaredChains(nat, regexp.MustCompile("^"+regexp.QuoteMeta(prefix)))
}

// save is `<bin>-save -t table` in n's namespace (bin: iptables-nft, ...).
func (e *env) save(n *lab.Node, bin, table string) (string, error) {
	if bin == "iptables" {
		bin = "iptables-" + backendOf[n.Index]
	}
	return lab.SaveStdout(e.ctx(), n.NS, bin+"-save", table)
}

// hasChain asks one chain, as svcproxy's detection does.
func (e *env) hasChain(n *lab.Node, bin, table, chain string) bool {
	_, err := lab.Exec(e.ctx(), n.NS, bin, "-t", table, "-S", chain, "1")
	return err == nil
}

// ---- connections -----------------------------------------------------------

// openLive opens, from every node's client pod, one long-lived connection
// through the live Service to each backend.
func (e *env) openLive(under string) []*liveConn {
	var all []*liveConn
	for _, n := range e.lab.Nodes {
		cs, err := openLive(e.client(n.Index), e.live.Spec.ClusterIP, linePort, e.backendNames()...)
		if err != nil {
			e.t.Fatalf("under %s: %v", under, err)
		}
		for _, c := range cs {
			e.t.Logf("opened under %s: %s", under, c)
		}
		all = append(all, cs...)
	}
	e.t.Cleanup(func() {
		for _, c := range all {
			c.c.Close()
		}
	})
	return all
}

func (e *env) checkLive(conns []*liveConn, when string) {
	for _, c := range conns {
		if err := c.check(); err != nil {
			e.t.Errorf("%s: %v", when, err)
		} else {
			e.t.Logf("%s: %s still answers", when, c)
		}
	}
}

// startProbers starts a stream of new connections to web's ClusterIP from
// every node's client pod.
func (e *env) startProbers(phase string) []*prober {
	var ps []*prober
	for _, n := range e.lab.Nodes {
		ps = append(ps, startProber(lab.ProbeSpec{
			NS: e.client(n.Index).NS, Proto: "tcp", Addr: e.web.Spec.ClusterIP, Port: 80, Timeout: 500 * time.Millisecond,
		}, probeEvery, phase))
	}
	e.t.Cleanup(func() { stopProbers(ps) })
	return ps
}

func setPhase(ps []*prober, phase string) {
	for _, p := range ps {
		p.setPhase(phase)
	}
}

func stopProbers(ps []*prober) {
	for _, p := range ps {
		p.Stop()
	}
}

// waitProbes waits until every prober has made minProbes probes in phase,
// so that each phase is really exercised however fast the machine is.
func (e *env) waitProbes(ps []*prober, phase string) {
	err := lab.Poll(e.ctx(), time.Minute, 50*time.Millisecond, func() error {
		for _, p := range ps {
			p.mu.Lock()
			n := p.ok[phase] + p.failed[phase]
			p.mu.Unlock()
			if n < minProbes {
				return fmt.Errorf("%s: %d probes in phase %q", p.spec.NS, n, phase)
			}
		}
		return nil
	})
	e.must(err)
}

// ---- small things --------------------------------------------------------------

// step logs a milestone with the time since setup.
func (e *env) step(format string, args ...any) {
	e.t.Helper()
	e.t.Logf("[%6.1fs] %s", time.Since(e.start).Seconds(), fmt.Sprintf(format, args...))
}

func (e *env) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	e.t.Cleanup(cancel)
	return ctx
}

func (e *env) must(err error) {
	e.t.Helper()
	if err != nil {
		e.t.Fatal(err)
	}
}
