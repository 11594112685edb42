package model

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// LabelServiceProxyName marks Services that another proxy implements;
// kube-proxy (and so svcproxy) ignores them.
const LabelServiceProxyName = "service.kubernetes.io/service-proxy-name"

// defaultStickySeconds is the API default for sessionAffinityConfig.clientIP.timeoutSeconds.
const defaultStickySeconds = 10800

// ServicePortName identifies one port of one Service. Its String() form,
// "namespace/name:port" (":port" omitted for an unnamed port), is what
// kube-proxy hashes into chain names and writes into rule comments.
type ServicePortName struct {
	types.NamespacedName
	Port     string
	Protocol v1.Protocol
}

func (n ServicePortName) String() string {
	if n.Port == "" {
		return n.NamespacedName.String()
	}
	return n.NamespacedName.String() + ":" + n.Port
}

// ServicePort is everything the renderer needs to know about one Service port
// in one IP family.
type ServicePort struct {
	Name      ServicePortName
	ClusterIP netip.Addr
	Port      int
	Protocol  v1.Protocol
	NodePort  int

	ExternalIPs              []netip.Addr
	LoadBalancerVIPs         []netip.Addr
	LoadBalancerSourceRanges []netip.Prefix
	HealthCheckNodePort      int

	ExternalPolicyLocal bool
	InternalPolicyLocal bool

	// StickySeconds is non-zero when sessionAffinity is ClientIP.
	StickySeconds int
	// TrafficDistribution is spec.trafficDistribution (topology hints).
	TrafficDistribution string

	// hash caches Name.Hash() (set at conversion): every per-service chain
	// name is built from it, and hashing on every sync would dominate
	// partial syncs.
	hash string
}

// Hash is kube-proxy's naming hash of the port (see ServicePortName.Hash),
// computed once when the ServicePort was converted from its Service.
func (sp *ServicePort) Hash() string {
	if sp.hash != "" {
		return sp.hash
	}
	return sp.Name.Hash()
}

// ExternallyAccessible reports whether the port receives NodePort, external IP
// or load-balancer traffic (the per-port form of the Service's
// ExternallyAccessible).
func (sp *ServicePort) ExternallyAccessible() bool {
	return sp.NodePort != 0 || len(sp.LoadBalancerVIPs) != 0 || len(sp.ExternalIPs) != 0
}

// UsesClusterEndpoints: internal traffic with Cluster policy, or any external
// traffic (even with Local external policy, pod and host traffic to external
// addresses is short-circuited to all endpoints).
func (sp *ServicePort) UsesClusterEndpoints() bool {
	return !sp.InternalPolicyLocal || sp.ExternallyAccessible()
}

// UsesLocalEndpoints reports whether any traffic is limited to this node's endpoints.
func (sp *ServicePort) UsesLocalEndpoints() bool {
	return sp.InternalPolicyLocal || (sp.ExternalPolicyLocal && sp.ExternallyAccessible())
}

// SkipReason says why kube-proxy would not program a Service at all, or ""
// when it would.
func SkipReason(svc *v1.Service) string {
	switch {
	case svc.Labels[LabelServiceProxyName] != "":
		return fmt.Sprintf("label %s=%s hands it to another proxy", LabelServiceProxyName, svc.Labels[LabelServiceProxyName])
	case svc.Spec.Type == v1.ServiceTypeExternalName:
		return "type ExternalName has no proxy rules"
	case svc.Spec.ClusterIP == v1.ClusterIPNone:
		return "headless (clusterIP: None)"
	case svc.Spec.ClusterIP == "" && len(svc.Spec.ClusterIPs) == 0:
		return "no cluster IP assigned"
	}
	return ""
}

// FieldError is a validation error that names the object and field.
type FieldError struct {
	Kind   string // "Service", "EndpointSlice", "Node"
	Object types.NamespacedName
	Field  string // e.g. spec.ports[1].protocol
	Detail string
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("%s %s: %s: %s", e.Kind, e.Object, e.Field, e.Detail)
}

