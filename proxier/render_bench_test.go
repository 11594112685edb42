package proxier

import (
	"fmt"
	"net/netip"
	"strconv"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Micro-benchmarks of the pure parts of a sync: converting API objects
// (BuildSnapshot, ChangeTracker.Update) and rendering restore input (Render).
// No root, no kernel. Run with
//
//	go test -run '^$' -bench . -benchtime 3x ./proxier/
//
// (seconds) or a larger -benchtime for stable numbers. The lab benchmark
// against the real kube-proxy is hack/bench.sh (`make bench`).

const benchEndpointsPerService = 10

// benchObjects returns n ClusterIP Services (one TCP port) with one
// EndpointSlice of m endpoints each, spread over two nodes. Service i has
// ClusterIP 10.(i/65536).(i/256).(i%256)+ (only needs to be unique) and its
// endpoints are distinct addresses in 10.128.0.0/9.
func benchObjects(n, m int) ([]*v1.Service, []*discovery.EndpointSlice) {
	svcs := make([]*v1.Service, 0, n)
	slices := make([]*discovery.EndpointSlice, 0, n)
	for i := 0; i < n; i++ {
		name := "svc-" + strconv.Itoa(i)
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		svcs = append(svcs, service("bench", name, ip.String(), port("http", v1.ProtocolTCP, 80)))
		eps := make([]discovery.Endpoint, 0, m)
		for j := 0; j < m; j++ {
			k := i*m + j
			epIP := netip.AddrFrom4([4]byte{10, 128 | byte(k>>16), byte(k >> 8), byte(k)})
			eps = append(eps, endpoint(epIP.String(), onNode("node"+strconv.Itoa(1+j%2))))
		}
		slices = append(slices, slice("bench", name, name+"-1", tcpPort("http", 8080), eps...))
	}
	return svcs, slices
}

func benchSnapshot(b *testing.B, n, m int) *Snapshot {
	b.Helper()
	svcs, slices := benchObjects(n, m)
	snap, err := BuildSnapshot(svcs, slices, v1.IPv4Protocol)
	if err != nil {
		b.Fatal(err)
	}
	return snap
}

// BenchmarkRenderFull: a full sync's restore input for N services × 10
// endpoints. Reports the restore size and the nat rule count.
func BenchmarkRenderFull(b *testing.B) {
	for _, n := range []int{100, 1000, 5000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			snap := benchSnapshot(b, n, benchEndpointsPerService)
			cfg := testNodeConfig()
			b.ReportAllocs()
			b.ResetTimer()
			var out *Rendered
			for i := 0; i < b.N; i++ {
				out = Render(snap, cfg, RenderOptions{Full: true})
			}
			b.ReportMetric(float64(len(out.Data)), "bytes/restore")
			b.ReportMetric(float64(out.NATRules), "nat-rules")
		})
	}
}

// BenchmarkRenderPartial: one service of N changed; only its chains are
// rewritten, but KUBE-SERVICES is written in full (as in kube-proxy).
func BenchmarkRenderPartial(b *testing.B) {
	for _, n := range []int{1000, 5000} {
		b.Run(fmt.Sprintf("services=%d/changed=1", n), func(b *testing.B) {
			snap := benchSnapshot(b, n, benchEndpointsPerService)
			cfg := testNodeConfig()
			full := Render(snap, cfg, RenderOptions{Full: true})
			existing := make([]string, 0, len(full.ActiveNATChains))
			for c := range full.ActiveNATChains {
				existing = append(existing, c)
			}
			changed := map[types.NamespacedName]bool{{Namespace: "bench", Name: "svc-" + strconv.Itoa(n/2)}: true}
			b.ReportAllocs()
			b.ResetTimer()
			var out *Rendered
			for i := 0; i < b.N; i++ {
				out = Render(snap, cfg, RenderOptions{Changed: changed, ExistingNATChains: existing})
			}
			b.ReportMetric(float64(len(out.Data)), "bytes/restore")
			b.ReportMetric(float64(out.NATRules), "nat-rules")
		})
	}
}

// BenchmarkBuildSnapshot: converting every Service and EndpointSlice (what
// a full rebuild from the informer caches would cost).
func BenchmarkBuildSnapshot(b *testing.B) {
	for _, n := range []int{1000, 5000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			svcs, slices := benchObjects(n, benchEndpointsPerService)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := BuildSnapshot(svcs, slices, v1.IPv4Protocol); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkChangeTrackerUpdate: the incremental path. "initial" feeds N
// services and slices into an empty tracker and snapshot (the first sync);
// "one-slice" records one changed EndpointSlice of N and applies it.
func BenchmarkChangeTrackerUpdate(b *testing.B) {
	for _, n := range []int{1000, 5000} {
		svcs, slices := benchObjects(n, benchEndpointsPerService)
		now := time.Unix(1_700_000_000, 0)
		b.Run(fmt.Sprintf("services=%d/initial", n), func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				t := NewChangeTracker(v1.IPv4Protocol)
				for k, s := range svcs {
					t.ServiceChanged(types.NamespacedName{Namespace: s.Namespace, Name: s.Name}, s, now)
					t.EndpointSliceChanged(slices[k], false, now)
				}
				snap := &Snapshot{Services: map[ServicePortName]*ServicePort{}, Endpoints: map[ServicePortName][]*Endpoint{}}
				changed, _, err := t.Update(snap)
				if err != nil || len(changed) != n {
					b.Fatalf("Update: %d changed, %v", len(changed), err)
				}
			}
		})
		b.Run(fmt.Sprintf("services=%d/one-slice", n), func(b *testing.B) {
			t := NewChangeTracker(v1.IPv4Protocol)
			for k, s := range svcs {
				t.ServiceChanged(types.NamespacedName{Namespace: s.Namespace, Name: s.Name}, s, now)
				t.EndpointSliceChanged(slices[k], false, now)
			}
			snap := &Snapshot{Services: map[ServicePortName]*ServicePort{}, Endpoints: map[ServicePortName][]*Endpoint{}}
			if _, _, err := t.Update(snap); err != nil {
				b.Fatal(err)
			}
			// Two versions of one slice, alternated so every update is a real change.
			base := slices[n/2]
			alt := base.DeepCopy()
			alt.Endpoints[0].Addresses = []string{"10.255.255.254"}
			versions := []*discovery.EndpointSlice{alt, base}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if !t.EndpointSliceChanged(versions[i%2], false, now) {
					b.Fatal("no change recorded")
				}
				changed, _, err := t.Update(snap)
				if err != nil || len(changed) != 1 {
					b.Fatalf("Update: %d changed, %v", len(changed), err)
				}
			}
		})
	}
}
