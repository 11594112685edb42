package model

import (
	"errors"
	"reflect"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
)

// ChangeTracker records Service and EndpointSlice changes from informer
// handlers and hands them to the sync loop. Handlers only record: they never
// convert whole maps or touch the kernel. An update that changes nothing the
// proxy uses is dropped, so it neither nudges a sync nor marks a service's
// chains as changed.
type ChangeTracker struct {
	family v1.IPFamily

	mu       sync.Mutex
	services map[types.NamespacedName]*v1.Service
	slices   map[types.NamespacedName]map[string]*discovery.EndpointSlice
	dirty    map[types.NamespacedName]bool
	// queuedAt is when the oldest unsynced change arrived (zero when none).
	queuedAt time.Time
	// triggers are EndpointSlice last-change-trigger times, for the network
	// programming latency metric.
	triggers []time.Time
	counts   ChangeCounts
	// pending counts changes since the last Update, for the *_pending metrics.
	pending ChangeCounts
}

// ChangeCounts are totals since start, for metrics.
type ChangeCounts struct{ ServiceChanges, EndpointChanges int }

// NewChangeTracker tracks objects for one IP family.
func NewChangeTracker(family v1.IPFamily) *ChangeTracker {
	return &ChangeTracker{
		family:   family,
		services: map[types.NamespacedName]*v1.Service{},
		slices:   map[types.NamespacedName]map[string]*discovery.EndpointSlice{},
		dirty:    map[types.NamespacedName]bool{},
	}
}

// ServiceChanged records the new state of a Service (nil when deleted) and
// reports whether anything the proxy uses changed.
func (t *ChangeTracker) ServiceChanged(key types.NamespacedName, svc *v1.Service, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	old := t.services[key]
	if svc == nil {
		delete(t.services, key)
	} else {
		t.services[key] = svc
	}
	if old != nil && svc != nil && reflect.DeepEqual(serviceRelevant(old), serviceRelevant(svc)) {
		return false
	}
	if old == nil && svc == nil {
		return false
	}
	t.counts.ServiceChanges++
	t.pending.ServiceChanges++
	t.markDirty(key, now)
	return true
}

// EndpointSliceChanged records the new state of a slice (nil when deleted)
// and reports whether anything the proxy uses changed.
func (t *ChangeTracker) EndpointSliceChanged(slice *discovery.EndpointSlice, deleted bool, now time.Time) bool {
	key, ok := ServiceKey(slice)
	if !ok {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	bySlice := t.slices[key]
	old := bySlice[slice.Name]
	if deleted {
		if old == nil {
			return false
		}
		delete(bySlice, slice.Name)
		if len(bySlice) == 0 {
			delete(t.slices, key)
		}
	} else {
		if bySlice == nil {
			bySlice = map[string]*discovery.EndpointSlice{}
			t.slices[key] = bySlice
		}
		bySlice[slice.Name] = slice
		if old != nil && reflect.DeepEqual(sliceRelevant(old), sliceRelevant(slice)) {
			return false
		}
	}
	if ts, ok := slice.Annotations[v1.EndpointsLastChangeTriggerTime]; ok && !deleted {
		if when, err := time.Parse(time.RFC3339Nano, ts); err == nil {
			t.triggers = append(t.triggers, when)
		}
	}
	t.counts.EndpointChanges++
	t.pending.EndpointChanges++
	t.markDirty(key, now)
	return true
}

func (t *ChangeTracker) markDirty(key types.NamespacedName, now time.Time) {
	t.dirty[key] = true
	if t.queuedAt.IsZero() {
		t.queuedAt = now
	}
}

// Pending reports how many services have unsynced changes and since when.
func (t *ChangeTracker) Pending() (services int, since time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.dirty), t.queuedAt
}

// Counts returns change totals since start, and the changes not yet taken
// by Update.
func (t *ChangeTracker) Counts() (total, pending ChangeCounts) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.counts, t.pending
}

