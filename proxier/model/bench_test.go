package model_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/svcproxy/svcproxy/proxier/model"
	"github.com/svcproxy/svcproxy/proxier/model/testobj"
	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Micro-benchmarks of converting API objects (model.BuildSnapshot,
// model.ChangeTracker.Update). Run with
//
//	go test -run '^$' -bench . -benchtime 3x ./proxier/model/

const benchEndpointsPerService = 10

// BenchmarkBuildSnapshot: converting every Service and EndpointSlice (what
// a full rebuild from the informer caches would cost).
func BenchmarkBuildSnapshot(b *testing.B) {
	for _, n := range []int{1000, 5000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			svcs, slices := testobj.Many(n, benchEndpointsPerService)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := model.BuildSnapshot(svcs, slices, v1.IPv4Protocol); err != nil {
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
		svcs, slices := testobj.Many(n, benchEndpointsPerService)
		now := time.Unix(1_700_000_000, 0)
		b.Run(fmt.Sprintf("services=%d/initial", n), func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				t := model.NewChangeTracker(v1.IPv4Protocol)
				for k, s := range svcs {
					t.ServiceChanged(types.NamespacedName{Namespace: s.Namespace, Name: s.Name}, s, now)
					t.EndpointSliceChanged(slices[k], false, now)
				}
				snap := model.NewSnapshot()
				changed, _, err := t.Update(snap)
				if err != nil || len(changed) != n {
					b.Fatalf("Update: %d changed, %v", len(changed), err)
				}
			}
		})
		b.Run(fmt.Sprintf("services=%d/one-slice", n), func(b *testing.B) {
			t := model.NewChangeTracker(v1.IPv4Protocol)
			for k, s := range svcs {
				t.ServiceChanged(types.NamespacedName{Namespace: s.Namespace, Name: s.Name}, s, now)
				t.EndpointSliceChanged(slices[k], false, now)
			}
			snap := model.NewSnapshot()
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
