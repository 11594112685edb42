package ipset

import (
	"errors"
	"slices"
	"testing"
)

func TestFakeReplaceIsAtomicAndCountsSwaps(t *testing.T) {
	f := NewFake()
	if err := f.EnsureSet(Set{Name: PodCIDRsSet, Type: HashNet, Comment: "pod CIDRs"}); err != nil {
		t.Fatal(err)
	}
	if err := f.ReplaceMembers(PodCIDRsSet, pfx("192.0.2.0/24")); err != nil {
		t.Fatal(err)
	}
	// Same members again: no swap.
	if err := f.ReplaceMembers(PodCIDRsSet, pfx("192.0.2.1/24")); err != nil {
		t.Fatal(err)
	}
	if n := f.Sets()[PodCIDRsSet].Swaps; n != 1 {
		t.Errorf("Swaps = %d, want 1 (the second replace was a no-op)", n)
	}

	// An injected failure changes nothing and is sticky until cleared.
	boom := errors.New("boom")
	f.FailOn(OpReplace, PodCIDRsSet, boom)
	for range 2 {
		wantErr(t, "injected replace", f.ReplaceMembers(PodCIDRsSet, pfx("198.51.100.0/24")), boom, PodCIDRsSet)
	}
	wantMembers(t, f, PodCIDRsSet, pfx("192.0.2.0/24"))
	f.FailOn(OpReplace, PodCIDRsSet, nil)
	if err := f.ReplaceMembers(PodCIDRsSet, pfx("198.51.100.0/24")); err != nil {
		t.Fatal(err)
	}

	// An empty name matches every set.
	f.FailOn(OpList, "", boom)
	_, err := f.ListMembers(PodCIDRsSet)
	wantErr(t, "injected list", err, boom, PodCIDRsSet)
	f.FailOn(OpList, "", nil)
	f.FailOn(OpListSets, "ignored", boom)
	if _, err := f.ListSets(); !errors.Is(err, boom) {
		t.Errorf("ListSets() = %v, want injected error", err)
	}
	f.FailOn(OpListSets, "", nil)
	if _, err := f.ListSets(); err != nil {
		t.Errorf("ListSets() after clearing = %v", err)
	}
}

func TestFakeSetsIsASnapshot(t *testing.T) {
	f := &Fake{}
	if err := f.EnsureSet(Set{Name: NoMasqSet6, Type: HashNet, Family: IPv6}); err != nil {
		t.Fatal(err)
	}
	if err := f.ReplaceMembers(NoMasqSet6, pfx("2001:db8::/32")); err != nil {
		t.Fatal(err)
	}
	snap := f.Sets()
	snap[NoMasqSet6].Members[0] = pfx("2001:db8:ffff::/48")[0]
	wantMembers(t, f, NoMasqSet6, pfx("2001:db8::/32"))
	got := f.Sets()[NoMasqSet6]
	if got.Set != (Set{Name: NoMasqSet6, Type: HashNet, Family: IPv6}) || got.InUse {
		t.Errorf("Sets()[%s] = %+v", NoMasqSet6, got)
	}
	f.MarkInUse(NoMasqSet6)
	f.MarkInUse("SVCPROXY-NOPE") // no effect on a missing set
	if !f.Sets()[NoMasqSet6].InUse || len(f.Sets()) != 1 {
		t.Errorf("Sets() = %+v", f.Sets())
	}
}

func TestFakeDump(t *testing.T) {
	f := &Fake{}
	for _, s := range []Set{
		{Name: PodCIDRsSet, Type: HashNet, Comment: "pod CIDRs"},
		{Name: NoMasqSet, Type: HashNet},
	} {
		if err := f.EnsureSet(s); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.ReplaceMembers(PodCIDRsSet, pfx("198.51.100.7", "192.0.2.0/24")); err != nil {
		t.Fatal(err)
	}
	if err := f.ReplaceMembers(NoMasqSet, pfx("203.0.113.0/24")); err != nil {
		t.Fatal(err)
	}
	want := `create SVCPROXY-NO-MASQ hash:net family inet
add SVCPROXY-NO-MASQ 203.0.113.0/24
create SVCPROXY-POD-CIDRS hash:net family inet comment
add SVCPROXY-POD-CIDRS 192.0.2.0/24 comment "pod CIDRs"
add SVCPROXY-POD-CIDRS 198.51.100.7 comment "pod CIDRs"
`
	if got := f.Dump(); got != want {
		t.Errorf("Dump() =\n%s\nwant\n%s", got, want)
	}
	if names, _ := f.ListSets(); !slices.Equal(names, []string{NoMasqSet, PodCIDRsSet}) {
		t.Errorf("ListSets() = %v", names)
	}
}
