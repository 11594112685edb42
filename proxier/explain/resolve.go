package explain

import (
	"cmp"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	v1 "k8s.io/api/core/v1"

	"github.com/svcproxy/svcproxy/iptables"
	"github.com/svcproxy/svcproxy/iptables/trace"
)

// ServiceRef names a Service port on the command line:
// NAMESPACE/NAME[:PORT], PORT a port name or number.
type ServiceRef struct{ Namespace, Name, Port string }

func (r ServiceRef) String() string {
	s := r.Namespace + "/" + r.Name
	if r.Port != "" {
		s += ":" + r.Port
	}
	return s
}

// refRE matches NAMESPACE/NAME[:PORT] (DNS labels, a port name or number).
var refRE = regexp.MustCompile(`^([a-z0-9]([-a-z0-9]*[a-z0-9])?)/([a-z0-9]([-a-z0-9]*[a-z0-9])?)(?::([-a-z0-9]+))?$`)

// ParseServiceRef reads "ns/name" or "ns/name:port"; ok is false for
// anything else (such as an address).
func ParseServiceRef(s string) (ServiceRef, bool) {
	m := refRE.FindStringSubmatch(s)
	if m == nil {
		return ServiceRef{}, false
	}
	return ServiceRef{Namespace: m[1], Name: m[3], Port: m[5]}, true
}

// ServicePort is a Service port a ServiceRef resolved to.
type ServicePort struct {
	Name     string // "ns/name:port", as kube-proxy's comments write it
	IP       netip.Addr
	Port     int
	Protocol string // lower case
}

func (p ServicePort) describe() string {
	port := p.Name[strings.LastIndex(p.Name, ":")+1:]
	if port == "" {
		port = "(unnamed)"
	}
	return fmt.Sprintf("%s (%s %d)", port, p.Protocol, p.Port)
}

// Resolved records how --to ns/name[:port] became an address.
type Resolved struct {
	Ref      string `json:"ref"`
	Via      string `json:"via"` // "manifests", "API server" or "rule comments"
	Service  string `json:"service"`
	Dst      string `json:"dst"`
	Protocol string `json:"protocol"`
}

func (r *Resolved) String() string {
	return fmt.Sprintf("%s is %s/%s (%s, from the %s)", r.Ref, r.Dst, r.Protocol, r.Service, r.Via)
}

// NewResolved describes sp, found for ref via a source.
func NewResolved(ref ServiceRef, sp ServicePort, via string) *Resolved {
	return &Resolved{Ref: ref.String(), Via: via, Service: sp.Name,
		Dst: netip.AddrPortFrom(sp.IP, uint16(sp.Port)).String(), Protocol: sp.Protocol}
}

// ResolveService finds ref among Service objects (from manifests or the
// API server): its cluster IP of the family, and the port. proto, when
// not empty, narrows the ports to that protocol.
func ResolveService(ref ServiceRef, svcs []*v1.Service, family v1.IPFamily, proto string) (ServicePort, error) {
	i := slices.IndexFunc(svcs, func(s *v1.Service) bool { return s.Namespace == ref.Namespace && s.Name == ref.Name })
	if i < 0 {
		return ServicePort{}, inputErrorf("service %s/%s not found", ref.Namespace, ref.Name)
	}
	svc := svcs[i]
	ip, err := clusterIPOf(svc, family)
	if err != nil {
		return ServicePort{}, err
	}
	var cands []ServicePort
	for _, p := range svc.Spec.Ports {
		cands = append(cands, ServicePort{Name: fmt.Sprintf("%s/%s:%s", svc.Namespace, svc.Name, p.Name),
			IP: ip, Port: int(p.Port), Protocol: strings.ToLower(string(p.Protocol))})
	}
	return choosePort(ref, cands, proto)
}

// clusterIPOf returns the Service's cluster IP of the family.
func clusterIPOf(svc *v1.Service, family v1.IPFamily) (netip.Addr, error) {
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 && svc.Spec.ClusterIP != "" {
		ips = []string{svc.Spec.ClusterIP}
	}
	if len(ips) == 0 || ips[0] == v1.ClusterIPNone {
		return netip.Addr{}, inputErrorf("service %s/%s has no cluster IP (headless or ExternalName): give an endpoint's address", svc.Namespace, svc.Name)
	}
	for _, s := range ips {
		if a, err := netip.ParseAddr(s); err == nil && a.Is4() == (family != v1.IPv6Protocol) {
			return a, nil
		}
	}
	return netip.Addr{}, inputErrorf("service %s/%s has no %s cluster IP (it has %s)", svc.Namespace, svc.Name, family, strings.Join(ips, ", "))
}

// choosePort picks ref's port among a Service's ports: by name, or by
// number when ref's port is one, or the only one when ref names none.
func choosePort(ref ServiceRef, cands []ServicePort, proto string) (ServicePort, error) {
	all := cands
	cands = slices.DeleteFunc(slices.Clone(cands), func(c ServicePort) bool {
		name := c.Name[strings.LastIndex(c.Name, ":")+1:]
		n, isNumber := strconv.Atoi(ref.Port)
		return ref.Port != "" && (isNumber == nil && c.Port != n || isNumber != nil && name != ref.Port) ||
			proto != "" && c.Protocol != proto
	})
	switch {
	case len(cands) == 1:
		return cands[0], nil
	case len(cands) == 0 && len(all) == 0:
		return ServicePort{}, inputErrorf("service %s/%s has no ports", ref.Namespace, ref.Name)
	case len(cands) == 0:
		return ServicePort{}, inputErrorf("service %s/%s has no port %s%s; it has %s", ref.Namespace, ref.Name,
			orDefault(ref.Port, "of that protocol"), protoWords(proto), portList(all))
	case ref.Port == "":
		return ServicePort{}, inputErrorf("service %s/%s has several ports: %s; name one: --to %s/%s:PORT", ref.Namespace, ref.Name, portList(cands), ref.Namespace, ref.Name)
	}
	return ServicePort{}, inputErrorf("service %s has several ports %s: %s; give --proto", ref, ref.Port, portList(cands))
}

