// Package testobj builds Services and EndpointSlices for tests: small
// functions that read like the objects they make, e.g.
//
//	testobj.Service("demo", "web", "203.0.113.10", testobj.Port("http", v1.ProtocolTCP, 80))
//	testobj.Slice("demo", "web", "web-1", testobj.TCPPort("http", 8080), testobj.Endpoint("198.51.100.2", testobj.OnNode("node1")))
package testobj

import (
	"net/netip"
	"strconv"

	"github.com/svcproxy/svcproxy/proxier/model"
	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
)

func Service(ns, name, clusterIP string, opts ...func(*v1.Service)) *v1.Service {
	svc := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1.ServiceSpec{
			Type:       v1.ServiceTypeClusterIP,
			ClusterIP:  clusterIP,
			ClusterIPs: []string{clusterIP},
		},
	}
	for _, o := range opts {
		o(svc)
	}
	return svc
}

func Port(name string, proto v1.Protocol, p int32) func(*v1.Service) {
	return func(s *v1.Service) {
		s.Spec.Ports = append(s.Spec.Ports, v1.ServicePort{Name: name, Protocol: proto, Port: p})
	}
}

func NodePort(name string, proto v1.Protocol, p, np int32) func(*v1.Service) {
	return func(s *v1.Service) {
		if s.Spec.Type == v1.ServiceTypeClusterIP {
			s.Spec.Type = v1.ServiceTypeNodePort
		}
		s.Spec.Ports = append(s.Spec.Ports, v1.ServicePort{Name: name, Protocol: proto, Port: p, NodePort: np})
	}
}

func LoadBalancer(ingressIPs ...string) func(*v1.Service) {
	return func(s *v1.Service) {
		s.Spec.Type = v1.ServiceTypeLoadBalancer
		for _, ip := range ingressIPs {
			s.Status.LoadBalancer.Ingress = append(s.Status.LoadBalancer.Ingress, v1.LoadBalancerIngress{IP: ip})
		}
	}
}

func SourceRanges(cidrs ...string) func(*v1.Service) {
	return func(s *v1.Service) { s.Spec.LoadBalancerSourceRanges = cidrs }
}

func ExternalIPs(ips ...string) func(*v1.Service) {
	return func(s *v1.Service) { s.Spec.ExternalIPs = ips }
}

func ExternalLocal(healthCheckPort int32) func(*v1.Service) {
	return func(s *v1.Service) {
		s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal
		s.Spec.HealthCheckNodePort = healthCheckPort
	}
}

func InternalLocal() func(*v1.Service) {
	return func(s *v1.Service) {
		s.Spec.InternalTrafficPolicy = ptr.To(v1.ServiceInternalTrafficPolicyLocal)
	}
}

func ClientIPAffinity(seconds int32) func(*v1.Service) {
	return func(s *v1.Service) {
		s.Spec.SessionAffinity = v1.ServiceAffinityClientIP
		s.Spec.SessionAffinityConfig = &v1.SessionAffinityConfig{ClientIP: &v1.ClientIPConfig{TimeoutSeconds: ptr.To(seconds)}}
	}
}

func Labels(kv ...string) func(*v1.Service) {
	return func(s *v1.Service) {
		s.Labels = map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			s.Labels[kv[i]] = kv[i+1]
		}
	}
}

type EndpointOption func(*discovery.Endpoint)

func OnNode(n string) EndpointOption { return func(e *discovery.Endpoint) { e.NodeName = ptr.To(n) } }
func NotReady() EndpointOption {
	return func(e *discovery.Endpoint) { e.Conditions.Ready = ptr.To(false) }
}
func Terminating(serving bool) EndpointOption {
	return func(e *discovery.Endpoint) {
		e.Conditions.Ready = ptr.To(false)
		e.Conditions.Serving = ptr.To(serving)
		e.Conditions.Terminating = ptr.To(true)
	}
}
func ZoneHints(zones ...string) EndpointOption {
	return func(e *discovery.Endpoint) {
		e.Hints = &discovery.EndpointHints{}
		for _, z := range zones {
			e.Hints.ForZones = append(e.Hints.ForZones, discovery.ForZone{Name: z})
		}
	}
}

