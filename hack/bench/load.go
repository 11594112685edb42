package main

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	corev1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"golang.org/x/sync/errgroup"
)

// createWorkers is how many API requests the load creation keeps in flight.
const createWorkers = 8

// The bench Services' one port and their endpoints' port.
const (
	portName   = "p0"
	svcPort    = 1000
	targetPort = 10000
)

// fakeNodes is how many (nonexistent) nodes the fake endpoints are spread
// over: none of them is a daemon's node, so svcproxy's compact layout DNATs
// them inline (no KUBE-SEP chain), as it would for most endpoints of a big
// cluster.
const fakeNodes = 50

func (b *bench) serviceName(i int) string { return fmt.Sprintf("svc-%05d", i) }

// endpointAddr is fake endpoint j of Service i: 2001:db8:9::<i>:<j+1>
// (no pod lives there; the rules are programmed but never used). Update u
// moves an endpoint to 2001:db8:9:1::<u>:1.
func endpointAddr(i, j int) string {
	return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 9, 12: byte(i >> 8), 13: byte(i), 14: byte((j + 1) >> 8), 15: byte(j + 1)}).String()
}

func updateAddr(u int) string {
	return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 9, 0, 1, 12: byte(u >> 8), 13: byte(u), 15: 1}).String()
}

// endpoints are Service i's endpoint addresses (after the updates made so
// far: b.slices when set).
func (b *bench) endpoints(i int) []string {
	if b.slices != nil && b.slices[i] != nil {
		var out []string
		for _, e := range b.slices[i].Endpoints {
			out = append(out, e.Addresses...)
		}
		return out
	}
	var out []string
	for j := 0; j < b.cfg.M; j++ {
		out = append(out, endpointAddr(i, j))
	}
	return out
}

// singleStackIPv6 is the bench Services' family: the lab's IPv4 service
// range has ~120 addresses, its IPv6 range (2001:db8:5::/108) 2^20.
func singleStackIPv6(spec *corev1.ServiceSpec) {
	spec.IPFamilies = []corev1.IPFamily{corev1.IPv6Protocol}
	spec.IPFamilyPolicy = ptr.To(corev1.IPFamilyPolicySingleStack)
}

// objects returns bench Service i (one TCP port, IPv6) and its
// EndpointSlice (M fake endpoints on fake nodes).
func (b *bench) objects(i int) (*corev1.Service, *discovery.EndpointSlice) {
	name := b.serviceName(i)
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.ServiceSpec{
		Ports: []corev1.ServicePort{{Name: portName, Protocol: corev1.ProtocolTCP, Port: svcPort, TargetPort: intstr.FromInt32(targetPort)}},
	}}
	singleStackIPv6(&svc.Spec)
	sl := &discovery.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name + "-1", Labels: map[string]string{discovery.LabelServiceName: name}},
		AddressType: discovery.AddressTypeIPv6,
		Ports:       []discovery.EndpointPort{{Name: ptr.To(portName), Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To(int32(targetPort))}},
	}
	for j := 0; j < b.cfg.M; j++ {
		sl.Endpoints = append(sl.Endpoints, discovery.Endpoint{Addresses: []string{endpointAddr(i, j)},
			NodeName:   ptr.To(fmt.Sprintf("fake-node-%02d", (i*b.cfg.M+j)%fakeNodes)),
			Conditions: discovery.EndpointConditions{Ready: ptr.To(true)}})
	}
	return svc, sl
}

// createServices creates every bench Service and its EndpointSlice through
// the API, createWorkers at a time, keeping the created slices (b.slices)
// for the updates. The first error stops it; it returns after every request
// it started has returned.
func (b *bench) createServices(ctx context.Context) error {
	t0 := time.Now()
	slices := make([]*discovery.EndpointSlice, b.cfg.N)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(createWorkers)
	for i := 0; i < b.cfg.N && gctx.Err() == nil; i++ {
		g.Go(func() error {
			svc, sl := b.objects(i)
			if _, err := b.cs.CoreV1().Services(kns).Create(gctx, svc, metav1.CreateOptions{}); err != nil {
				return fmt.Errorf("create service %s: %w", svc.Name, err)
			}
			created, err := b.cs.DiscoveryV1().EndpointSlices(kns).Create(gctx, sl, metav1.CreateOptions{})
			if err != nil {
				return fmt.Errorf("create slice %s: %w", sl.Name, err)
			}
			slices[i] = created
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	b.slices = slices
	b.created = time.Since(t0)
	logf("created %d Services + %d EndpointSlices in %s", b.cfg.N, b.cfg.N, b.created.Round(time.Millisecond))
	return nil
}
