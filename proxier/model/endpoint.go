package model

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Endpoint is one backend address:port of one service port.
type Endpoint struct {
	Addr        netip.AddrPort
	Ready       bool
	Serving     bool
	Terminating bool
	NodeName    string
	Zone        string
	ZoneHints   []string
	NodeHints   []string
	// hash caches EndpointHash of this endpoint (set at conversion; hashing
	// on every sync would dominate partial syncs).
	hash string
}

// Hash is the endpoint's naming hash for service port name (see
// ServicePortName.EndpointHash), computed once when the endpoint was
// converted from its EndpointSlice.
func (e *Endpoint) Hash(name ServicePortName) string {
	if e.hash != "" {
		return e.hash
	}
	return name.EndpointHash(e.String())
}

// String is "ip:port" ("[ip]:port" for IPv6): the form kube-proxy hashes into
// KUBE-SEP names and sorts endpoints by.
func (e *Endpoint) String() string { return e.Addr.String() }

// IP is the endpoint address as text.
func (e *Endpoint) IP() string { return e.Addr.Addr().String() }

// ServiceKey returns the Service an EndpointSlice belongs to, from its
// kubernetes.io/service-name label.
func ServiceKey(slice *discovery.EndpointSlice) (types.NamespacedName, bool) {
	name := slice.Labels[discovery.LabelServiceName]
	return types.NamespacedName{Namespace: slice.Namespace, Name: name}, name != ""
}

// EndpointsFromSlices merges all slices of one Service (for one address
// family) into endpoints per service port. Ports are matched by name and
// protocol; an address that several slices list is kept once, preferring a
// copy that is not terminating. Each list is sorted by "ip:port".
//
// Malformed entries are skipped and reported in the joined error, naming the
// slice and field; the rest is still returned.
func EndpointsFromSlices(slicesOfService []*discovery.EndpointSlice, family v1.IPFamily) (map[ServicePortName][]*Endpoint, error) {
	wantType := discovery.AddressTypeIPv4
	if family == v1.IPv6Protocol {
		wantType = discovery.AddressTypeIPv6
	}
	// Slice order must not change the outcome: process slices by name.
	ordered := slices.Clone(slicesOfService)
	slices.SortFunc(ordered, func(a, b *discovery.EndpointSlice) int {
		return compareStrings(a.Name, b.Name)
	})

	var errs []error
	byPort := map[ServicePortName]map[string]*Endpoint{}
	for _, slice := range ordered {
		if slice.AddressType != wantType {
			continue
		}
		svc, ok := ServiceKey(slice)
		nn := types.NamespacedName{Namespace: slice.Namespace, Name: slice.Name}
		if !ok {
			errs = append(errs, &FieldError{Kind: "EndpointSlice", Object: nn, Field: "metadata.labels", Detail: "missing " + discovery.LabelServiceName})
			continue
		}
		for i, port := range slice.Ports {
			field := fmt.Sprintf("ports[%d]", i)
			if port.Port == nil || *port.Port < 1 || *port.Port > 65535 {
				errs = append(errs, &FieldError{Kind: "EndpointSlice", Object: nn, Field: field + ".port", Detail: "must be set, in range 1..65535"})
				continue
			}
			name := ServicePortName{NamespacedName: svc, Protocol: v1.ProtocolTCP}
			if port.Name != nil {
				name.Port = *port.Name
			}
			if port.Protocol != nil {
				name.Protocol = *port.Protocol
			}
			set := byPort[name]
			if set == nil {
				set = map[string]*Endpoint{}
				byPort[name] = set
			}
			errs = addSliceEndpoints(set, slice, nn, int(*port.Port), errs)
		}
	}

	result := make(map[ServicePortName][]*Endpoint, len(byPort))
	for name, set := range byPort {
		list := make([]*Endpoint, 0, len(set))
		for _, ep := range set {
			ep.hash = name.EndpointHash(ep.String())
			list = append(list, ep)
		}
		SortEndpoints(list)
		result[name] = list
	}
	return result, errors.Join(errs...)
}

func addSliceEndpoints(set map[string]*Endpoint, slice *discovery.EndpointSlice, nn types.NamespacedName, port int, errs []error) []error {
	for j, raw := range slice.Endpoints {
		field := fmt.Sprintf("endpoints[%d].addresses", j)
		if len(raw.Addresses) == 0 {
			errs = append(errs, &FieldError{Kind: "EndpointSlice", Object: nn, Field: field, Detail: "empty"})
			continue
		}
		// Like kube-proxy, only the first address is used.
		ip, err := netip.ParseAddr(raw.Addresses[0])
		if err != nil || (FamilyOf(ip) == v1.IPv4Protocol) != (slice.AddressType == discovery.AddressTypeIPv4) {
			errs = append(errs, &FieldError{Kind: "EndpointSlice", Object: nn, Field: field + "[0]", Detail: fmt.Sprintf("%q is not an %s address", raw.Addresses[0], slice.AddressType)})
			continue
		}
		ep := &Endpoint{
			Addr:        netip.AddrPortFrom(ip.Unmap(), uint16(port)),
			Ready:       raw.Conditions.Ready == nil || *raw.Conditions.Ready,
			Serving:     raw.Conditions.Serving == nil || *raw.Conditions.Serving,
			Terminating: raw.Conditions.Terminating != nil && *raw.Conditions.Terminating,
		}
		if raw.NodeName != nil {
			ep.NodeName = *raw.NodeName
		}
		if raw.Zone != nil {
			ep.Zone = *raw.Zone
		}
		if raw.Hints != nil {
			for _, z := range raw.Hints.ForZones {
				ep.ZoneHints = append(ep.ZoneHints, z.Name)
			}
			for _, n := range raw.Hints.ForNodes {
				ep.NodeHints = append(ep.NodeHints, n.Name)
			}
		}
		key := ep.String()
		if old, exists := set[key]; !exists || (old.Terminating && !ep.Terminating) {
			set[key] = ep
		}
	}
	return errs
}

// SortEndpoints orders endpoints by their "ip:port" text, as kube-proxy does;
// the statistic probabilities depend on this order.
func SortEndpoints(list []*Endpoint) {
	slices.SortFunc(list, func(a, b *Endpoint) int { return compareStrings(a.String(), b.String()) })
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
