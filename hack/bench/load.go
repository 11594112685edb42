package main

import (
	"context"
	"fmt"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"golang.org/x/sync/errgroup"
)

// createWorkers is how many API requests the load creation keeps in flight.
const createWorkers = 8

func (b *bench) serviceName(i int) string { return fmt.Sprintf("svc-%04d", i) }

// objects returns bench Service i (b.ports TCP ports) and its EndpointSlice
// (M fake endpoints in 198.51.100.128/25, alternating between the nodes).
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
	for j := 0; j < b.cfg.M; j++ {
		ip := fmt.Sprintf("198.51.100.%d", 128+(i*b.cfg.M+j)%maxEndpoints)
		sl.Endpoints = append(sl.Endpoints, discovery.Endpoint{Addresses: []string{ip}, NodeName: ptr.To(fmt.Sprintf("node%d", 1+j%2)),
			Conditions: discovery.EndpointConditions{Ready: ptr.To(true)}})
	}
	// Fake endpoints may repeat across Services (the /25 is small) but not
	// within one: M <= maxEndpoints.
	return svc, sl
}

// createServices creates every bench Service and its EndpointSlice through
// the API, createWorkers at a time, keeping the created slices (b.slices)
// for the updates. The first error stops it; it returns after every request
// it started has returned.
func (b *bench) createServices(ctx context.Context) error {
	b.slices = make([]*discovery.EndpointSlice, b.svcs)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(createWorkers)
	for i := 0; i < b.svcs && gctx.Err() == nil; i++ {
		g.Go(func() error {
			svc, sl := b.objects(i)
			if _, err := b.cs.CoreV1().Services(kns).Create(gctx, svc, metav1.CreateOptions{}); err != nil {
				return fmt.Errorf("create service %s: %w", svc.Name, err)
			}
			created, err := b.cs.DiscoveryV1().EndpointSlices(kns).Create(gctx, sl, metav1.CreateOptions{})
			if err != nil {
				return fmt.Errorf("create slice %s: %w", sl.Name, err)
			}
			b.slices[i] = created
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return ctx.Err()
}