// ServicePortsFromService converts svc into one ServicePort per spec.ports
// entry for the given family. A skipped Service (see SkipReason) yields nil,
// nil. Invalid fields yield an error joining one *FieldError per problem; the
// ports that are valid are still returned so one bad port does not take down
// the rest of the Service.
func ServicePortsFromService(svc *v1.Service, family v1.IPFamily) ([]*ServicePort, error) {
	if SkipReason(svc) != "" {
		return nil, nil
	}
	nn := types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}
	fieldErr := func(field, format string, args ...any) error {
		return &FieldError{Kind: "Service", Object: nn, Field: field, Detail: fmt.Sprintf(format, args...)}
	}
	var errs []error

	clusterIP, err := clusterIPForFamily(svc, family)
	if err != nil {
		return nil, fieldErr("spec.clusterIPs", "%v", err)
	}
	if !clusterIP.IsValid() {
		return nil, nil // single-stack Service of the other family
	}

	common := ServicePort{
		ClusterIP:           clusterIP,
		ExternalPolicyLocal: externalPolicyLocal(svc),
		InternalPolicyLocal: svc.Spec.InternalTrafficPolicy != nil && *svc.Spec.InternalTrafficPolicy == v1.ServiceInternalTrafficPolicyLocal,
	}
	if svc.Spec.TrafficDistribution != nil {
		common.TrafficDistribution = *svc.Spec.TrafficDistribution
	}
	switch svc.Spec.SessionAffinity {
	case "", v1.ServiceAffinityNone:
	case v1.ServiceAffinityClientIP:
		common.StickySeconds = defaultStickySeconds
		if cfg := svc.Spec.SessionAffinityConfig; cfg != nil && cfg.ClientIP != nil && cfg.ClientIP.TimeoutSeconds != nil {
			common.StickySeconds = int(*cfg.ClientIP.TimeoutSeconds)
			if common.StickySeconds < 1 || common.StickySeconds > 86400 {
				errs = append(errs, fieldErr("spec.sessionAffinityConfig.clientIP.timeoutSeconds", "%d is out of range 1..86400", common.StickySeconds))
				common.StickySeconds = defaultStickySeconds
			}
		}
	default:
		errs = append(errs, fieldErr("spec.sessionAffinity", "unsupported value %q (want None or ClientIP)", svc.Spec.SessionAffinity))
	}

	for i, raw := range svc.Spec.ExternalIPs {
		ip, err := netip.ParseAddr(strings.TrimSpace(raw))
		if err != nil {
			errs = append(errs, fieldErr(fmt.Sprintf("spec.externalIPs[%d]", i), "%q is not an IP address", raw))
			continue
		}
		if FamilyOf(ip) == family {
			common.ExternalIPs = append(common.ExternalIPs, ip)
		}
	}
	// As kube-proxy, load-balancer IPs and source ranges are taken whatever
	// the type (the API server clears them when a Service stops being a
	// LoadBalancer; a controller may still set them); only the health-check
	// node port needs type LoadBalancer.
	common.LoadBalancerVIPs, errs = loadBalancerVIPs(svc, family, fieldErr, errs)
	common.LoadBalancerSourceRanges, errs = sourceRanges(svc, family, fieldErr, errs)
	if svc.Spec.Type == v1.ServiceTypeLoadBalancer && common.ExternalPolicyLocal {
		common.HealthCheckNodePort = int(svc.Spec.HealthCheckNodePort)
	}

	var ports []*ServicePort
	seen := map[string]int{}
	for i := range svc.Spec.Ports {
		sp, err := servicePortFromSpec(svc, i, common, fieldErr)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		key := sp.Name.Port + "/" + string(sp.Protocol)
		if j, dup := seen[key]; dup {
			errs = append(errs, fieldErr(fmt.Sprintf("spec.ports[%d]", i), "duplicates spec.ports[%d] (name %q, protocol %s)", j, sp.Name.Port, sp.Protocol))
			continue
		}
		seen[key] = i
		ports = append(ports, sp)
	}
	return ports, errors.Join(errs...)
}

