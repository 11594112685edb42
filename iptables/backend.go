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
var hintChains = [][]byte{[]byte("\n:KUBE-IPTABLES-HINT "), []byte("\n:KUBE-KUBELET-CANARY ")}

// detectBackend chooses between nft and legacy the way kube-proxy's image
// wrapper (iptables-wrapper) does, so svcproxy joins whatever the node
// already uses:
//  1. a backend whose mangle table has kubelet's hint chain wins (nft first);
//  2. otherwise a backend whose rules include KUBE- chains wins, if only one does;
//  3. otherwise the backend with more rules (lines starting "-A"), nft on a tie.
//
// Both families are counted, since they must agree. A save command that
// fails counts as empty.
func detectBackend(ctx context.Context, ex Executor) Backend {
	backends := []Backend{BackendNFT, BackendLegacy}
	for _, b := range backends {
		for _, fam := range []Family{IPv4, IPv6} {
			out, _ := ex.Run(ctx, binary(fam, b, "-save"), []string{"-t", "mangle"}, nil)
			out = append([]byte("\n"), out...)
			for _, hint := range hintChains {
				if bytes.Contains(out, hint) {
					return b
				}
			}
		}
	}
	rules := map[Backend]int{}
	kube := map[Backend]bool{}
	for _, b := range backends {
		for _, fam := range []Family{IPv4, IPv6} {
			out, _ := ex.Run(ctx, binary(fam, b, "-save"), nil, nil)
			for _, line := range bytes.Split(out, []byte("\n")) {
				switch {
				case bytes.HasPrefix(line, []byte("-")):
					rules[b]++
				case bytes.HasPrefix(line, []byte(":KUBE-")):
					kube[b] = true
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
