package proxier

import (
	"errors"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
)

// BuildSnapshot converts API objects into a Snapshot for one family.
// Problems with individual objects are joined into the returned error; the
// snapshot still holds everything that was valid.
func BuildSnapshot(services []*v1.Service, slices []*discovery.EndpointSlice, family v1.IPFamily) (*Snapshot, error) {
	snap := &Snapshot{Services: map[ServicePortName]*ServicePort{}, Endpoints: map[ServicePortName][]*Endpoint{}}
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