func Endpoint(ip string, opts ...EndpointOption) discovery.Endpoint {
	e := discovery.Endpoint{Addresses: []string{ip}, Conditions: discovery.EndpointConditions{Ready: ptr.To(true)}}
	for _, o := range opts {
		o(&e)
	}
	return e
}

// SlicePort is one port of an EndpointSlice.
type SlicePort struct {
	Name  string
	Proto v1.Protocol
	Port  int32
}

func Slice(ns, svc, name string, ports []SlicePort, eps ...discovery.Endpoint) *discovery.EndpointSlice {
	s := &discovery.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discovery.LabelServiceName: svc}},
		AddressType: discovery.AddressTypeIPv4,
		Endpoints:   eps,
	}
	for _, p := range ports {
		s.Ports = append(s.Ports, discovery.EndpointPort{Name: ptr.To(p.Name), Protocol: ptr.To(p.Proto), Port: ptr.To(p.Port)})
	}
	if len(eps) > 0 && netip.MustParseAddr(eps[0].Addresses[0]).Is6() {
		s.AddressType = discovery.AddressTypeIPv6
	}
	return s
}

func TCPPort(name string, p int32) []SlicePort { return []SlicePort{{name, v1.ProtocolTCP, p}} }

// Many returns n ClusterIP Services (one TCP port) with one
// EndpointSlice of m endpoints each, spread over two nodes. Service i has
// ClusterIP 10.(i/65536).(i/256).(i%256)+ (only needs to be unique) and its
// endpoints are distinct addresses in 10.128.0.0/9.
func Many(n, m int) ([]*v1.Service, []*discovery.EndpointSlice) {
	svcs := make([]*v1.Service, 0, n)
	slices := make([]*discovery.EndpointSlice, 0, n)
	for i := 0; i < n; i++ {
		name := "svc-" + strconv.Itoa(i)
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		svcs = append(svcs, Service("bench", name, ip.String(), Port("http", v1.ProtocolTCP, 80)))
		eps := make([]discovery.Endpoint, 0, m)
		for j := 0; j < m; j++ {
			k := i*m + j
			epIP := netip.AddrFrom4([4]byte{10, 128 | byte(k>>16), byte(k >> 8), byte(k)})
			eps = append(eps, Endpoint(epIP.String(), OnNode("node"+strconv.Itoa(1+j%2))))
		}
		slices = append(slices, Slice("bench", name, name+"-1", TCPPort("http", 8080), eps...))
	}
	return svcs, slices
}

// WebService is demo/web: ClusterIP 203.0.113.10, port http 80/TCP.
func WebService() *v1.Service {
	return Service("demo", "web", "203.0.113.10", Port("http", v1.ProtocolTCP, 80))
}

// WebSlice is demo/web's endpoints: 198.51.100.2 and .3 on node1 and
// 198.51.100.66 on node2, port http 8080.
func WebSlice() *discovery.EndpointSlice {
	return Slice("demo", "web", "web-1", TCPPort("http", 8080),
		Endpoint("198.51.100.2", OnNode("node1")), Endpoint("198.51.100.3", OnNode("node1")), Endpoint("198.51.100.66", OnNode("node2")))
}

// WebPortName is the name of demo/web's http port.
var WebPortName = model.ServicePortName{NamespacedName: types.NamespacedName{Namespace: "demo", Name: "web"}, Port: "http", Protocol: v1.ProtocolTCP}

// UDPFlow is a conntrack entry from a client to dst whose replies come from
// replySrc (both "ip:port"), keyed "dst>replySrc".
func UDPFlow(dst, replySrc string) model.UDPFlow {
	return model.UDPFlow{OrigDst: netip.MustParseAddrPort(dst), ReplySrc: netip.MustParseAddrPort(replySrc), Key: dst + ">" + replySrc}
}
