package rules_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/svcproxy/svcproxy/proxier/rules"
	"github.com/svcproxy/svcproxy/proxier/rules/rulestest"
)

// `svcproxy dump --sorted`: the compact layout's restore text, re-ordered
// for reading, is what sorted rendering writes, byte for byte.
func TestSortedEqualsSortedRendering(t *testing.T) {
	snap := manySnapshot(t, 400, 3)
	cfg := rulestest.NodeConfig()
	nft := rules.Render(snap, cfg, rules.RenderOptions{Full: true}).Data
	restore := rules.SetNFTOrder(false)
	want := rules.Render(snap, cfg, rules.RenderOptions{Full: true}).Data
	restore()
	if string(nft) == string(want) {
		t.Fatal("the compact layout's order is already sorted: the test sees nothing")
	}
	got := rules.Sorted(nft)
	if string(got) != string(want) {
		t.Errorf("Sorted differs from sorted rendering:\n%s", firstDiff(string(got), string(want)))
	}
	// Idempotent.
	if again := rules.Sorted(got); string(again) != string(got) {
		t.Error("Sorted of sorted text changed it")
	}
}

func firstDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := range min(len(al), len(bl)) {
		if al[i] != bl[i] {
			return fmt.Sprintf("line %d: got  %s\n         want %s", i+1, al[i], bl[i])
		}
	}
	if !slices.Equal(al, bl) {
		return "lengths differ"
	}
	return ""
}
