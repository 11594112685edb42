package proxier

import (
	"context"
	"fmt"
	"time"

	"github.com/svcproxy/svcproxy/proxier/model"
	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
)

// Handlers receives informer events. Proxier implements it.
type Handlers interface {
	OnServiceAdd(*v1.Service)
	OnServiceUpdate(old, cur *v1.Service)
	OnServiceDelete(*v1.Service)
	OnServicesSynced()
	OnEndpointSliceAdd(*discovery.EndpointSlice)
	OnEndpointSliceUpdate(old, cur *discovery.EndpointSlice)
	OnEndpointSliceDelete(*discovery.EndpointSlice)
	OnEndpointSlicesSynced()
	OnNodeChange(*v1.Node)
}

var _ Handlers = &Proxier{}

// proxyLabelSelector is kube-proxy's: objects handed to another proxy, and
// headless services' slices, are never even received.
const proxyLabelSelector = "!" + model.LabelServiceProxyName + ",!service.kubernetes.io/headless"

// StartInformers starts Service, EndpointSlice and (this node's) Node
// informers feeding h, and calls the *Synced handlers once each initial
// list is in. It returns when ctx ends. resync is the informers' resync
// period (kube-proxy's --config-sync-period; 0 disables).
func StartInformers(ctx context.Context, client kubernetes.Interface, nodeName string, resync time.Duration, h Handlers) error {
	factory := informers.NewSharedInformerFactoryWithOptions(client, resync,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = proxyLabelSelector }))
	nodeFactory := informers.NewSharedInformerFactoryWithOptions(client, resync,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", nodeName).String()
		}))

	svcInformer := factory.Core().V1().Services().Informer()
	sliceInformer := factory.Discovery().V1().EndpointSlices().Informer()
	nodeInformer := nodeFactory.Core().V1().Nodes().Informer()

	svcReg, err := svcInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { withType(o, h.OnServiceAdd) },
		UpdateFunc: func(old, cur any) { withTypes(old, cur, h.OnServiceUpdate) },
		DeleteFunc: func(o any) { withType(unwrapTombstone(o), h.OnServiceDelete) },
	})
	if err != nil {
		return err
	}
	sliceReg, err := sliceInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { withType(o, h.OnEndpointSliceAdd) },
		UpdateFunc: func(old, cur any) { withTypes(old, cur, h.OnEndpointSliceUpdate) },
		DeleteFunc: func(o any) { withType(unwrapTombstone(o), h.OnEndpointSliceDelete) },
	})
	if err != nil {
		return err
	}
	if _, err := nodeInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { withType(o, h.OnNodeChange) },
		UpdateFunc: func(_, cur any) { withType(cur, h.OnNodeChange) },
		DeleteFunc: func(any) { h.OnNodeChange(nil) },
	}); err != nil {
		return err
	}

	factory.Start(ctx.Done())
	nodeFactory.Start(ctx.Done())
	// The two initial lists are awaited separately: rules are written only
	// after both are in, so a half-known cluster is never programmed. "In"
	// is the handler registration's HasSynced (every object of the initial
	// list handed to h), as kube-proxy does, not the informer's (the store
	// has them; h may still be receiving them).
	go func() {
		if cache.WaitForNamedCacheSync("services", ctx.Done(), svcReg.HasSynced) {
			h.OnServicesSynced()
		}
	}()
	go func() {
		if cache.WaitForNamedCacheSync("endpoint slices", ctx.Done(), sliceReg.HasSynced) {
			h.OnEndpointSlicesSynced()
		}
	}()
	<-ctx.Done()
	factory.Shutdown()
	nodeFactory.Shutdown()
	return nil
}

func unwrapTombstone(o any) any {
	if t, ok := o.(cache.DeletedFinalStateUnknown); ok {
		return t.Obj
	}
	return o
}

// withType calls f if o has f's argument type; anything else is a bug in
// the informer wiring and is logged, never a crash.
func withType[T any](o any, f func(T)) {
	if v, ok := o.(T); ok {
		f(v)
		return
	}
	klog.ErrorS(nil, "Unexpected object type from informer", "type", fmt.Sprintf("%T", o))
}

func withTypes[T any](old, cur any, f func(T, T)) {
	o, ok1 := old.(T)
	c, ok2 := cur.(T)
	if ok1 && ok2 {
		f(o, c)
		return
	}
	klog.ErrorS(nil, "Unexpected object types from informer", "old", fmt.Sprintf("%T", old), "cur", fmt.Sprintf("%T", cur))
}
