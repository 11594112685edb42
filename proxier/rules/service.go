package rules

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/svcproxy/svcproxy/iptables"
	"github.com/svcproxy/svcproxy/proxier/model"
)

// servicePlan is what one service port needs on this node: which chains
// exist, where each kind of traffic goes, and what to do when it has nowhere
// to go. Computing it apart from writing keeps the writers simple.
type servicePlan struct {
	sp   *model.ServicePort
	name string   // "ns/svc:port"
	args []string // "-m proto -p proto"

	eps model.Categorized

	clusterChain, localChain, extChain, fwChain string

	internalChain        string // where cluster-IP traffic goes
	externalPolicyChain  string // where external traffic ends up
	hasInternalEndpoints bool
	hasExternalEndpoints bool
	usesClusterChain     bool
	usesLocalChain       bool
	usesExtChain         bool
	usesFWChain          bool
	lbChain              string // where load-balancer traffic enters

	// Verdicts written in the filter table for traffic that has no endpoint:
	// REJECT when the service has none at all, DROP when only the Local
	// policy has none here.
	internalVerdict, internalVerdictComment string
	externalVerdict, externalVerdictComment string
}

func planServicePort(sp *model.ServicePort, endpoints []*model.Endpoint, cfg *NodeConfig) *servicePlan {
	p := &servicePlan{sp: sp, name: sp.Name.String()}
	proto := lowerProto(sp.Protocol)
	p.args = []string{"-m", proto, "-p", proto}
	p.eps = model.CategorizeEndpoints(endpoints, sp, cfg.Topology)

	chains := chainsOf(sp)
	p.clusterChain, p.localChain, p.extChain, p.fwChain = chains.cluster, chains.local, chains.external, chains.firewall

	p.usesClusterChain = len(p.eps.Cluster) > 0 && sp.UsesClusterEndpoints()
	p.usesLocalChain = len(p.eps.Local) > 0 && sp.UsesLocalEndpoints()

	p.internalChain, p.hasInternalEndpoints = p.clusterChain, p.eps.HasAny
	if sp.InternalPolicyLocal {
		p.internalChain, p.hasInternalEndpoints = p.localChain, len(p.eps.Local) > 0
	}
	p.externalPolicyChain, p.hasExternalEndpoints = p.clusterChain, p.eps.HasAny
	if sp.ExternalPolicyLocal {
		p.externalPolicyChain, p.hasExternalEndpoints = p.localChain, len(p.eps.Local) > 0
	}
	// The EXT chain exists whenever any endpoint does: even with no local
	// endpoint it short-circuits pod and host traffic to the cluster chain.
	p.usesExtChain = p.eps.HasAny && sp.ExternallyAccessible()
	p.usesFWChain = p.eps.HasAny && len(sp.LoadBalancerVIPs) > 0 && len(sp.LoadBalancerSourceRanges) > 0
	p.lbChain = p.extChain
	if p.usesFWChain {
		p.lbChain = p.fwChain
	}

	if !p.eps.HasAny {
		p.internalVerdict, p.internalVerdictComment = "REJECT", p.name+" has no endpoints"
		p.externalVerdict, p.externalVerdictComment = "REJECT", p.name+" has no endpoints"
		return p
	}
	if !p.hasInternalEndpoints {
		p.internalVerdict, p.internalVerdictComment = "DROP", p.name+" has no local endpoints"
	}
	if !p.hasExternalEndpoints {
		p.externalVerdict, p.externalVerdictComment = "DROP", p.name+" has no local endpoints"
	}
	return p
}

// match returns "-m proto -p proto -d ip --dport port".
func (p *servicePlan) match(dst string, port int) []string {
	return slices.Concat(p.args, []string{"-d", dst, "--dport", portString(port)})
}

// servicePort plans one service port, writes its own chains and returns
// its footprint: its lines in the shared chains (written by the caller,
// in port order) and what it owns.
func (r *render) servicePort(sp *model.ServicePort, endpoints []*model.Endpoint) *footprint {
	p := planServicePort(sp, endpoints, r.cfg)
	fp := &footprint{
		noLocalInternal: !p.hasInternalEndpoints && p.eps.HasAny,
		noLocalExternal: !p.hasExternalEndpoints && sp.ExternallyAccessible() && p.eps.HasAny,
	}
	w := &portWriter{r: r, fp: fp}
	w.clusterIPEntry(p)
	w.externalIPEntries(p)
	w.loadBalancerEntries(p)
	w.nodePortEntries(p)
	w.healthCheckNodePort(p)
	r.writeServiceChains(w, p)
	return fp
}

