package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"golang.org/x/sync/errgroup"

	"github.com/svcproxy/svcproxy/hack/lab"
)

const (
	kns       = "bignode" // Kubernetes namespace of every object
	managedBy = "bignode"
	echoPort  = 8080
	svcPort   = 80
	probeName = "probe"
	fakeNodes = 200 // fake nodeNames the endpoints are spread over
)

// runner is one run: the lab, its control plane and what the cases share.
type runner struct {
	cfg     config
	l       *lab.Lab
	cp      *lab.ControlPlane
	cs      kubernetes.Interface
	probe   *corev1.Service
	probeIP string
	current *lab.Pod // the probe Service's endpoint now
	// lastTarget is, per node index, the endpoint its last case moved the
	// probe Service to (what its table serves, if that case's sync ran).
	lastTarget map[int]*lab.Pod
	procs      []*lab.Proc // every process started (stopped at tear-down)
	echos      []*lab.Proc
	results    []result
	notes      []string
	kernel     string
	started    time.Time
	created    time.Duration
	stateDir   string

	loadBefore, loadAfter string
}

// setUp builds the lab (3 nodes × 3 pods: pod 1 is the client, pods 2 and 3
// run IPv6 echo servers), the control plane, the Nodes, the probe Service
// and the N Services.
func (r *runner) setUp(ctx context.Context) error {
	if err := lab.ControlPlaneAvailable(); err != nil {
		return err
	}
	prefix, err := lab.RunPrefix(r.cfg.Stem)
	if err != nil {
		return err
	}
	r.stateDir = filepath.Join(os.TempDir(), "svcproxy-lab-"+prefix)
	r.l, err = lab.Up(ctx, lab.Options{Prefix: prefix, Nodes: 3, PodsPerNode: 3, StateDir: r.stateDir, Logf: logf})
	if err != nil {
		return fmt.Errorf("lab up: %w", err)
	}
	if !r.l.IPv6 {
		return fmt.Errorf("the lab has no IPv6 (N Services need the IPv6 service range)")
	}
	if out, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		r.kernel = strings.TrimSpace(string(out))
	}
	if r.cp, err = r.l.StartControlPlane(ctx); err != nil {
		return fmt.Errorf("control plane: %w", err)
	}
	rc := r.cp.RESTConfig()
	rc.QPS, rc.Burst = 1000, 2000
	if r.cs, err = kubernetes.NewForConfig(rc); err != nil {
		return err
	}
	if err := lab.RegisterNodes(ctx, r.cs, r.l); err != nil {
		return err
	}
	if _, err := r.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: kns}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	for _, n := range r.l.Nodes {
		for _, j := range []int{2, 3} {
			pod := r.l.Pod(n.Index, j)
			p, err := r.l.StartEchoArgs(pod.NS, pod.Name, echoPort, "--addr", "::", "--udp=false")
			if err != nil {
				return err
			}
			r.echos = append(r.echos, p)
		}
	}
	for _, n := range r.l.Nodes {
		for _, chain := range []string{"KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY"} {
			_, err := r.l.ExecContext(ctx, n.NS, "ip6tables", "-t", "mangle", "-S", chain)
			r.notef("lab %s before any proxy: ip6tables mangle %s present: %v", n.Name, chain, err == nil)
		}
	}
	if err := r.createProbe(ctx); err != nil {
		return err
	}
	t0 := time.Now()
	if err := r.createServices(ctx); err != nil {
		return err
	}
	r.created = time.Since(t0)
	logf("created %d Services + %d EndpointSlices in %s (load %s)", r.cfg.N, r.cfg.N, r.created.Round(time.Millisecond), loadavg())
	return nil
}

// createProbe creates the probe Service (single-stack IPv6, port 80 → 8080)
// with node2's pod 2 as its endpoint.
func (r *runner) createProbe(ctx context.Context) error {
	svc := ipv6Service(probeName)
	created, err := r.cs.CoreV1().Services(kns).Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create probe service: %w", err)
	}
	r.probe = created
	r.probeIP = created.Spec.ClusterIP
	r.current = r.l.Pod(2, 2)
	r.lastTarget = map[int]*lab.Pod{}
	sl := lab.EndpointSliceForFamily(created, kns, probeName+"-1", managedBy, lab.IPv6, lab.SliceEndpoint{Pod: r.current, Ready: true})
	if _, err := r.cs.DiscoveryV1().EndpointSlices(kns).Create(ctx, sl, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create probe slice: %w", err)
	}
	logf("probe Service %s/%s at [%s]:%d → %s", kns, probeName, r.probeIP, svcPort, r.current.Name)
	return nil
}

