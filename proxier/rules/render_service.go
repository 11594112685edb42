package rules

import (
	"fmt"
	"slices"

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

// writeServicePort writes one service port: its entry rules in the shared
// chains always, its own chains only when writeChains (full sync or changed).
func (r *render) writeServicePort(sp *model.ServicePort, endpoints []*model.Endpoint, writeChains bool) {
	p := planServicePort(sp, endpoints, r.cfg)
	if !p.hasInternalEndpoints {
		r.out.NoLocalEndpointsInternal += boolInt(p.eps.HasAny)
	}
	if !p.hasExternalEndpoints && sp.ExternallyAccessible() {
		r.out.NoLocalEndpointsExternal += boolInt(p.eps.HasAny)
	}
	r.writeClusterIPEntry(p)
	r.writeExternalIPEntries(p)
	r.writeLoadBalancerEntries(p)
	r.writeNodePortEntries(p)
	r.writeHealthCheckNodePort(p)

	nat := r.nat
	if !writeChains {
		nat = r.skipped
	}
	r.writeServiceChains(nat, p)
}

func (r *render) writeClusterIPEntry(p *servicePlan) {
	ip := p.sp.ClusterIP.String()
	if p.hasInternalEndpoints {
		r.nat.rule(ChainServices, slices.Concat(comment(p.name+" cluster IP"), p.match(ip, p.sp.Port), []string{"-j", p.internalChain})...)
		return
	}
	r.filter.rule(ChainServices, slices.Concat(comment(p.internalVerdictComment), p.match(ip, p.sp.Port), []string{"-j", p.internalVerdict})...)
}

func (r *render) writeExternalIPEntries(p *servicePlan) {
	for _, ip := range p.sp.ExternalIPs {
		if p.eps.HasAny {
			r.nat.rule(ChainServices, slices.Concat(comment(p.name+" external IP"), p.match(ip.String(), p.sp.Port), []string{"-j", p.extChain})...)
		}
		if !p.hasExternalEndpoints {
			r.filter.rule(ChainExternalServices, slices.Concat(comment(p.externalVerdictComment), p.match(ip.String(), p.sp.Port), []string{"-j", p.externalVerdict})...)
		}
	}
}

func (r *render) writeLoadBalancerEntries(p *servicePlan) {
	for _, ip := range p.sp.LoadBalancerVIPs {
		if p.eps.HasAny {
			r.nat.rule(ChainServices, slices.Concat(comment(p.name+" loadbalancer IP"), p.match(ip.String(), p.sp.Port), []string{"-j", p.lbChain})...)
		}
		if p.usesFWChain {
			r.filter.rule(ChainProxyFirewall, slices.Concat(comment(fmt.Sprintf("%s traffic not accepted by %s", p.name, p.fwChain)), p.match(ip.String(), p.sp.Port), []string{"-j", "DROP"})...)
		}
	}
	if !p.hasExternalEndpoints {
		for _, ip := range p.sp.LoadBalancerVIPs {
			r.filter.rule(ChainExternalServices, slices.Concat(comment(p.externalVerdictComment), p.match(ip.String(), p.sp.Port), []string{"-j", p.externalVerdict})...)
		}
	}
}

func (r *render) writeNodePortEntries(p *servicePlan) {
	if p.sp.NodePort == 0 {
		return
	}
	port := portString(p.sp.NodePort)
	if p.eps.HasAny {
		// NodePorts are not subject to loadBalancerSourceRanges (as in kube-proxy).
		r.nat.rule(ChainNodePorts, slices.Concat(comment(p.name), p.args, []string{"--dport", port, "-j", p.extChain})...)
	}
	if !p.hasExternalEndpoints {
		r.filter.rule(ChainExternalServices, slices.Concat(comment(p.externalVerdictComment),
			[]string{"-m", "addrtype", "--dst-type", "LOCAL"}, p.args, []string{"--dport", port, "-j", p.externalVerdict})...)
	}
}

func (r *render) writeHealthCheckNodePort(p *servicePlan) {
	if p.sp.HealthCheckNodePort == 0 {
		return
	}
	// Accepted whether or not this node has local endpoints: the load
	// balancer must be able to ask.
	r.filter.rule(ChainNodePorts, slices.Concat(comment(p.name+" health check node port"),
		[]string{"-m", "tcp", "-p", "tcp", "--dport", portString(p.sp.HealthCheckNodePort), "-j", "ACCEPT"})...)
}

// writeServiceChains writes the per-service chains (SVC, SVL, EXT, FW, SEP)
// into nat, which is the discard writer when they are unchanged.
func (r *render) writeServiceChains(nat *tableWriter, p *servicePlan) {
	if p.hasInternalEndpoints {
		r.writeInternalMasquerade(nat, p)
	}
	if p.usesExtChain {
		r.use(nat, p.extChain)
		r.writeExternalChain(nat, p)
	}
	if p.usesFWChain {
		r.use(nat, p.fwChain)
		r.writeFirewallChain(nat, p)
	}
	if p.usesClusterChain {
		r.use(nat, p.clusterChain)
		r.writeDispatch(nat, p, p.clusterChain, p.eps.Cluster)
	}
	if p.usesLocalChain {
		r.use(nat, p.localChain)
		r.writeDispatch(nat, p, p.localChain, p.eps.Local)
	}
	for _, ep := range p.eps.Reachable {
		chain := endpointChain(p.sp.Name, ep)
		r.use(nat, chain)
		r.writeEndpointChain(nat, p, chain, ep)
	}
}

// use declares chain and records it as in use, so it is not deleted as stale.
func (r *render) use(nat *tableWriter, chain string) {
	nat.declare(chain)
	r.active[chain] = true
}

// writeInternalMasquerade marks cluster-IP traffic for masquerade when it
// comes from outside the pod network (or always, with --masquerade-all): the
// reply must come back through this node.
func (r *render) writeInternalMasquerade(nat *tableWriter, p *servicePlan) {
	head := slices.Concat(comment(p.name+" cluster IP"), p.match(p.sp.ClusterIP.String(), p.sp.Port))
	if r.cfg.MasqueradeAll {
		nat.rule(p.internalChain, slices.Concat(head, []string{"-j", ChainMarkMasq})...)
	} else if notLocal := r.cfg.LocalDetector.IfNotLocal(); len(notLocal) > 0 {
		nat.rule(p.internalChain, slices.Concat(head, notLocal, []string{"-j", ChainMarkMasq})...)
	}
}

func (r *render) writeExternalChain(nat *tableWriter, p *servicePlan) {
	if !p.sp.ExternalPolicyLocal {
		// Endpoints may be on another node: masquerade so replies return here.
		nat.rule(p.extChain, slices.Concat(comment("masquerade traffic for "+p.name+" external destinations"), []string{"-j", ChainMarkMasq})...)
	} else {
		if local := r.cfg.LocalDetector.IfLocal(); len(local) > 0 {
			// Pod traffic to an external address behaves as if it went out to
			// the load balancer and came back: no traffic policy applies.
			nat.rule(p.extChain, slices.Concat(comment("pod traffic for "+p.name+" external destinations"), local, []string{"-j", p.clusterChain})...)
		}
		// Host-originated traffic has a local source address; it needs
		// masquerade and may use any endpoint.
		nat.rule(p.extChain, slices.Concat(comment("masquerade LOCAL traffic for "+p.name+" external destinations"), []string{"-m", "addrtype", "--src-type", "LOCAL", "-j", ChainMarkMasq})...)
		nat.rule(p.extChain, slices.Concat(comment("route LOCAL traffic for "+p.name+" external destinations"), []string{"-m", "addrtype", "--src-type", "LOCAL", "-j", p.clusterChain})...)
	}
	if p.hasExternalEndpoints {
		nat.rule(p.extChain, "-j", p.externalPolicyChain)
	}
}

func (r *render) writeFirewallChain(nat *tableWriter, p *servicePlan) {
	head := comment(p.name + " loadbalancer IP")
	allowFromNode := false
	for _, cidr := range p.sp.LoadBalancerSourceRanges {
		nat.rule(p.fwChain, slices.Concat(head, []string{"-s", cidr.String(), "-j", p.extChain})...)
		for _, ip := range r.cfg.NodeIPs[:min(1, len(r.cfg.NodeIPs))] {
			allowFromNode = allowFromNode || cidr.Contains(ip)
		}
	}
	if allowFromNode {
		// A VIP bound locally makes node-to-VIP traffic loop back with the
		// VIP as source; let it through.
		for _, ip := range p.sp.LoadBalancerVIPs {
			nat.rule(p.fwChain, slices.Concat(head, []string{"-s", ip.String(), "-j", p.extChain})...)
		}
	}
	// Falling off the end means no DNAT; KUBE-PROXY-FIREWALL then drops it.
	nat.rule(p.fwChain, comment("other traffic to "+p.name+" will be dropped by KUBE-PROXY-FIREWALL")...)
}

// writeDispatch writes the rules of a SVC/SVL chain: session-affinity checks
// first, then one rule per endpoint, rule i taken with probability 1/(n-i).
func (r *render) writeDispatch(nat *tableWriter, p *servicePlan, chain string, endpoints []*model.Endpoint) {
	if p.sp.StickySeconds > 0 {
		for _, ep := range endpoints {
			sep := endpointChain(p.sp.Name, ep)
			nat.rule(chain, slices.Concat(r.endpointComment(p.name+" -> "+ep.String()),
				[]string{"-m", "recent", "--name", sep, "--rcheck", "--seconds", portString(p.sp.StickySeconds), "--reap", "-j", sep})...)
		}
	}
	n := len(endpoints)
	for i, ep := range endpoints {
		args := r.endpointComment(p.name + " -> " + ep.String())
		if i < n-1 {
			args = append(args, "-m", "statistic", "--mode", "random", "--probability", probability(n-i))
		}
		nat.rule(chain, append(args, "-j", endpointChain(p.sp.Name, ep))...)
	}
}

// writeEndpointChain is the shape of a KUBE-SEP chain: masquerade hairpin
// traffic (an endpoint reaching itself through the service), record session
// affinity, then DNAT.
func (r *render) writeEndpointChain(nat *tableWriter, p *servicePlan, chain string, ep *model.Endpoint) {
	head := r.endpointComment(p.name)
	nat.rule(chain, slices.Concat(head, []string{"-s", ep.IP(), "-j", ChainMarkMasq})...)
	if p.sp.StickySeconds > 0 {
		head = slices.Concat(head, []string{"-m", "recent", "--name", chain, "--set"})
	}
	nat.rule(chain, slices.Concat(head, p.args, []string{"-j", "DNAT", "--to-destination", ep.String()})...)
}

// endpointComment drops per-endpoint comments in large clusters, as
// kube-proxy does, to keep restore input small.
func (r *render) endpointComment(text string) []string {
	if r.largeMode {
		return nil
	}
	return comment(text)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