// portWriter collects one port's shared-chain lines and writes its own
// chains, counting them into its footprint.
type portWriter struct {
	r  *render
	fp *footprint
}

// entry adds a line to a shared chain. A KUBE-SERVICES line for dst goes
// to dst's dispatch bucket when KUBE-SERVICES dispatches.
func (w *portWriter) entry(table, chain string, dst netip.Addr, args ...string) {
	if chain == ChainServices && w.r.index.buckets > 0 && dst.IsValid() {
		chain = bucketChain(bucketOf(dst, w.r.index.buckets), w.r.index.buckets)
	}
	w.fp.entries = append(w.fp.entries, entry{table: table, chain: chain, line: ruleLine(chain, args)})
}

// own declares one of the port's own chains.
func (w *portWriter) own(chain string) {
	w.r.nat.declare(chain)
	w.fp.chains = append(w.fp.chains, chain)
}

// rule adds a rule to one of the port's own chains.
func (w *portWriter) rule(chain string, args ...string) {
	w.r.nat.rule(chain, args...)
	w.fp.ownRules++
}

func (w *portWriter) clusterIPEntry(p *servicePlan) {
	ip := p.sp.ClusterIP
	if p.hasInternalEndpoints {
		w.entry("nat", ChainServices, ip, slices.Concat(comment(p.name+" cluster IP"), p.match(ip.String(), p.sp.Port), []string{"-j", p.internalChain})...)
		return
	}
	w.entry("filter", ChainServices, ip, slices.Concat(comment(p.internalVerdictComment), p.match(ip.String(), p.sp.Port), []string{"-j", p.internalVerdict})...)
}

func (w *portWriter) externalIPEntries(p *servicePlan) {
	for _, ip := range p.sp.ExternalIPs {
		if p.eps.HasAny {
			w.entry("nat", ChainServices, ip, slices.Concat(comment(p.name+" external IP"), p.match(ip.String(), p.sp.Port), []string{"-j", p.extChain})...)
		}
		if !p.hasExternalEndpoints {
			w.entry("filter", ChainExternalServices, netip.Addr{}, slices.Concat(comment(p.externalVerdictComment), p.match(ip.String(), p.sp.Port), []string{"-j", p.externalVerdict})...)
		}
	}
}

func (w *portWriter) loadBalancerEntries(p *servicePlan) {
	for _, ip := range p.sp.LoadBalancerVIPs {
		if p.eps.HasAny {
			w.entry("nat", ChainServices, ip, slices.Concat(comment(p.name+" loadbalancer IP"), p.match(ip.String(), p.sp.Port), []string{"-j", p.lbChain})...)
		}
		if p.usesFWChain {
			w.entry("filter", ChainProxyFirewall, netip.Addr{}, slices.Concat(comment(fmt.Sprintf("%s traffic not accepted by %s", p.name, p.fwChain)), p.match(ip.String(), p.sp.Port), []string{"-j", "DROP"})...)
		}
	}
	if !p.hasExternalEndpoints {
		for _, ip := range p.sp.LoadBalancerVIPs {
			w.entry("filter", ChainExternalServices, netip.Addr{}, slices.Concat(comment(p.externalVerdictComment), p.match(ip.String(), p.sp.Port), []string{"-j", p.externalVerdict})...)
		}
	}
}

func (w *portWriter) nodePortEntries(p *servicePlan) {
	if p.sp.NodePort == 0 {
		return
	}
	port := portString(p.sp.NodePort)
	if p.eps.HasAny {
		// NodePorts are not subject to loadBalancerSourceRanges (as in kube-proxy).
		if cfg := w.r.cfg; cfg.LocalhostNodePortsPossible() && cfg.counts(iptables.NFAcctLocalhostNodePorts) {
			// The same jump for 127.0.0.1 first, counting what it accepts
			// (kube-proxy's kubeproxy_iptables_localhost_nodeports_accepted_packets_total).
			w.entry("nat", ChainNodePorts, netip.Addr{}, slices.Concat(comment(p.name), p.args, []string{"-d", "127.0.0.0/8", "--dport", port},
				cfg.countInto(iptables.NFAcctLocalhostNodePorts), []string{"-j", p.extChain})...)
		}
		w.entry("nat", ChainNodePorts, netip.Addr{}, slices.Concat(comment(p.name), p.args, []string{"--dport", port, "-j", p.extChain})...)
	}
	if !p.hasExternalEndpoints {
		w.entry("filter", ChainExternalServices, netip.Addr{}, slices.Concat(comment(p.externalVerdictComment),
			[]string{"-m", "addrtype", "--dst-type", "LOCAL"}, p.args, []string{"--dport", port, "-j", p.externalVerdict})...)
	}
}

