package model

import (
	"errors"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Snapshot is the proxy's view of the cluster for one IP family: every
// service port and its endpoints, keyed by ServicePortName.
//
// A Snapshot kept up to date by ChangeTracker.Update must not have its maps
// edited directly: Update indexes them by Service.
type Snapshot struct {
	Services  map[ServicePortName]*ServicePort
	Endpoints map[ServicePortName][]*Endpoint

	// keysByService indexes both maps by Service, so one changed Service is
	// replaced without scanning every other one. Built on first use.
	keysByService map[types.NamespacedName][]ServicePortName
}

// NewSnapshot returns an empty Snapshot.
func NewSnapshot() *Snapshot {
	return &Snapshot{Services: map[ServicePortName]*ServicePort{}, Endpoints: map[ServicePortName][]*Endpoint{}}
}

// EndpointCount is the number of endpoints of all service ports (kube-proxy
// drops per-endpoint comments above a threshold of it).
func (s *Snapshot) EndpointCount() int {
	n := 0
	for name := range s.Services {
		n += len(s.Endpoints[name])
	}
	return n
}

// PortsOf returns the service port names of one Service (those of its
// ports and of its endpoints' ports), building the index on first use.
func (s *Snapshot) PortsOf(key types.NamespacedName) []ServicePortName {
	if s.keysByService == nil {
		s.keysByService = map[types.NamespacedName][]ServicePortName{}
		seen := map[ServicePortName]bool{}
		add := func(name ServicePortName) {
			if !seen[name] {
				seen[name] = true
				s.keysByService[name.NamespacedName] = append(s.keysByService[name.NamespacedName], name)
			}
		}
		for name := range s.Services {
			add(name)
		}
		for name := range s.Endpoints {
			add(name)
		}
	}
	return s.keysByService[key]
}

// BuildSnapshot converts API objects into a Snapshot for one family.
// Problems with individual objects are joined into the returned error; the
// snapshot still holds everything that was valid.
func BuildSnapshot(services []*v1.Service, slices []*discovery.EndpointSlice, family v1.IPFamily) (*Snapshot, error) {
	snap := NewSnapshot()
	var errs []error
	for _, svc := range services {
		ports, err := ServicePortsFromService(svc, family)
		if err != nil {
			errs = append(errs, err)
		}
		for _, sp := range ports {
			snap.Services[sp.Name] = sp
		}
	}
	bySvc := map[types.NamespacedName][]*discovery.EndpointSlice{}
	for _, s := range slices {
		key, ok := ServiceKey(s)
		if !ok {
			errs = append(errs, &FieldError{Kind: "EndpointSlice", Object: types.NamespacedName{Namespace: s.Namespace, Name: s.Name},
				Field: "metadata.labels", Detail: "missing " + discovery.LabelServiceName})
			continue
		}
		bySvc[key] = append(bySvc[key], s)
	}
	for _, group := range bySvc {
		eps, err := EndpointsFromSlices(group, family)
		if err != nil {
			errs = append(errs, err)
		}
		for name, list := range eps {
			snap.Endpoints[name] = list
		}
	}
	return snap, errors.Join(errs...)
}