func servicePortFromSpec(svc *v1.Service, i int, common ServicePort, fieldErr func(string, string, ...any) error) (*ServicePort, error) {
	p := svc.Spec.Ports[i]
	field := fmt.Sprintf("spec.ports[%d]", i)
	protocol := p.Protocol
	if protocol == "" {
		protocol = v1.ProtocolTCP // the API server's default
	}
	switch protocol {
	case v1.ProtocolTCP, v1.ProtocolUDP, v1.ProtocolSCTP:
	default:
		return nil, fieldErr(field+".protocol", "unsupported value %q (want TCP, UDP or SCTP)", p.Protocol)
	}
	if p.Port < 1 || p.Port > 65535 {
		return nil, fieldErr(field+".port", "%d is out of range 1..65535", p.Port)
	}
	if p.NodePort < 0 || p.NodePort > 65535 {
		return nil, fieldErr(field+".nodePort", "%d is out of range 0..65535", p.NodePort)
	}
	if p.NodePort == 0 && (svc.Spec.Type == v1.ServiceTypeNodePort || (svc.Spec.Type == v1.ServiceTypeLoadBalancer && (svc.Spec.AllocateLoadBalancerNodePorts == nil || *svc.Spec.AllocateLoadBalancerNodePorts))) {
		return nil, fieldErr(field+".nodePort", "required for type %s (the API server allocates it; offline manifests must set it)", svc.Spec.Type)
	}
	sp := common
	sp.Name = ServicePortName{
		NamespacedName: types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name},
		Port:           p.Name,
		Protocol:       protocol,
	}
	sp.Port = int(p.Port)
	sp.Protocol = protocol
	sp.hash = sp.Name.Hash()
	// kube-proxy takes the node port whatever the type; the API server
	// allows one only on NodePort and LoadBalancer Services.
	sp.NodePort = int(p.NodePort)
	return &sp, nil
}

func clusterIPForFamily(svc *v1.Service, family v1.IPFamily) (netip.Addr, error) {
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 {
		ips = []string{svc.Spec.ClusterIP}
	}
	for _, raw := range ips {
		ip, err := netip.ParseAddr(raw)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("%q is not an IP address", raw)
		}
		if FamilyOf(ip) == family {
			return ip.Unmap(), nil
		}
	}
	return netip.Addr{}, nil
}

func loadBalancerVIPs(svc *v1.Service, family v1.IPFamily, fieldErr func(string, string, ...any) error, errs []error) ([]netip.Addr, []error) {
	var vips []netip.Addr
	for i, ing := range svc.Status.LoadBalancer.Ingress {
		// An ingress with ipMode Proxy is reached through the load balancer,
		// which forwards to node ports; kube-proxy programs no VIP rule for it.
		if ing.IP == "" || (ing.IPMode != nil && *ing.IPMode == v1.LoadBalancerIPModeProxy) {
			continue
		}
		ip, err := netip.ParseAddr(ing.IP)
		if err != nil {
			errs = append(errs, fieldErr(fmt.Sprintf("status.loadBalancer.ingress[%d].ip", i), "%q is not an IP address", ing.IP))
			continue
		}
		if FamilyOf(ip) == family {
			vips = append(vips, ip)
		}
	}
	return vips, errs
}

func sourceRanges(svc *v1.Service, family v1.IPFamily, fieldErr func(string, string, ...any) error, errs []error) ([]netip.Prefix, []error) {
	var ranges []netip.Prefix
	for i, raw := range svc.Spec.LoadBalancerSourceRanges {
		prefix, err := netip.ParsePrefix(strings.TrimSpace(raw))
		if err != nil {
			errs = append(errs, fieldErr(fmt.Sprintf("spec.loadBalancerSourceRanges[%d]", i), "%q is not a CIDR", raw))
			continue
		}
		if FamilyOf(prefix.Addr()) != family {
			continue
		}
		// A zero-length range admits everybody; kube-proxy then writes no
		// firewall chain at all.
		if prefix.Bits() == 0 {
			return nil, errs
		}
		ranges = append(ranges, prefix.Masked())
	}
	return ranges, errs
}

// externalPolicyLocal is kube-proxy's: externalTrafficPolicy Local counts
// for every externally accessible Service — NodePort, LoadBalancer, and a
// ClusterIP Service with externalIPs.
func externalPolicyLocal(svc *v1.Service) bool {
	return ExternallyAccessible(svc) && svc.Spec.ExternalTrafficPolicy == v1.ServiceExternalTrafficPolicyLocal
}

// ExternallyAccessible reports whether a Service receives traffic from
// outside the cluster, as the API defines it: type NodePort or
// LoadBalancer, or type ClusterIP with externalIPs. (An empty type is the
// API server's default, ClusterIP; offline manifests may leave it out.)
func ExternallyAccessible(svc *v1.Service) bool {
	switch svc.Spec.Type {
	case v1.ServiceTypeNodePort, v1.ServiceTypeLoadBalancer:
		return true
	case v1.ServiceTypeClusterIP, "":
		return len(svc.Spec.ExternalIPs) > 0
	}
	return false
}

// FamilyOf is the IP family of ip (an IPv4-mapped IPv6 address is IPv4).
func FamilyOf(ip netip.Addr) v1.IPFamily {
	if ip.Unmap().Is4() {
		return v1.IPv4Protocol
	}
	return v1.IPv6Protocol
}
