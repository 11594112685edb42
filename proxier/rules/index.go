package rules

import (
	"maps"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/types"

	"github.com/svcproxy/svcproxy/proxier/model"
)

// Index describes the rules a render leaves in the kernel, per service port:
// its lines in the shared chains (KUBE-SERVICES or its dispatch bucket,
// KUBE-NODEPORTS, the filter chains), the chains it owns and how many rules
// those hold. A partial render starts from the previous Index and re-plans
// only the changed Services, so its cost follows the change, not the
// cluster. An Index is never modified once returned.
type Index struct {
	layout    Layout
	buckets   int
	largeMode bool
	ports     map[model.ServicePortName]*footprint
	byService map[types.NamespacedName][]model.ServicePortName
	// members lists, per shared chain or dispatch bucket ("table/chain"),
	// the ports with a line in it.
	members map[string]map[model.ServicePortName]bool
	// baseNATRules counts the nat rules outside any port's footprint (the
	// masquerade machinery, dispatch jumps, the jump to KUBE-NODEPORTS).
	baseNATRules int
}

// footprint is what one service port contributes.
type footprint struct {
	entries []entry
	// chains are the nat chains the port owns (KUBE-SVC/SVL/EXT/FW/SEP).
	chains []string
	// ownRules counts the rules in those chains.
	ownRules                         int
	noLocalInternal, noLocalExternal bool
}

// entry is one rule of a port in a shared chain, as restore text.
type entry struct {
	table string // "nat" or "filter"
	chain string // after dispatch: KUBE-SERVICES or a bucket chain
	line  string // "-A CHAIN args\n"
}

func newIndex(layout Layout, buckets int, largeMode bool) *Index {
	return &Index{
		layout: layout, buckets: buckets, largeMode: largeMode,
		ports:     map[model.ServicePortName]*footprint{},
		byService: map[types.NamespacedName][]model.ServicePortName{},
		members:   map[string]map[model.ServicePortName]bool{},
	}
}

// compatible reports whether a partial render may start from ix: the
// shape of every unchanged port's rules must be what it would render now.
func (ix *Index) compatible(layout Layout, buckets int, largeMode bool) bool {
	return ix != nil && ix.layout == layout && ix.buckets == buckets && ix.largeMode == largeMode
}

// clone copies the maps a render changes; footprints are shared, never
// modified.
func (ix *Index) clone() *Index {
	c := *ix
	c.ports = maps.Clone(ix.ports)
	c.byService = maps.Clone(ix.byService)
	c.members = make(map[string]map[model.ServicePortName]bool, len(ix.members))
	for k, v := range ix.members {
		c.members[k] = maps.Clone(v)
	}
	return &c
}

// put records the footprint of a port, replacing what it had.
func (ix *Index) put(name model.ServicePortName, fp *footprint) {
	ix.drop(name)
	ix.ports[name] = fp
	svc := name.NamespacedName
	ix.byService[svc] = append(slices.Clone(ix.byService[svc]), name)
	for _, e := range fp.entries {
		key := e.table + "/" + e.chain
		if ix.members[key] == nil {
			ix.members[key] = map[model.ServicePortName]bool{}
		}
		ix.members[key][name] = true
	}
}

// drop forgets a port.
func (ix *Index) drop(name model.ServicePortName) {
	fp := ix.ports[name]
	if fp == nil {
		return
	}
	delete(ix.ports, name)
	svc := name.NamespacedName
	rest := slices.DeleteFunc(slices.Clone(ix.byService[svc]), func(n model.ServicePortName) bool { return n == name })
	if len(rest) == 0 {
		delete(ix.byService, svc)
	} else {
		ix.byService[svc] = rest
	}
	for _, e := range fp.entries {
		key := e.table + "/" + e.chain
		if m := ix.members[key]; m != nil {
			delete(m, name)
			if len(m) == 0 {
				delete(ix.members, key)
			}
		}
	}
}

// Chains lists, per table ("nat", "filter"), every per-service and
// dispatch chain the rules use: whatever else of ours a table holds is
// stale.
func (ix *Index) Chains() map[string]map[string]bool {
	out := map[string]map[string]bool{"nat": {}, "filter": {}}
	for _, fp := range ix.ports {
		for _, c := range fp.chains {
			out["nat"][c] = true
		}
	}
	for key := range ix.members {
		if table, chain := splitKey(key); isBucketChain(chain) {
			out[table][chain] = true
		}
	}
	return out
}

// Layout is the layout the index was rendered in.
func (ix *Index) Layout() Layout { return ix.layout }

func (ix *Index) natRules() int {
	n := ix.baseNATRules
	for _, fp := range ix.ports {
		n += fp.ownRules
		for _, e := range fp.entries {
			if e.table == "nat" {
				n++
			}
		}
	}
	return n
}

func (ix *Index) noLocalEndpoints() (internal, external int) {
	for _, fp := range ix.ports {
		if fp.noLocalInternal {
			internal++
		}
		if fp.noLocalExternal {
			external++
		}
	}
	return internal, external
}

// nonEmptyBuckets lists the bucket chains of table that hold a rule, sorted.
func (ix *Index) nonEmptyBuckets(table string) []string {
	var out []string
	for key := range ix.members {
		if t, c := splitKey(key); t == table && isBucketChain(c) {
			out = append(out, c)
		}
	}
	slices.Sort(out)
	return out
}

// entriesOf writes the lines of every port in chain key ("table/chain"),
// in port order; a dispatch bucket's lines that jump to a chain go in
// descending order of that chain's name (then port order), the order in
// which the compact layout's restore input writes the chains (see
// tableWriter.writeNFTOrder). A bucket's lines match disjoint
// destinations, so their order does not change what a packet meets.
func (ix *Index) entriesOf(key string, w *tableWriter) {
	table, chain := splitKey(key)
	var lines []string
	for _, name := range sortPortNames(ix.members[key]) {
		for _, e := range ix.ports[name].entries {
			if e.table == table && e.chain == chain {
				lines = append(lines, e.line)
			}
		}
	}
	if isBucketChain(chain) {
		slices.SortStableFunc(lines, func(a, b string) int { return strings.Compare(jumpTarget(b), jumpTarget(a)) })
	}
	for _, line := range lines {
		w.raw(chain, line)
	}
}

func splitKey(key string) (table, chain string) {
	for i := 0; i < len(key); i++ {
		if key[i] == '/' {
			return key[:i], key[i+1:]
		}
	}
	return "", key
}
