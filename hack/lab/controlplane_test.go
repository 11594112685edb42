package lab_test

import (
	"context"
	"net"
	"os"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/svcproxy/svcproxy/hack/lab"
)

// TestControlPlane starts etcd + kube-apiserver in the lab and exercises them
// through client-go. Needs SVCPROXY_E2E=1 and hack/build-kube-apiserver.sh.
func TestControlPlane(t *testing.T) {
	if os.Getenv("SVCPROXY_E2E") != "1" {
		t.Skip("set SVCPROXY_E2E=1 to run the control-plane e2e test")
	}
	if err := lab.ControlPlaneAvailable(); err != nil {
		t.Skipf("control plane not available: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	l := upLab(t, "svpe", lab.Options{Nodes: 1, PodsPerNode: -1})
	cp, err := l.StartControlPlane(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cp.Stop)

	cs, err := kubernetes.NewForConfig(cp.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	_, svcNet, _ := net.ParseCIDR(lab.ServiceCIDR)

	kube, err := cs.CoreV1().Services("default").Get(ctx, "kubernetes", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get kubernetes service: %v", err)
	}
	if kube.Spec.ClusterIP != lab.KubernetesSvcIP {
		t.Errorf("kubernetes ClusterIP = %s, want %s", kube.Spec.ClusterIP, lab.KubernetesSvcIP)
	}

	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "echo", Namespace: "default"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "echo"},
			Ports: []corev1.ServicePort{
				{Name: "tcp", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(8080)},
				{Name: "udp", Protocol: corev1.ProtocolUDP, Port: 80, TargetPort: intstr.FromInt32(8080)},
			},
		},
	}
	created, err := cs.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create service: %v", err)
	}
	ip := net.ParseIP(created.Spec.ClusterIP)
	if ip == nil || !svcNet.Contains(ip) {
		t.Fatalf("ClusterIP %q not in %s", created.Spec.ClusterIP, lab.ServiceCIDR)
	}
	t.Logf("service echo got ClusterIP %s", ip)
	if got := created.Spec.IPFamilies; len(got) != 1 || got[0] != corev1.IPv4Protocol {
		t.Errorf("a Service without ipFamilies got families %v, want [IPv4] (IPv4 is the primary range)", got)
	}

	// The API server is dual-stack: IPv6 and dual-stack Services get
	// addresses from the IPv6 range.
	_, svcNet6, _ := net.ParseCIDR(lab.ServiceCIDR6)
	for _, c := range []struct {
		name     string
		policy   corev1.IPFamilyPolicy
		families []corev1.IPFamily
	}{
		{"echo6", corev1.IPFamilyPolicySingleStack, []corev1.IPFamily{corev1.IPv6Protocol}},
		{"echo-dual", corev1.IPFamilyPolicyRequireDualStack, nil},
	} {
		s := svc.DeepCopy()
		s.Name = c.name
		s.Spec.IPFamilyPolicy = &c.policy
		s.Spec.IPFamilies = c.families
		got, err := cs.CoreV1().Services("default").Create(ctx, s, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create service %s: %v", c.name, err)
		}
		var v6 []string
		for _, a := range got.Spec.ClusterIPs {
			if ip := net.ParseIP(a); ip != nil && ip.To4() == nil {
				v6 = append(v6, a)
				if !svcNet6.Contains(ip) {
					t.Errorf("%s: IPv6 cluster IP %s not in %s", c.name, a, lab.ServiceCIDR6)
				}
			}
		}
		if len(v6) != 1 {
			t.Errorf("%s: cluster IPs %v, want one IPv6 address", c.name, got.Spec.ClusterIPs)
		}
		t.Logf("service %s got cluster IPs %v", c.name, got.Spec.ClusterIPs)
	}

	list := func(stage string) {
		t.Helper()
		svcs, err := cs.CoreV1().Services("default").List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatalf("%s: list services: %v", stage, err)
		}
		found := false
		for _, s := range svcs.Items {
			if s.Name == "echo" && s.Spec.ClusterIP == created.Spec.ClusterIP {
				found = true
			}
		}
		if !found {
			t.Fatalf("%s: service echo (%s) not listed: %d services", stage, created.Spec.ClusterIP, len(svcs.Items))
		}
	}
	list("before restart")

	// The admin kubeconfig works from a node namespace, as svcproxy will use it.
	kcfg, err := clientcmd.BuildConfigFromFlags("", cp.Kubeconfig())
	if err != nil {
		t.Fatal(err)
	}
	kcfg.Dial = lab.DialContextInNetns(l.Node(1).NS)
	nodeCS, err := kubernetes.NewForConfig(kcfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nodeCS.CoreV1().Services("default").Get(ctx, "echo", metav1.GetOptions{}); err != nil {
		t.Fatalf("kubeconfig from node namespace: %v", err)
	}
	// The apiserver publishes an EndpointSlice for the kubernetes service.
	slices, err := cs.DiscoveryV1().EndpointSlices("default").List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=kubernetes"})
	if err != nil {
		t.Fatalf("list endpointslices: %v", err)
	}
	t.Logf("kubernetes service has %d EndpointSlice(s)", len(slices.Items))

	_, apiPid := cp.Running()
	start := time.Now()
	if err := cp.RestartAPIServer(ctx); err != nil {
		t.Fatalf("restart apiserver: %v", err)
	}
	_, newPid := cp.Running()
	if newPid == 0 || newPid == apiPid {
		t.Fatalf("apiserver pid before %d after %d: not restarted", apiPid, newPid)
	}
	t.Logf("apiserver restarted in %s", time.Since(start).Round(time.Millisecond))
	list("after restart")
}
