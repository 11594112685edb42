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

// slowHandlers counts the objects handed to it, slowly, and what it had
// when each *Synced came.
type slowHandlers struct {
	mu                      sync.Mutex
	services, slices        int
	atSvcSynced, atSlSynced int
	svcSynced, slSynced     chan struct{}
}

func (h *slowHandlers) OnServiceAdd(*v1.Service) {
	time.Sleep(time.Millisecond)
	h.mu.Lock()
	h.services++
	h.mu.Unlock()
}
func (h *slowHandlers) OnServiceUpdate(_, _ *v1.Service) {}
func (h *slowHandlers) OnServiceDelete(*v1.Service)      {}
func (h *slowHandlers) OnServicesSynced() {
	h.mu.Lock()
	h.atSvcSynced = h.services
	h.mu.Unlock()
	close(h.svcSynced)
}
func (h *slowHandlers) OnEndpointSliceAdd(*discovery.EndpointSlice) {
	time.Sleep(time.Millisecond)
	h.mu.Lock()
	h.slices++
	h.mu.Unlock()
}
func (h *slowHandlers) OnEndpointSliceUpdate(_, _ *discovery.EndpointSlice) {}
func (h *slowHandlers) OnEndpointSliceDelete(*discovery.EndpointSlice)      {}
func (h *slowHandlers) OnEndpointSlicesSynced() {
	h.mu.Lock()
	h.atSlSynced = h.slices
	h.mu.Unlock()
	close(h.slSynced)
}
func (h *slowHandlers) OnNodeChange(*v1.Node) {}

// The *Synced handlers come only after every object of the initial lists
// has been handed over: the informer's store is complete long before a slow
// handler has seen it all, and a first sync then would program a
// half-known cluster (found by hack/bignode: a first sync at 10,000
// Services with 7,337 of 120,138 nat rules).
func TestSyncedComesAfterTheWholeInitialList(t *testing.T) {
	const n = 300
	var objs []runtime.Object
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("s%03d", i)
		objs = append(objs,
			&v1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name}},
			&discovery.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name + "-1",
				Labels: map[string]string{discovery.LabelServiceName: name}}, AddressType: discovery.AddressTypeIPv4})
	}
	client := fake.NewSimpleClientset(objs...)
	h := &slowHandlers{svcSynced: make(chan struct{}), slSynced: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- StartInformers(ctx, client, "node1", 0, h) }()
	defer func() {
		cancel()
		<-done
	}()
	for _, c := range []chan struct{}{h.svcSynced, h.slSynced} {
		select {
		case <-c:
		case <-time.After(30 * time.Second):
			t.Fatal("no *Synced within 30s")
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.atSvcSynced != n || h.atSlSynced != n {
		t.Fatalf("at OnServicesSynced the handler had %d of %d Services, at OnEndpointSlicesSynced %d of %d slices", h.atSvcSynced, n, h.atSlSynced, n)
	}
}