func (w *portWriter) healthCheckNodePort(p *servicePlan) {
	if p.sp.HealthCheckNodePort == 0 {
		return
	}
	// Accepted whether or not this node has local endpoints: the load
	// balancer must be able to ask.
	w.entry("filter", ChainNodePorts, netip.Addr{}, slices.Concat(comment(p.name+" health check node port"),
		[]string{"-m", "tcp", "-p", "tcp", "--dport", portString(p.sp.HealthCheckNodePort), "-j", "ACCEPT"})...)
}

// writeServiceChains writes the port's own chains (SVC, SVL, EXT, FW, and
// the KUBE-SEP chains the layout keeps).
func (r *render) writeServiceChains(w *portWriter, p *servicePlan) {
	if p.hasInternalEndpoints {
		r.writeInternalMasquerade(w, p)
	}
	if p.usesExtChain {
		w.own(p.extChain)
		r.writeExternalChain(w, p)
	}
	if p.usesFWChain {
		w.own(p.fwChain)
		r.writeFirewallChain(w, p)
	}
	if p.usesClusterChain {
		w.own(p.clusterChain)
		r.writeDispatch(w, p, p.clusterChain, p.eps.Cluster)
	}
	if p.usesLocalChain {
		w.own(p.localChain)
		r.writeDispatch(w, p, p.localChain, p.eps.Local)
	}
	for _, ep := range p.eps.Reachable {
		if r.keepsEndpointChain(ep) {
			chain := endpointChain(p.sp.Name, ep)
			w.own(chain)
			r.writeEndpointChain(w, p, chain, ep)
		}
	}
}

// keepsEndpointChain reports whether ep gets its own KUBE-SEP chain: always
// in kube-proxy's layout; in the compact one only when ep may be the client
// itself, whose traffic must then be masqueraded (hairpin): ep is on this
// node, on no node, at one of this node's addresses or in its pod CIDRs.
// Every other endpoint is DNATed straight from the service chain.
func (r *render) keepsEndpointChain(ep *model.Endpoint) bool {
	if r.cfg.layout() == LayoutKubeProxy || ep.NodeName == "" || ep.NodeName == r.cfg.Topology.NodeName {
		return true
	}
	ip := ep.Addr.Addr()
	return slices.Contains(r.cfg.NodeIPs, ip) || slices.ContainsFunc(r.cfg.PodCIDRs, func(p netip.Prefix) bool { return p.Contains(ip) })
}

// writeInternalMasquerade marks cluster-IP traffic for masquerade when it
// comes from outside the pod network (or always, with --masquerade-all): the
// reply must come back through this node.
func (r *render) writeInternalMasquerade(w *portWriter, p *servicePlan) {
	head := slices.Concat(comment(p.name+" cluster IP"), p.match(p.sp.ClusterIP.String(), p.sp.Port))
	if r.cfg.MasqueradeAll {
		w.rule(p.internalChain, slices.Concat(head, []string{"-j", ChainMarkMasq})...)
	} else if notLocal := r.cfg.LocalDetector.IfNotLocal(); len(notLocal) > 0 {
		w.rule(p.internalChain, slices.Concat(head, notLocal, []string{"-j", ChainMarkMasq})...)
	}
}

func (r *render) writeExternalChain(w *portWriter, p *servicePlan) {
	if !p.sp.ExternalPolicyLocal {
		// Endpoints may be on another node: masquerade so replies return here.
		w.rule(p.extChain, slices.Concat(comment("masquerade traffic for "+p.name+" external destinations"), []string{"-j", ChainMarkMasq})...)
	} else {
		if local := r.cfg.LocalDetector.IfLocal(); len(local) > 0 {
			// Pod traffic to an external address behaves as if it went out to
			// the load balancer and came back: no traffic policy applies.
			w.rule(p.extChain, slices.Concat(comment("pod traffic for "+p.name+" external destinations"), local, []string{"-j", p.clusterChain})...)
		}
		// Host-originated traffic has a local source address; it needs
		// masquerade and may use any endpoint.
		w.rule(p.extChain, slices.Concat(comment("masquerade LOCAL traffic for "+p.name+" external destinations"), []string{"-m", "addrtype", "--src-type", "LOCAL", "-j", ChainMarkMasq})...)
		w.rule(p.extChain, slices.Concat(comment("route LOCAL traffic for "+p.name+" external destinations"), []string{"-m", "addrtype", "--src-type", "LOCAL", "-j", p.clusterChain})...)
	}
	if p.hasExternalEndpoints {
		w.rule(p.extChain, "-j", p.externalPolicyChain)
	}
}

