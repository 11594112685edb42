package rules

import (
	"maps"
	"slices"
	"strconv"

	"github.com/svcproxy/svcproxy/iptables"
	"github.com/svcproxy/svcproxy/proxier/model"
)

// ChainPodEgress holds svcproxy's optional pod egress masquerade rule.
const ChainPodEgress = "SVCPROXY-POD-EGRESS"

// sharedChains are the chains every port may have a line in. They are
// rewritten whole on every render (except dispatch buckets, below).
var sharedChains = []struct{ table, chain string }{
	{"nat", ChainServices}, {"nat", ChainNodePorts},
	{"filter", ChainServices}, {"filter", ChainExternalServices}, {"filter", ChainNodePorts}, {"filter", ChainProxyFirewall},
}

// writeSharedChains writes the ports' lines into the shared chains, in port
// order: the flat chains whole; the dispatch buckets all (full render) or
// those a changed port has or had a line in; then the jumps to the
// non-empty buckets, and the jump to KUBE-NODEPORTS last.
func (r *render) writeSharedChains(full bool, old map[model.ServicePortName]*footprint) {
	writers := map[string]*tableWriter{"nat": r.nat, "filter": r.filter}
	for _, sc := range sharedChains {
		r.index.entriesOf(sc.table+"/"+sc.chain, writers[sc.table])
	}
	for _, key := range r.bucketsToWrite(full, old) {
		table, chain := splitKey(key)
		writers[table].declare(chain)
		r.index.entriesOf(key, writers[table])
	}
	before := r.nat.lines
	for _, table := range []string{"filter", "nat"} {
		for _, chain := range r.index.nonEmptyBuckets(table) {
			k := bucketNumber(chain)
			writers[table].rule(ChainServices, slices.Concat(comment("services dispatch "+chain[len(prefixBucket):]),
				bucketMatch(k, r.index.buckets, r.cfg.isIPv6()), []string{"-j", chain})...)
		}
	}
	r.writeNodePortsJump()
	r.index.baseNATRules += r.nat.lines - before
}

// bucketsToWrite lists the dispatch buckets ("table/chain") to rewrite:
// every non-empty one on a full render; otherwise those a changed port has
// or had a line in, if still non-empty (an emptied bucket's jump goes away
// with the rewritten KUBE-SERVICES, and the bucket is left to be deleted).
func (r *render) bucketsToWrite(full bool, old map[model.ServicePortName]*footprint) []string {
	set := map[string]bool{}
	if full {
		for key := range r.index.members {
			if _, chain := splitKey(key); isBucketChain(chain) {
				set[key] = true
			}
		}
	} else {
		for name, fp := range old {
			for _, f := range []*footprint{fp, r.index.ports[name]} {
				if f == nil {
					continue
				}
				for _, e := range f.entries {
					if key := e.table + "/" + e.chain; isBucketChain(e.chain) && r.index.members[key] != nil {
						set[key] = true
					}
				}
			}
		}
	}
	keys := slices.Collect(maps.Keys(set))
	slices.Sort(keys)
	return keys
}

// unreferenced lists, per table, the chains of ours a partial render stopped
// using: the changed ports' old chains they no longer have, and buckets
// left empty.
func (r *render) unreferenced(old map[model.ServicePortName]*footprint, full bool) map[string][]string {
	if full {
		return nil
	}
	out := map[string][]string{}
	// A port's own chains are named after it alone, so only the changed
	// ports' new footprints can still use their old chains.
	stillUsed := map[string]bool{}
	for name := range old {
		if fp := r.index.ports[name]; fp != nil {
			for _, c := range fp.chains {
				stillUsed[c] = true
			}
		}
	}
	seen := map[string]bool{}
	for _, fp := range old {
		if fp == nil {
			continue
		}
		for _, c := range fp.chains {
			if !stillUsed[c] && !seen["nat/"+c] {
				seen["nat/"+c] = true
				out["nat"] = append(out["nat"], c)
			}
		}
		for _, e := range fp.entries {
			if key := e.table + "/" + e.chain; isBucketChain(e.chain) && r.index.members[key] == nil && !seen[key] {
				seen[key] = true
				out[e.table] = append(out[e.table], e.chain)
			}
		}
	}
	for _, list := range out {
		slices.Sort(list)
	}
	return out
}

