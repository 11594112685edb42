package proxier

import (
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
)

// Dropping --masquerade-pod-egress must stop the masquerade: the chain the
// previous run filled (and its jump, which full syncs never remove) would
// otherwise keep masquerading pod egress.
func TestPodEgressChainFlushedWhenTurnedOff(t *testing.T) {
	snap, err := BuildSnapshot(nil, nil, v1.IPv4Protocol)
	if err != nil {
		t.Fatal(err)
	}
	on := &NodeConfig{Family: v1.IPv4Protocol, MasqueradeBit: 14, LocalDetector: DetectBySet(SetPodCIDRs),
		PodEgress: &PodEgressMasquerade{PodSet: SetPodCIDRs}}
	off := &NodeConfig{Family: v1.IPv4Protocol, MasqueradeBit: 14, LocalDetector: DetectBySet(SetPodCIDRs)}
	existing := []string{ChainServices, ChainPodEgress}

	got := string(Render(snap, on, RenderOptions{Full: true, ExistingNATChains: existing}).Data)
	if !strings.Contains(got, "-A "+ChainPodEgress+" ") {
		t.Fatalf("egress on: no rule in %s:\n%s", ChainPodEgress, got)
	}
	for _, full := range []bool{true, false} {
		got = string(Render(snap, off, RenderOptions{Full: full, ExistingNATChains: existing}).Data)
		if !strings.Contains(got, ":"+ChainPodEgress+" - [0:0]\n") || strings.Contains(got, "-A "+ChainPodEgress+" ") {
			t.Errorf("egress off (full=%v), chain exists: want it declared (flushed) and empty:\n%s", full, got)
		}
	}
	got = string(Render(snap, off, RenderOptions{Full: true, ExistingNATChains: []string{ChainServices}}).Data)
	if strings.Contains(got, ChainPodEgress) {
		t.Errorf("egress off, no such chain: nothing to say about it:\n%s", got)
	}
}