func protoWords(proto string) string {
	if proto == "" {
		return ""
	}
	return " (" + proto + ")"
}

func portList(ps []ServicePort) string {
	var out []string
	for _, p := range ps {
		out = append(out, p.describe())
	}
	return strings.Join(out, ", ")
}

// serviceCommentRE matches the comments of kube-proxy's per-service
// KUBE-SERVICES rules, which carry the cluster IP and port.
var serviceCommentRE = regexp.MustCompile(`^(\S+/\S+:\S*) (cluster IP|has no endpoints|has no local endpoints)$`)

// ResolveFromComments finds ref in the comments of the rules of nat
// KUBE-SERVICES, then filter KUBE-SERVICES (Services without endpoints),
// and of the dispatch chains (KUBE-DISPATCH-*) they jump to, as a live node or
// a saved file holds them. proto, when not empty, narrows the ports.
func ResolveFromComments(ref ServiceRef, src trace.Chains, proto string) (ServicePort, error) {
	var cands []ServicePort
	for _, table := range []iptables.Table{iptables.TableNAT, iptables.TableFilter} {
		found, err := commentedPorts(ref, src, table)
		if err != nil {
			return ServicePort{}, err
		}
		for _, c := range found {
			if !slices.Contains(cands, c) {
				cands = append(cands, c)
			}
		}
		if len(cands) > 0 && ref.Port == "" {
			break // a Service with endpoints is all in nat
		}
	}
	// The rules hold the ports in no order a reader expects (the compact
	// layout's buckets go by chain name): list them by number.
	slices.SortStableFunc(cands, func(a, b ServicePort) int {
		return cmp.Or(cmp.Compare(a.Port, b.Port), strings.Compare(a.Protocol, b.Protocol), strings.Compare(a.Name, b.Name))
	})
	if len(cands) == 0 {
		return ServicePort{}, inputErrorf("service %s/%s not found in the rule comments of the nat and filter KUBE-SERVICES chains (is it programmed on this node? is the name right?)", ref.Namespace, ref.Name)
	}
	return choosePort(ref, cands, proto)
}

// isDispatchChain: the compact layout's dispatch buckets, KUBE-DISPATCH-*
// (KUBE-SVCS-* before 2026-12, which saved rule files may still hold).
func isDispatchChain(name string) bool {
	return strings.HasPrefix(name, "KUBE-DISPATCH-") || strings.HasPrefix(name, "KUBE-SVCS-")
}

// commentedPorts lists the ports of ref's Service that one table's
// KUBE-SERVICES and dispatch chains name.
func commentedPorts(ref ServiceRef, src trace.Chains, table iptables.Table) ([]ServicePort, error) {
	top, err := src.Chain(table, "KUBE-SERVICES")
	if err != nil || top == nil {
		return nil, err
	}
	chains := []*iptables.Chain{top}
	var buckets []chainName
	for _, r := range top.Rules {
		if spec, err := iptables.ParseRuleArgs(r.Args); err == nil && isDispatchChain(spec.Target.Name) {
			buckets = append(buckets, chainName{table, spec.Target.Name})
		}
	}
	if live, ok := src.(*LiveChains); ok {
		live.Prefetch(buckets)
	}
	for _, b := range buckets {
		c, err := src.Chain(b.table, b.name)
		if err != nil {
			return nil, err
		}
		if c != nil {
			chains = append(chains, c)
		}
	}
	prefix := ref.Namespace + "/" + ref.Name + ":"
	var out []ServicePort
	for _, c := range chains {
		for _, r := range c.Rules {
			m := serviceCommentRE.FindStringSubmatch(Comment(r.Raw))
			if m == nil || !strings.HasPrefix(m[1], prefix) {
				continue
			}
			if sp, ok := portOfRule(m[1], r.Args); ok {
				out = append(out, sp)
			}
		}
	}
	return out, nil
}

// portOfRule reads the destination, protocol and port a per-service rule
// matches.
func portOfRule(name string, args []string) (ServicePort, bool) {
	spec, err := iptables.ParseRuleArgs(args)
	if err != nil {
		return ServicePort{}, false
	}
	sp := ServicePort{Name: name}
	for _, m := range spec.Matches {
		switch m := m.(type) {
		case *iptables.AddrMatch:
			if !m.Source && !m.Negate && !m.Mask.IsValid() && m.Prefix.IsSingleIP() {
				sp.IP = m.Prefix.Addr()
			}
		case *iptables.ProtocolMatch:
			sp.Protocol = m.Protocol
		case *iptables.PortMatch:
			if !m.Source && !m.Negate && m.Min == m.Max {
				sp.Port = int(m.Min)
			}
		}
	}
	return sp, sp.IP.IsValid() && sp.Port != 0 && sp.Protocol != ""
}
