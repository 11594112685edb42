package rules_test

import (
	"fmt"
	"strconv"
	"testing"

	"github.com/svcproxy/svcproxy/proxier/model"
	"github.com/svcproxy/svcproxy/proxier/model/testobj"
	"github.com/svcproxy/svcproxy/proxier/rules"
	"github.com/svcproxy/svcproxy/proxier/rules/rulestest"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Micro-benchmarks of rendering restore input (rules.Render); the conversion of
// API objects is benchmarked in proxier/model. No root, no kernel. Run with
//
//	go test -run '^$' -bench . -benchtime 3x ./proxier/rules/ ./proxier/model/
//
// (seconds) or a larger -benchtime for stable numbers. The lab benchmark
// against the real kube-proxy is hack/bench.sh (`make bench`).

const benchEndpointsPerService = 10

// manySnapshot is n IPv4 Services × m endpoints (testobj.Many), for
// benchmarks and tests of large renders.
func manySnapshot(tb testing.TB, n, m int) *model.Snapshot {
	tb.Helper()
	svcs, slices := testobj.Many(n, m)
	snap, err := model.BuildSnapshot(svcs, slices, v1.IPv4Protocol)
	if err != nil {
		tb.Fatal(err)
	}
	return snap
}

// BenchmarkRenderFull: a full sync's restore input for N services × 10
// endpoints. Reports the restore size and the nat rule count.
func BenchmarkRenderFull(b *testing.B) {
	for _, n := range []int{100, 1000, 5000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			snap := manySnapshot(b, n, benchEndpointsPerService)
			cfg := rulestest.NodeConfig()
			b.ReportAllocs()
			b.ResetTimer()
			var out *rules.Rendered
			for i := 0; i < b.N; i++ {
				out = rules.Render(snap, cfg, rules.RenderOptions{Full: true})
			}
			b.ReportMetric(float64(len(out.Data)), "bytes/restore")
			b.ReportMetric(float64(out.NATRules), "nat-rules")
		})
	}
}

// BenchmarkRenderPartial: one service of N changed; only its chains and
// its dispatch bucket are rewritten.
func BenchmarkRenderPartial(b *testing.B) {
	for _, n := range []int{1000, 5000} {
		b.Run(fmt.Sprintf("services=%d/changed=1", n), func(b *testing.B) {
			snap := manySnapshot(b, n, benchEndpointsPerService)
			cfg := rulestest.NodeConfig()
			full := rules.Render(snap, cfg, rules.RenderOptions{Full: true})
			changed := map[types.NamespacedName]bool{{Namespace: "bench", Name: "svc-" + strconv.Itoa(n/2)}: true}
			b.ReportAllocs()
			b.ResetTimer()
			var out *rules.Rendered
			for i := 0; i < b.N; i++ {
				out = rules.Render(snap, cfg, rules.RenderOptions{Changed: changed, Previous: full.Index})
			}
			b.ReportMetric(float64(len(out.Data)), "bytes/restore")
			b.ReportMetric(float64(out.NATRules), "nat-rules")
		})
	}
}
