package proxier

import (
	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	"k8s.io/klog/v2"
)

// MultiHandlers fans one set of informers out to one Handlers (a Proxier)
// per IP family, as kube-proxy's metaproxier does for dual-stack nodes:
// Services, the Node and the *Synced calls go to every family (each Proxier
// takes the cluster IPs of its own family from a Service); an EndpointSlice
// goes only to the family of its address type, and FQDN slices to none. A
// family that is not in the map (IPv6 on a single-stack node) never sees
// its slices.
type MultiHandlers map[v1.IPFamily]Handlers

var _ Handlers = MultiHandlers{}

// familyOrder makes the fan-out deterministic: IPv4 first, then IPv6.
var familyOrder = [...]v1.IPFamily{v1.IPv4Protocol, v1.IPv6Protocol}

func (m MultiHandlers) each(f func(Handlers)) {
	for _, family := range familyOrder {
		if h := m[family]; h != nil {
			f(h)
		}
	}
}

// forSlice returns the handlers of the slice's address family, or nil.
func (m MultiHandlers) forSlice(s *discovery.EndpointSlice) Handlers {
	var family v1.IPFamily
	switch s.AddressType {
	case discovery.AddressTypeIPv4:
		family = v1.IPv4Protocol
	case discovery.AddressTypeIPv6:
		family = v1.IPv6Protocol
	default:
		klog.V(4).InfoS("Ignoring EndpointSlice of unsupported address type", "endpointSlice", klog.KObj(s), "addressType", s.AddressType)
		return nil
	}
	return m[family]
}

func (m MultiHandlers) OnServiceAdd(svc *v1.Service) {
	m.each(func(h Handlers) { h.OnServiceAdd(svc) })
}

func (m MultiHandlers) OnServiceUpdate(old, cur *v1.Service) {
	m.each(func(h Handlers) { h.OnServiceUpdate(old, cur) })
}

func (m MultiHandlers) OnServiceDelete(svc *v1.Service) {
	m.each(func(h Handlers) { h.OnServiceDelete(svc) })
}

func (m MultiHandlers) OnServicesSynced() {
	m.each(func(h Handlers) { h.OnServicesSynced() })
}

func (m MultiHandlers) OnEndpointSliceAdd(s *discovery.EndpointSlice) {
	if h := m.forSlice(s); h != nil {
		h.OnEndpointSliceAdd(s)
	}
}

// OnEndpointSliceUpdate routes by the new slice's address type, which the
// API server never lets change.
func (m MultiHandlers) OnEndpointSliceUpdate(old, cur *discovery.EndpointSlice) {
	if h := m.forSlice(cur); h != nil {
		h.OnEndpointSliceUpdate(old, cur)
	}
}

func (m MultiHandlers) OnEndpointSliceDelete(s *discovery.EndpointSlice) {
	if h := m.forSlice(s); h != nil {
		h.OnEndpointSliceDelete(s)
	}
}

func (m MultiHandlers) OnEndpointSlicesSynced() {
	m.each(func(h Handlers) { h.OnEndpointSlicesSynced() })
}

func (m MultiHandlers) OnNodeChange(node *v1.Node) {
	m.each(func(h Handlers) { h.OnNodeChange(node) })
}
