package rules

import (
	"fmt"
	"net/netip"
	"strings"
)

// The dispatch tree. kube-proxy's KUBE-SERVICES holds one rule per service
// IP and port, so a new connection walks it rule by rule: at 10,000 Services
// the last one costs about three times the first, and every change rewrites
// all of it. In the compact layout, above DispatchThreshold service ports,
// KUBE-SERVICES instead holds one rule per non-empty bucket, and each
// bucket chain holds the rules of the destinations in it. A destination's
// bucket is the low bits of its address (cluster IPs are allocated at
// random or in sequence; either way the low bits spread evenly), matched
// with an address mask ("-d 0.0.0.37/0.0.0.127"), so a bucket never depends
// on which other Services exist and a change rewrites one bucket.

// DispatchThreshold is the number of service ports above which the compact
// layout dispatches KUBE-SERVICES through buckets.
const DispatchThreshold = 256

// dispatchThreshold is DispatchThreshold; tests lower it to see dispatch
// on small inputs.
var dispatchThreshold = DispatchThreshold

// Bucket counts stay powers of two within these bounds.
const (
	minBuckets = 16
	maxBuckets = 1024
)

// prefixBucket names dispatch bucket chains: KUBE-DISPATCH-<bucket in
// hex>. It sorts before every other chain of ours, which keeps iptables-nft's
// restore fast (see tableWriter.writeNFTOrder).
const prefixBucket = "KUBE-DISPATCH-"

// prefixBucketBefore named the buckets before 2026-12 (KUBE-SVCS-<hex>):
// a node upgraded from such a version deletes them as stale chains.
const prefixBucketBefore = "KUBE-SVCS-"

// dispatchBuckets is how many buckets KUBE-SERVICES dispatches to (0: it is
// flat). The ideal is about √n, so a connection walks about 2√n rules;
// the previous count is kept while it stays within a factor of two of the
// ideal, so that a cluster hovering at a boundary does not flip between
// widths (each flip is a full rewrite).
func dispatchBuckets(layout Layout, ports int, prev *Index) int {
	if layout != LayoutCompact || ports <= dispatchThreshold {
		return 0
	}
	ideal := minBuckets
	for ideal < maxBuckets && ideal*ideal < ports {
		ideal *= 2
	}
	if prev != nil && prev.layout == layout && prev.buckets >= ideal/2 && prev.buckets <= ideal*2 && prev.buckets >= minBuckets {
		return prev.buckets
	}
	return ideal
}

// bucketOf is the bucket of a destination: its address's low bits.
func bucketOf(ip netip.Addr, buckets int) int {
	b := ip.As16()
	low := int(b[14])<<8 | int(b[15])
	return low & (buckets - 1)
}

// bucketChain names bucket k's chain.
func bucketChain(k, buckets int) string {
	width := len(fmt.Sprintf("%X", buckets-1))
	return fmt.Sprintf("%s%0*X", prefixBucket, width, k)
}

func isBucketChain(chain string) bool { return strings.HasPrefix(chain, prefixBucket) }

// bucketMatch is "-d VALUE/MASK" matching the destinations of bucket k.
func bucketMatch(k, buckets int, ipv6 bool) []string {
	mask := buckets - 1
	if ipv6 {
		return []string{"-d", fmt.Sprintf("::%x/::%x", k, mask)}
	}
	return []string{"-d", fmt.Sprintf("%s/%s", lowBitsV4(k), lowBitsV4(mask))}
}

func lowBitsV4(v int) string {
	return netip.AddrFrom4([4]byte{0, 0, byte(v >> 8), byte(v)}).String()
}
