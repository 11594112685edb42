package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/svcproxy/svcproxy/hack/lab"
	"github.com/svcproxy/svcproxy/proxier/model"
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
	slices  []*discovery.EndpointSlice // bench Service i's slice, as last written
	created time.Duration              // creating the N Services and slices
	results *table
	res     results // what the targets are judged on
}

func newBench(cfg config, report *table) *bench {
	vs := variants(cfg)
	b := &bench{cfg: cfg, family: lab.IPv6, results: report, res: newResults(vs)}
	report.columns(vs)
	return b
}

// setUp builds the lab (one node per variant, two pods each), the control
// plane and the cluster objects (the per-connection targets, then the N
// bench Services, no daemon running yet), and starts the echo backends.
// The daemons start one by one in the cold-start measurement. What it
// built before a failure is left for tearDown.
func (b *bench) setUp(ctx context.Context) error {
	if err := lab.ControlPlaneAvailable(); err != nil {
		return err
	}
	b.results.note("machine: %d CPUs, kernel %s; load average before the run: %s (other jobs share this machine)", numCPU(), kernelRelease(), loadAvg())
	stateDir := filepath.Join(os.TempDir(), "svcproxy-lab-"+b.cfg.Prefix)
	_ = os.RemoveAll(filepath.Join(stateDir, "logs"))
	vs := variants(b.cfg)
	var err error
	b.l, err = lab.Up(ctx, lab.Options{Prefix: b.cfg.Prefix, Nodes: len(vs), PodsPerNode: 2, StateDir: stateDir, Logf: logf})
	if err != nil {
		return fmt.Errorf("lab up: %w", err)
	}
	if !b.l.IPv6 {
		return fmt.Errorf("the bench needs IPv6 (its Services are single-stack IPv6)")
	}
	if b.cp, err = b.l.StartControlPlane(ctx); err != nil {
		return fmt.Errorf("control plane: %w", err)
	}
	cfg := b.cp.RESTConfig()
	cfg.QPS, cfg.Burst = 500, 1000
	if b.cs, err = kubernetes.NewForConfig(cfg); err != nil {
		return err
	}
	for k, v := range vs {
		n := b.l.Node(k + 1)
		b.ds = append(b.ds, &daemon{variant: v, node: n, argv: v.command(b.commonFlags(n))})
	}
	if err := b.clusterObjects(ctx); err != nil {
		return err
	}
	for _, n := range b.l.Nodes {
		pod := b.l.Pod(n.Index, 2)
		p, err := b.l.StartEchoArgs(pod.NS, pod.Name, echoPort, "--addr", "::")
		if err != nil {
			return err
		}
		b.echos = append(b.echos, p)
	}
	if err := b.createServices(ctx); err != nil {
		return err
	}
	b.results.note("N=%d Services (single-stack IPv6, one TCP port each) × M=%d endpoints on %d fake nodes; K=%d one-endpoint changes; %d connections per target; --iptables-min-sync-period=%s; cap per cold start %s",
		b.cfg.N, b.cfg.M, fakeNodes, b.cfg.K, b.cfg.Conns, b.cfg.MinSync, b.cfg.Cap)
	b.results.note("created through the API in %s before any daemon started; started %s", b.created.Round(time.Millisecond), time.Now().UTC().Format("2006-01-02 15:04 UTC"))
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

// echoTarget is a per-connection target: a Service whose only endpoint is
// pod 2 of node (a real echo backend on the node of the daemon measured,
// so each path crosses one proxy only), placed first or last in dispatch
// order. svcproxy orders KUBE-SERVICES (kube-proxy layout, and compact
// below 257 ports) by namespace/name:port, and the compact layout's
// dispatch buckets by the low 16 bits of the cluster IP (bucket 0 first)
// and within a bucket by their KUBE-SVC chain's name, descending: the
// "first" target, "a-first-<node>-<k>" at ::<node>:0, has a chain hash
// beginning "ZZZ" and the "last", "zz-last-<node>-<k>" at ::<node>:ffff,
// one beginning "222" (base32's first and last in ASCII order), k found by
// search. kube-proxy's iptables mode writes KUBE-SERVICES in Go map order
// (the positions are measured and printed); its nftables mode looks
// cluster IPs up in a verdict map.
type echoTarget struct {
	which string // "first" or "last"
	name  string
	ip    string
}

func (b *bench) echoTargets(node int) []echoTarget {
	return []echoTarget{
		{"first", extremeName(fmt.Sprintf("a-first-%d", node), "ZZZ"), fmt.Sprintf("2001:db8:5::%x:0", node)},
		{"last", extremeName(fmt.Sprintf("zz-last-%d", node), "222"), fmt.Sprintf("2001:db8:5::%x:ffff", node)},
	}
}

// extremeName is base-k, for the first k whose port "tcp" chain hash begins
// with hashPrefix (one name in 32,768 does: the search is bounded at a
// million, far beyond that).
func extremeName(base, hashPrefix string) string {
	for k := range 1 << 20 {
		name := fmt.Sprintf("%s-%d", base, k)
		pn := model.ServicePortName{NamespacedName: types.NamespacedName{Namespace: kns, Name: name}, Port: "tcp", Protocol: corev1.ProtocolTCP}
		if strings.HasPrefix(pn.Hash(), hashPrefix) {
			return name
		}
	}
	return base
}

// clusterObjects creates the bench namespace, the Node objects and, per
// node, the per-connection targets.
func (b *bench) clusterObjects(ctx context.Context) error {
	if _, err := b.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: kns}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	for _, n := range b.l.Nodes {
		node := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: n.Name, Labels: map[string]string{"kubernetes.io/hostname": n.Name}},
			Spec:       corev1.NodeSpec{PodCIDR: n.PodCIDR, PodCIDRs: []string{n.PodCIDR, n.PodCIDR6}},
			Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
				{Type: corev1.NodeInternalIP, Address: n.IP}, {Type: corev1.NodeInternalIP, Address: n.IP6}, {Type: corev1.NodeHostName, Address: n.Name},
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
		for _, e := range b.echoTargets(n.Index) {
			svc := &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Name: e.name},
				Spec: corev1.ServiceSpec{ClusterIP: e.ip, ClusterIPs: []string{e.ip},
					Ports: []corev1.ServicePort{{Name: "tcp", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(echoPort)}}},
			}
			singleStackIPv6(&svc.Spec)
			if _, err := b.cs.CoreV1().Services(kns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
				return err
			}
			if _, err := b.cs.DiscoveryV1().EndpointSlices(kns).Create(ctx, &discovery.EndpointSlice{
				ObjectMeta:  metav1.ObjectMeta{Name: e.name + "-1", Labels: map[string]string{discovery.LabelServiceName: e.name}},
				AddressType: discovery.AddressTypeIPv6,
				Endpoints: []discovery.Endpoint{{Addresses: []string{pod.IP6}, NodeName: ptr.To(n.Name),
					Conditions: discovery.EndpointConditions{Ready: ptr.To(true)}}},
				Ports: []discovery.EndpointPort{{Name: ptr.To("tcp"), Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To(int32(echoPort))}},
			}, metav1.CreateOptions{}); err != nil {
				return err
			}
		}
	}
	return nil
}
