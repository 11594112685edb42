package proxier

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
)

// slowHandlers counts the initial adds and takes its time over the first
// one of each kind, as a handler does on a loaded node.
type slowHandlers struct {
	delay time.Duration

	mu                    sync.Mutex
	services, slices      int
	servicesAtSync        int
	slicesAtSync          int
	servicesDone, slcDone chan struct{}
}

func (h *slowHandlers) add(n *int) {
	h.mu.Lock()
	first := *n == 0
	h.mu.Unlock()
	if first {
		time.Sleep(h.delay)
	}
	h.mu.Lock()
	*n++
	h.mu.Unlock()
}

func (h *slowHandlers) OnServiceAdd(*v1.Service)                            { h.add(&h.services) }
func (h *slowHandlers) OnServiceUpdate(_, _ *v1.Service)                    {}
func (h *slowHandlers) OnServiceDelete(*v1.Service)                         {}
func (h *slowHandlers) OnEndpointSliceAdd(*discovery.EndpointSlice)         { h.add(&h.slices) }
func (h *slowHandlers) OnEndpointSliceUpdate(_, _ *discovery.EndpointSlice) {}
func (h *slowHandlers) OnEndpointSliceDelete(*discovery.EndpointSlice)      {}
func (h *slowHandlers) OnNodeChange(*v1.Node)                               {}
func (h *slowHandlers) OnServicesSynced() {
	h.mu.Lock()
	h.servicesAtSync = h.services
	h.mu.Unlock()
	close(h.servicesDone)
}
func (h *slowHandlers) OnEndpointSlicesSynced() {
	h.mu.Lock()
	h.slicesAtSync = h.slices
	h.mu.Unlock()
	close(h.slcDone)
}

// The *Synced calls, which let the first sync write rules, come only after
// the handlers have been given every object of the initial lists. Before
// the fix they followed the informers' own HasSynced (the store is filled),
// so a first sync could program Services without their endpoints (REJECT)
// or without the Services still queued for the handler.
func TestInformersSyncedAfterInitialListHandled(t *testing.T) {
	const n = 3
	var objs []runtime.Object
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("svc-%d", i)
		objs = append(objs,
			&v1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name}},
			&discovery.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name + "-1",
				Labels: map[string]string{discovery.LabelServiceName: name}}, AddressType: discovery.AddressTypeIPv4})
	}
	cs := fake.NewClientset(objs...)
	// WaitForNamedCacheSync polls every 100 ms: a delay well above that
	// lets the unfixed code report "synced" while the first add is running.
	h := &slowHandlers{delay: 1500 * time.Millisecond, servicesDone: make(chan struct{}), slcDone: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- StartInformers(ctx, cs, "node1", 0, h) }()
	defer func() {
		cancel()
		<-done
	}()
	for what, ch := range map[string]chan struct{}{"services": h.servicesDone, "endpoint slices": h.slcDone} {
		select {
		case <-ch:
		case <-time.After(30 * time.Second):
			t.Fatalf("%s never reported synced", what)
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.servicesAtSync != n || h.slicesAtSync != n {
		t.Errorf("synced reported after %d/%d Services and %d/%d EndpointSlices were handed to the handlers; want all of them first",
			h.servicesAtSync, n, h.slicesAtSync, n)
	}
}

// The first sync starts as soon as both initial lists are in, not a
// --iptables-min-sync-period later: a sync nudged when only the Services
// were listed returned at once and made the real first sync wait out the
// runner's cooldown (on every cold start).
func TestFirstSyncNotHeldBackByMinSyncPeriod(t *testing.T) {
	const minSync = 5 * time.Second
	p, ipt := newTestProxier(t, func(c *Config) { c.MinSyncPeriod = minSync })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	p.OnServiceAdd(webService)
	p.OnServicesSynced()
	time.Sleep(200 * time.Millisecond) // the slices' list comes in a little later
	p.OnEndpointSliceAdd(webSlice)
	start := time.Now()
	p.OnEndpointSlicesSynced()
	for ipt.Restores() == 0 {
		if time.Since(start) > minSync*3/5 {
			t.Fatalf("no restore %v after both lists were in (min sync period %v)", time.Since(start).Round(time.Millisecond), minSync)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