// writeBaseChains declares the top-level chains and writes the masquerade
// machinery: KUBE-MARK-MASQ sets the bit; KUBE-POSTROUTING masquerades (and
// clears the bit on) marked packets only.
func (r *render) writeBaseChains() {
	for _, c := range []string{ChainServices, ChainExternalServices, ChainForward, ChainNodePorts, ChainProxyFirewall} {
		r.filter.declare(c)
	}
	for _, c := range []string{ChainServices, ChainNodePorts, ChainPostrouting, ChainMarkMasq} {
		r.nat.declare(c)
	}
	r.writeForwardRules()
	mark := r.mark + "/" + r.mark
	r.nat.rule(ChainPostrouting, "-m", "mark", "!", "--mark", mark, "-j", "RETURN")
	// Clear the bit so a packet that re-traverses the stack is not masqueraded twice.
	r.nat.rule(ChainPostrouting, "-j", "MARK", "--xor-mark", r.mark)
	masq := append(comment("kubernetes service traffic requiring SNAT"), "-j", "MASQUERADE")
	if r.cfg.RandomFully {
		masq = append(masq, "--random-fully")
	}
	r.nat.rule(ChainPostrouting, masq...)
	r.nat.rule(ChainMarkMasq, "-j", "MARK", "--or-mark", r.mark)

	if r.cfg.LocalhostNodePortsPossible() {
		// route_localnet opens 127.0.0.1 NodePorts to the network
		// (kubernetes#90259); this is kubelet's identical mitigation.
		r.filter.declare(ChainKubeletFirewall)
		r.filter.rule(ChainKubeletFirewall, slices.Concat(comment("block incoming localnet connections"),
			[]string{"-d", "127.0.0.0/8", "!", "-s", "127.0.0.0/8", "-m", "conntrack", "!", "--ctstate", "RELATED,ESTABLISHED,DNAT", "-j", "DROP"})...)
	}
	if r.cfg.PodEgress != nil {
		r.writePodEgress(r.cfg.PodEgress)
	}
}

// flushPodEgressIfOff empties the pod egress chain when pod egress is off
// but the chain exists (the flag was dropped since the last run): its jump
// from POSTROUTING stays, harmlessly, until svcproxy cleanup.
func (r *render) flushPodEgressIfOff(existing []string) {
	if r.cfg.PodEgress == nil && slices.Contains(existing, ChainPodEgress) {
		r.nat.declare(ChainPodEgress)
	}
}

// writeNodePortsJump ends KUBE-SERVICES with the jump to KUBE-NODEPORTS for
// traffic to this node's own addresses. It must stay the last rule.
func (r *render) writeNodePortsJump() {
	note := comment("kubernetes service nodeports; NOTE: this must be the last rule in this chain")
	if r.cfg.NodePortAddresses == nil {
		dst := []string{"-m", "addrtype", "--dst-type", "LOCAL"}
		if r.cfg.isIPv6() {
			dst = append(dst, "!", "-d", "::1/128")
		} else if !r.cfg.LocalhostNodePorts {
			dst = append(dst, "!", "-d", "127.0.0.0/8")
		}
		r.nat.rule(ChainServices, slices.Concat(note, dst, []string{"-j", ChainNodePorts})...)
		return
	}
	for _, ip := range r.cfg.NodePortAddresses {
		if ip.IsLoopback() && (r.cfg.isIPv6() || !r.cfg.LocalhostNodePorts) {
			continue // localhost NodePorts are impossible on IPv6 and off by flag on IPv4
		}
		r.nat.rule(ChainServices, slices.Concat(note, []string{"-d", ip.String(), "-j", ChainNodePorts})...)
	}
}

// writeForwardRules lets marked (NodePort) traffic and its replies through a
// FORWARD chain whose policy may be DROP.
func (r *render) writeForwardRules() {
	if !r.cfg.ConntrackTCPLiberal {
		// INVALID packets would otherwise reset connections (kubernetes#74839).
		r.filter.rule(ChainForward, slices.Concat([]string{"-m", "conntrack", "--ctstate", "INVALID"},
			r.cfg.countInto(iptables.NFAcctInvalidDropped), []string{"-j", "DROP"})...)
	}
	r.filter.rule(ChainForward, slices.Concat(comment("kubernetes forwarding rules"),
		[]string{"-m", "mark", "--mark", r.mark + "/" + r.mark, "-j", "ACCEPT"})...)
	r.filter.rule(ChainForward, slices.Concat(comment("kubernetes forwarding conntrack rule"),
		[]string{"-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"})...)
}

// writePodEgress masquerades traffic from pods to destinations outside the
// pod network (and outside the no-masquerade set).
func (r *render) writePodEgress(pe *PodEgressMasquerade) {
	const chain = ChainPodEgress
	r.nat.declare(chain)
	r.nat.rule(chain, slices.Concat(comment("pod egress leaves the pod network through the node address"),
		[]string{"-m", "set", "--match-set", pe.PodSet, "src", "-m", "set", "!", "--match-set", pe.PodSet, "dst"},
		noMasqMatch(pe.NoMasqSet), masqueradeTarget(r.cfg.RandomFully))...)
}

func noMasqMatch(set string) []string {
	if set == "" {
		return nil
	}
	return []string{"-m", "set", "!", "--match-set", set, "dst"}
}

func masqueradeTarget(randomFully bool) []string {
	if randomFully {
		return []string{"-j", "MASQUERADE", "--random-fully"}
	}
	return []string{"-j", "MASQUERADE"}
}

// bucketNumber reads k back from a bucket chain's name.
func bucketNumber(chain string) int {
	k, _ := strconv.ParseInt(chain[len(prefixBucket):], 16, 32)
	return int(k)
}
