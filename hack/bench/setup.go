package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
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
	kns      = "bench" // Kubernetes namespace of every bench object
	echoPort = 8080
)

// bench is one run: the lab, its control plane, the daemons under test and
// the load, shared by the measurements.
type bench struct {
	cfg     config
	family  lab.Family // of the bench's Services, metrics and rules read
	l       *lab.Lab
	cp      *lab.ControlPlane
	cs      kubernetes.Interface
	ds      []*daemon // variant k on node k+1
	echos   []*lab.Proc
	svcs    int // Services
	ports   int // ports per Service
	slices  []*discovery.EndpointSlice
	results *table
}

func newBench(cfg config, report *table) *bench {
	b := &bench{cfg: cfg, family: lab.IPv4, results: report}
	b.ports = (cfg.N + 99) / 100
	b.svcs = (cfg.N + b.ports - 1) / b.ports
	report.columns(variants(cfg))
	return b
}

// servicePorts is the number of bench service ports (N rounded up to whole
// Services).
func (b *bench) servicePorts() int { return b.svcs * b.ports }

// setUp builds the lab (one node per variant, two pods each), the control
// plane and the cluster objects, starts the echo backends and the daemons,
// and waits for each daemon's first sync. What it built before a failure
// is left for tearDown.
func (b *bench) setUp(ctx context.Context) error {
	if err := lab.ControlPlaneAvailable(); err != nil {
		return err
	}
	stateDir := filepath.Join(os.TempDir(), "svcproxy-lab-"+b.cfg.Prefix)
	_ = os.RemoveAll(filepath.Join(stateDir, "logs"))
	vs := variants(b.cfg)
	var err error
	b.l, err = lab.Up(ctx, lab.Options{Prefix: b.cfg.Prefix, Nodes: len(vs), PodsPerNode: 2, StateDir: stateDir, Logf: logf})
	if err != nil {
		return fmt.Errorf("lab up: %w", err)
	}
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
	for _, n := range b.l.Nodes {
		pod := b.l.Pod(n.Index, 2)
		p, err := b.l.StartEcho(pod.NS, pod.Name, echoPort)
		if err != nil {
			return err
		}
		b.echos = append(b.echos, p)
	}
	for k, v := range vs {
		n := b.l.Node(k + 1)
		d := &daemon{variant: v, node: n, argv: v.command(b.commonFlags(n))}
		b.ds = append(b.ds, d)
		if err := b.startDaemon(ctx, d, readyBound); err != nil {
			return err
		}
	}
	b.results.note("N=%d service ports (%d Services × %d ports) × M=%d endpoints; K=%d updates; %d connections; --iptables-min-sync-period=%s; %d CPUs; %s",
		b.servicePorts(), b.svcs, b.ports, b.cfg.M, b.cfg.K, b.cfg.Conns, b.cfg.MinSync, numCPU(), time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	return nil
}

// tearDown stops everything setUp started and removes the lab. run calls it
// once, after every measurement (and every goroutine one started) returned.
func (b *bench) tearDown() {
	for _, d := range b.ds {
		d.stop()
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
	}
}

// clusterObjects creates the bench namespace, the Node objects and, per
// node, the per-connection target: a Service whose only endpoint is pod 2
// of that node, so each path crosses one proxy only.
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
	for _, n := range b.l.Nodes {
		pod := b.l.Pod(n.Index, 2)
		name := b.echoName(n.Index)
		if _, err := b.cs.CoreV1().Services(kns).Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "tcp", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(echoPort)}}},
		}, metav1.CreateOptions{}); err != nil {
			return err
		}
		if _, err := b.cs.DiscoveryV1().EndpointSlices(kns).Create(ctx, &discovery.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Name: name + "-1", Labels: map[string]string{discovery.LabelServiceName: name}},
			AddressType: discovery.AddressTypeIPv4,
			Endpoints: []discovery.Endpoint{{Addresses: []string{pod.IP}, NodeName: ptr.To(n.Name),
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
