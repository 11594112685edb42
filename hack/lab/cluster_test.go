package lab

import (
	"context"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"
)

// A dual-stack lab registers Nodes with both families (IPv4 first); an
// IPv4-only one with IPv4 only.
func TestRegisterNodesFamilies(t *testing.T) {
	for _, v4only := range []bool{false, true} {
		l, err := Plan(Options{Prefix: "svpq", Nodes: 2, PodsPerNode: 1, StateDir: t.TempDir(), IPv4Only: v4only})
		if err != nil {
			t.Fatal(err)
		}
		cs := fake.NewClientset()
		if err := RegisterNodes(context.Background(), cs, l); err != nil {
			t.Fatal(err)
		}
		node, err := cs.CoreV1().Nodes().Get(context.Background(), "node2", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var internal []string
		for _, a := range node.Status.Addresses {
			if a.Type == corev1.NodeInternalIP {
				internal = append(internal, a.Address)
			}
		}
		wantIPs, wantCIDRs := []string{"192.0.2.12", "2001:db8::12"}, []string{"198.51.100.64/26", "2001:db8:1:2::/64"}
		if v4only {
			wantIPs, wantCIDRs = wantIPs[:1], wantCIDRs[:1]
		}
		if !slices.Equal(internal, wantIPs) || !slices.Equal(node.Spec.PodCIDRs, wantCIDRs) || node.Spec.PodCIDR != wantCIDRs[0] {
			t.Errorf("IPv4Only %v: InternalIPs %v, podCIDRs %v (podCIDR %s); want %v, %v", v4only, internal, node.Spec.PodCIDRs, node.Spec.PodCIDR, wantIPs, wantCIDRs)
		}
	}
}

func TestEndpointSliceForFamily(t *testing.T) {
	l, err := Plan(Options{Prefix: "svpq", Nodes: 2, PodsPerNode: 1, StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Labels: map[string]string{"app": "web"}},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}
	eps := []SliceEndpoint{{Pod: l.Pod(1, 1), Ready: true}, {Pod: l.Pod(2, 1), Ready: false}}
	for _, tc := range []struct {
		family Family
		typ    discovery.AddressType
		addrs  []string
	}{
		{IPv4, discovery.AddressTypeIPv4, []string{"198.51.100.2", "198.51.100.66"}},
		{IPv6, discovery.AddressTypeIPv6, []string{"2001:db8:1:1::2", "2001:db8:1:2::2"}},
	} {
		s := EndpointSliceForFamily(svc, "e2e", "web-x", "me", tc.family, eps...)
		var addrs []string
		for _, ep := range s.Endpoints {
			addrs = append(addrs, ep.Addresses...)
		}
		if s.AddressType != tc.typ || !slices.Equal(addrs, tc.addrs) || s.Labels[discovery.LabelServiceName] != "web" || s.Labels["app"] != "web" ||
			len(s.Ports) != 1 || *s.Ports[0].Port != 8080 || *s.Endpoints[1].Conditions.Ready {
			t.Errorf("%v: slice %+v", tc.family, s)
		}
	}
	if s := EndpointSliceFor(svc, "e2e", "web-x", "me", eps...); s.AddressType != discovery.AddressTypeIPv4 {
		t.Errorf("EndpointSliceFor: address type %s, want IPv4", s.AddressType)
	}
}