// Update brings snap up to date with every change recorded since the last
// call and returns the services whose rules changed, the trigger times of
// the endpoint changes, and conversion problems (objects or fields that
// cannot be programmed). Services whose net change is nothing (changed, then
// changed back) are not reported as changed.
func (t *ChangeTracker) Update(snap *Snapshot) (changed map[types.NamespacedName]bool, triggers []time.Time, problems error) {
	t.mu.Lock()
	dirty := t.dirty
	t.dirty = map[types.NamespacedName]bool{}
	t.queuedAt = time.Time{}
	t.pending = ChangeCounts{}
	triggers, t.triggers = t.triggers, nil
	services := make(map[types.NamespacedName]*v1.Service, len(dirty))
	slicesBySvc := make(map[types.NamespacedName][]*discovery.EndpointSlice, len(dirty))
	for key := range dirty {
		services[key] = t.services[key]
		for _, s := range t.slices[key] {
			slicesBySvc[key] = append(slicesBySvc[key], s)
		}
	}
	t.mu.Unlock()

	changed = map[types.NamespacedName]bool{}
	var errs []error
	for key := range dirty {
		ports, eps, err := convertService(services[key], slicesBySvc[key], t.family)
		if err != nil {
			errs = append(errs, err)
		}
		if replaceService(snap, key, ports, eps) {
			changed[key] = true
		}
	}
	return changed, triggers, errors.Join(errs...)
}

func convertService(svc *v1.Service, slices []*discovery.EndpointSlice, family v1.IPFamily) ([]*ServicePort, map[ServicePortName][]*Endpoint, error) {
	var errs []error
	var ports []*ServicePort
	if svc != nil {
		var err error
		ports, err = ServicePortsFromService(svc, family)
		errs = append(errs, err)
	}
	eps, err := EndpointsFromSlices(slices, family)
	errs = append(errs, err)
	return ports, eps, errors.Join(errs...)
}

// replaceService swaps the snapshot's entries for one Service and reports
// whether they differ from what was there.
func replaceService(snap *Snapshot, key types.NamespacedName, ports []*ServicePort, eps map[ServicePortName][]*Endpoint) bool {
	oldPorts := map[ServicePortName]*ServicePort{}
	oldEps := map[ServicePortName][]*Endpoint{}
	for _, name := range snap.PortsOf(key) {
		if sp, ok := snap.Services[name]; ok {
			oldPorts[name] = sp
			delete(snap.Services, name)
		}
		if list, ok := snap.Endpoints[name]; ok {
			oldEps[name] = list
			delete(snap.Endpoints, name)
		}
	}
	newPorts := map[ServicePortName]*ServicePort{}
	var keys []ServicePortName
	for _, sp := range ports {
		snap.Services[sp.Name] = sp
		newPorts[sp.Name] = sp
		keys = append(keys, sp.Name)
	}
	for name, list := range eps {
		snap.Endpoints[name] = list
		if _, dup := newPorts[name]; !dup {
			keys = append(keys, name)
		}
	}
	if len(keys) == 0 {
		delete(snap.keysByService, key)
	} else {
		snap.keysByService[key] = keys
	}
	return !reflect.DeepEqual(oldPorts, newPorts) || !reflect.DeepEqual(oldEps, nonNil(eps))
}

func nonNil(m map[ServicePortName][]*Endpoint) map[ServicePortName][]*Endpoint {
	if m == nil {
		return map[ServicePortName][]*Endpoint{}
	}
	return m
}

// serviceRelevant is the part of a Service that affects rules.
func serviceRelevant(s *v1.Service) any {
	return struct {
		Labels string
		Spec   v1.ServiceSpec
		LB     v1.LoadBalancerStatus
	}{s.Labels[LabelServiceProxyName], s.Spec, s.Status.LoadBalancer}
}

// sliceRelevant is the part of an EndpointSlice that affects rules.
func sliceRelevant(s *discovery.EndpointSlice) any {
	return struct {
		Type      discovery.AddressType
		Ports     []discovery.EndpointPort
		Endpoints []discovery.Endpoint
	}{s.AddressType, s.Ports, s.Endpoints}
}
