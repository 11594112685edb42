package rules_test

import (
	"strings"
	"testing"

	"github.com/svcproxy/svcproxy/proxier/model"
	"github.com/svcproxy/svcproxy/proxier/rules"
	"github.com/svcproxy/svcproxy/proxier/rules/rulestest"
	v1 "k8s.io/api/core/v1"
)

// Dropping --masquerade-pod-egress must stop the masquerade: the chain the
// previous run filled (and its jump, which full syncs never remove) would
// otherwise keep masquerading pod egress.
func TestPodEgressChainFlushedWhenTurnedOff(t *testing.T) {
	snap, err := model.BuildSnapshot(nil, nil, v1.IPv4Protocol)
	if err != nil {
		t.Fatal(err)
	}
	on := &rules.NodeConfig{Family: v1.IPv4Protocol, MasqueradeBit: 14, LocalDetector: rules.DetectBySet(rulestest.PodSet),
		PodEgress: &rules.PodEgressMasquerade{PodSet: rulestest.PodSet}}
	off := &rules.NodeConfig{Family: v1.IPv4Protocol, MasqueradeBit: 14, LocalDetector: rules.DetectBySet(rulestest.PodSet)}
	existing := []string{rules.ChainServices, rules.ChainPodEgress}

	got := string(rules.Render(snap, on, rules.RenderOptions{Full: true, ExistingNATChains: existing}).Data)
	if !strings.Contains(got, "-A "+rules.ChainPodEgress+" ") {
		t.Fatalf("egress on: no rule in %s:\n%s", rules.ChainPodEgress, got)
	}
	for _, full := range []bool{true, false} {
		got = string(rules.Render(snap, off, rules.RenderOptions{Full: full, ExistingNATChains: existing}).Data)
		if !strings.Contains(got, ":"+rules.ChainPodEgress+" - [0:0]\n") || strings.Contains(got, "-A "+rules.ChainPodEgress+" ") {
			t.Errorf("egress off (full=%v), chain exists: want it declared (flushed) and empty:\n%s", full, got)
		}
	}
	got = string(rules.Render(snap, off, rules.RenderOptions{Full: true, ExistingNATChains: []string{rules.ChainServices}}).Data)
	if strings.Contains(got, rules.ChainPodEgress) {
		t.Errorf("egress off, no such chain: nothing to say about it:\n%s", got)
	}
}