func (r *render) writeFirewallChain(w *portWriter, p *servicePlan) {
	head := comment(p.name + " loadbalancer IP")
	allowFromNode := false
	for _, cidr := range p.sp.LoadBalancerSourceRanges {
		w.rule(p.fwChain, slices.Concat(head, []string{"-s", cidr.String(), "-j", p.extChain})...)
		for _, ip := range r.cfg.NodeIPs[:min(1, len(r.cfg.NodeIPs))] {
			allowFromNode = allowFromNode || cidr.Contains(ip)
		}
	}
	if allowFromNode {
		// A VIP bound locally makes node-to-VIP traffic loop back with the
		// VIP as source; let it through.
		for _, ip := range p.sp.LoadBalancerVIPs {
			w.rule(p.fwChain, slices.Concat(head, []string{"-s", ip.String(), "-j", p.extChain})...)
		}
	}
	// Falling off the end means no DNAT; KUBE-PROXY-FIREWALL then drops it.
	w.rule(p.fwChain, comment("other traffic to "+p.name+" will be dropped by KUBE-PROXY-FIREWALL")...)
}

// writeDispatch writes the rules of a SVC/SVL chain: session-affinity checks
// first, then one rule per endpoint, rule i taken with probability 1/(n-i).
// Each rule jumps to the endpoint's KUBE-SEP chain or, where the layout
// keeps none, DNATs to it itself (recording session affinity under the
// same recent list name the chain would use).
func (r *render) writeDispatch(w *portWriter, p *servicePlan, chain string, endpoints []*model.Endpoint) {
	if p.sp.StickySeconds > 0 {
		for _, ep := range endpoints {
			sep := endpointChain(p.sp.Name, ep)
			check := []string{"-m", "recent", "--name", sep, "--rcheck", "--seconds", portString(p.sp.StickySeconds), "--reap"}
			w.rule(chain, slices.Concat(r.endpointComment(p.name+" -> "+ep.String()), check, r.toEndpoint(p, ep, sep))...)
		}
	}
	n := len(endpoints)
	for i, ep := range endpoints {
		args := r.endpointComment(p.name + " -> " + ep.String())
		if i < n-1 {
			args = append(args, "-m", "statistic", "--mode", "random", "--probability", probability(n-i))
		}
		w.rule(chain, append(args, r.toEndpoint(p, ep, endpointChain(p.sp.Name, ep))...)...)
	}
}

// toEndpoint ends a dispatch rule: a jump to the endpoint's KUBE-SEP chain,
// or the DNAT that chain would do (affinity recorded, hairpin impossible).
func (r *render) toEndpoint(p *servicePlan, ep *model.Endpoint, sep string) []string {
	if r.keepsEndpointChain(ep) {
		return []string{"-j", sep}
	}
	var set []string
	if p.sp.StickySeconds > 0 {
		set = []string{"-m", "recent", "--name", sep, "--set"}
	}
	return slices.Concat(set, p.args, []string{"-j", "DNAT", "--to-destination", ep.String()})
}

// writeEndpointChain is the shape of a KUBE-SEP chain: masquerade hairpin
// traffic (an endpoint reaching itself through the service), record session
// affinity, then DNAT.
func (r *render) writeEndpointChain(w *portWriter, p *servicePlan, chain string, ep *model.Endpoint) {
	head := r.endpointComment(p.name)
	w.rule(chain, slices.Concat(head, []string{"-s", ep.IP(), "-j", ChainMarkMasq})...)
	if p.sp.StickySeconds > 0 {
		head = slices.Concat(head, []string{"-m", "recent", "--name", chain, "--set"})
	}
	w.rule(chain, slices.Concat(head, p.args, []string{"-j", "DNAT", "--to-destination", ep.String()})...)
}

// endpointComment drops per-endpoint comments in large clusters, as
// kube-proxy does, to keep restore input small.
func (r *render) endpointComment(text string) []string {
	if r.largeMode {
		return nil
	}
	return comment(text)
}
