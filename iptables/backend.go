package iptables

import (
	"bytes"
	"context"
	"fmt"
	"regexp"
	"strconv"
)

// binary returns the name of an iptables tool for a family and backend:
// binary(IPv6, BackendNFT, "-restore") is "ip6tables-nft-restore".
func binary(family Family, backend Backend, suffix string) string {
	prefix := "iptables"
	if family == IPv6 {
		prefix = "ip6tables"
	}
	return prefix + "-" + string(backend) + suffix
}

// hintChains are created in the mangle table by kubelet (and kube-proxy) to
// tell later components which backend the node uses; iptables-wrapper looks
// for them first.
var hintChains = []string{"KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY"}

// kubeChains show that kube-proxy or svcproxy has programmed a backend.
var kubeChains = []struct {
	table Table
	chain string
}{{TableNAT, "KUBE-SERVICES"}, {TableMangle, "KUBE-PROXY-CANARY"}}

// detectionChains are the built-in chains counted when nothing else decides.
var detectionChains = []struct {
	table Table
	chain string
}{
	{TableNAT, "PREROUTING"}, {TableNAT, "OUTPUT"}, {TableNAT, "POSTROUTING"},
	{TableFilter, "INPUT"}, {TableFilter, "FORWARD"}, {TableFilter, "OUTPUT"},
}

// detectBackend chooses between nft and legacy the way kube-proxy's image
// wrapper (iptables-wrapper) does, so svcproxy joins whatever the node
// already uses:
//  1. a backend whose mangle table has kubelet's hint chain wins (nft first);
//  2. otherwise a backend holding kube-proxy's chains wins, if only one does;
//  3. otherwise the backend with more rules in the built-in chains of nat and
//     filter, nft on a tie.
//
// Both families are asked, since they must agree. Unlike iptables-wrapper it
// never saves whole tables: every question is one "iptables -S CHAIN" whose
// cost follows that chain (a whole-table save takes minutes and crashes on a
// node with 100,000 chains). A command that fails counts as "no".
func detectBackend(ctx context.Context, ex Executor) Backend {
	backends := []Backend{BackendNFT, BackendLegacy}
	families := []Family{IPv4, IPv6}
	has := func(b Backend, fam Family, table Table, chain string) bool {
		_, err := ex.Run(ctx, binary(fam, b, ""), []string{"-t", string(table), "-S", chain, "1"}, nil)
		return err == nil
	}
	for _, b := range backends {
		for _, fam := range families {
			for _, hint := range hintChains {
				if has(b, fam, TableMangle, hint) {
					return b
				}
			}
		}
	}
	kube := map[Backend]bool{}
	rules := map[Backend]int{}
	for _, b := range backends {
		for _, fam := range families {
			for _, k := range kubeChains {
				kube[b] = kube[b] || has(b, fam, k.table, k.chain)
			}
			for _, c := range detectionChains {
				out, _ := ex.Run(ctx, binary(fam, b, ""), []string{"-t", string(c.table), "-S", c.chain}, nil)
				rules[b] += bytes.Count(out, []byte("\n-A "))
				if bytes.HasPrefix(out, []byte("-A ")) {
					rules[b]++
				}
			}
		}
	}
	switch {
	case kube[BackendNFT] != kube[BackendLegacy]:
		if kube[BackendLegacy] {
			return BackendLegacy
		}
		return BackendNFT
	case rules[BackendLegacy] > rules[BackendNFT]:
		return BackendLegacy
	default:
		return BackendNFT
	}
}

// version is an iptables version.
type version [3]int

func (v version) atLeast(o version) bool {
	for i := range v {
		if v[i] != o[i] {
			return v[i] > o[i]
		}
	}
	return true
}

var versionRE = regexp.MustCompile(`v(\d+)\.(\d+)\.(\d+)`)

// parseVersion reads "iptables v1.8.9 (nf_tables)" and the like.
func parseVersion(out string) (version, error) {
	m := versionRE.FindStringSubmatch(out)
	if m == nil {
		return version{}, fmt.Errorf("no version in %q", out)
	}
	var v version
	for i := range v {
		v[i], _ = strconv.Atoi(m[i+1])
	}
	return v, nil
}

// randomFullyVersion is the first iptables release with MASQUERADE --random-fully.
var randomFullyVersion = version{1, 6, 2}