// moveProbe points the probe Service's EndpointSlice at pod.
func (r *runner) moveProbe(ctx context.Context, pod *lab.Pod) error {
	cur, err := r.cs.DiscoveryV1().EndpointSlices(kns).Get(ctx, probeName+"-1", metav1.GetOptions{})
	if err != nil {
		return err
	}
	sl := lab.EndpointSliceForFamily(r.probe, kns, probeName+"-1", managedBy, lab.IPv6, lab.SliceEndpoint{Pod: pod, Ready: true})
	sl.ResourceVersion = cur.ResourceVersion
	if _, err := r.cs.DiscoveryV1().EndpointSlices(kns).Update(ctx, sl, metav1.UpdateOptions{}); err != nil {
		return err
	}
	r.current = pod
	return nil
}

func ipv6Service(name string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.ServiceSpec{
			Type:           corev1.ServiceTypeClusterIP,
			IPFamilies:     []corev1.IPFamily{corev1.IPv6Protocol},
			IPFamilyPolicy: ptr.To(corev1.IPFamilyPolicySingleStack),
			Ports:          []corev1.ServicePort{{Name: "tcp", Protocol: corev1.ProtocolTCP, Port: svcPort, TargetPort: intstr.FromInt32(echoPort)}},
		},
	}
}

// fakeEndpoint is endpoint k of Service i: an address in 2001:db8:1:ff::/64
// (inside the pod network, on no node's /64; nothing answers there) whose
// low 32 bits are unique over the run.
func fakeEndpoint(i, k, m int) string {
	idx := uint32(i*m + k + 1)
	var b [16]byte
	copy(b[:], netip.MustParseAddr("2001:db8:1:ff::").AsSlice())
	b[12], b[13], b[14], b[15] = byte(idx>>24), byte(idx>>16), byte(idx>>8), byte(idx)
	return netip.AddrFrom16(b).String()
}

// objects returns Service i and its EndpointSlice (M fake endpoints, ready,
// nodeNames spread over fakeNodes fake nodes).
func (r *runner) objects(i int) (*corev1.Service, *discovery.EndpointSlice) {
	name := fmt.Sprintf("s%05d", i)
	svc := ipv6Service(name)
	sl := &discovery.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: name + "-1", Labels: map[string]string{
			discovery.LabelServiceName: name, discovery.LabelManagedBy: managedBy}},
		AddressType: discovery.AddressTypeIPv6,
		Ports:       []discovery.EndpointPort{{Name: ptr.To("tcp"), Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To(int32(echoPort))}},
	}
	for k := 0; k < r.cfg.M; k++ {
		sl.Endpoints = append(sl.Endpoints, discovery.Endpoint{
			Addresses:  []string{fakeEndpoint(i, k, r.cfg.M)},
			NodeName:   ptr.To(fmt.Sprintf("fake-node-%03d", (i*r.cfg.M+k)%fakeNodes)),
			Conditions: discovery.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true), Terminating: ptr.To(false)},
		})
	}
	return svc, sl
}

// createServices creates the N Services and their slices, cfg.Workers at a
// time; the first error stops it, and it returns after every request it
// started has returned.
func (r *runner) createServices(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(r.cfg.Workers)
	var done atomic.Int64
	t0 := time.Now()
	for i := 0; i < r.cfg.N && gctx.Err() == nil; i++ {
		g.Go(func() error {
			svc, sl := r.objects(i)
			if _, err := r.cs.CoreV1().Services(kns).Create(gctx, svc, metav1.CreateOptions{}); err != nil {
				return fmt.Errorf("create service %s: %w", svc.Name, err)
			}
			if _, err := r.cs.DiscoveryV1().EndpointSlices(kns).Create(gctx, sl, metav1.CreateOptions{}); err != nil {
				return fmt.Errorf("create slice %s: %w", sl.Name, err)
			}
			if n := done.Add(1); n%1000 == 0 {
				logf("created %d/%d Services (%s)", n, r.cfg.N, time.Since(t0).Round(time.Second))
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return ctx.Err()
}

// tearDown stops every process and removes the lab; run calls it once.
func (r *runner) tearDown() {
	for _, p := range r.procs {
		_ = p.Stop()
	}
	for _, p := range r.echos {
		_ = p.Stop()
	}
	if r.cp != nil {
		r.cp.Stop()
	}
	if r.l != nil {
		if err := r.l.Down(); err != nil {
			logf("lab down: %v", err)
		}
		left, _ := lab.ListNamespaces(r.l.Prefix)
		logf("lab %s down; its namespaces left: %d", r.l.Prefix, len(left))
	}
}

func (r *runner) notef(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	logf("%s", s)
	r.notes = append(r.notes, s)
}

// loadavg is /proc/loadavg's first three fields.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
