package ipset

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

func proxyDesired() map[string]Desired {
	return map[string]Desired{
		PodCIDRsSet:  {Type: HashNet, Family: IPv4, Comment: "pod CIDRs", Members: pfx("192.0.2.0/24")},
		PodCIDRsSet6: {Type: HashNet, Family: IPv6, Comment: "pod CIDRs", Members: pfx("2001:db8:1::/48")},
		NoMasqSet:    {Type: HashNet, Family: IPv4, Members: pfx("203.0.113.0/24", "198.51.100.7")},
		NoMasqSet6:   {Type: HashNet, Family: IPv6},
	}
}

func TestSyncSetsCreatesFillsAndIsIdempotent(t *testing.T) {
	f := &Fake{}
	desired := proxyDesired()
	for range 3 {
		if err := SyncSets(f, desired); err != nil {
			t.Fatal(err)
		}
	}
	sets := f.Sets()
	if len(sets) != 4 {
		t.Fatalf("Sets() = %+v", sets)
	}
	for name, d := range desired {
		wantSet, _ := normalizeSet(Set{Name: name, Type: d.Type, Family: d.Family, Comment: d.Comment})
		want, _ := normalizeMembers(d.Type, d.Family, d.Members)
		got := sets[name]
		if got.Set != wantSet || fmt.Sprint(got.Members) != fmt.Sprint(want) {
			t.Errorf("%s = %+v, want %+v with %v", name, got, wantSet, want)
		}
		// One swap to fill a non-empty set, none afterwards.
		if wantSwaps := min(len(want), 1); got.Swaps != wantSwaps {
			t.Errorf("%s swapped %d times, want %d", name, got.Swaps, wantSwaps)
		}
	}
}

func TestSyncSetsRecreatesDestroyedSet(t *testing.T) {
	f := &Fake{}
	desired := proxyDesired()
	if err := SyncSets(f, desired); err != nil {
		t.Fatal(err)
	}
	if err := f.Destroy(PodCIDRsSet); err != nil {
		t.Fatal(err)
	}
	if err := SyncSets(f, desired); err != nil {
		t.Fatal(err)
	}
	wantMembers(t, f, PodCIDRsSet, pfx("192.0.2.0/24"))
}

// racingIface destroys a set right after its EnsureSet, once, like another process would.
type racingIface struct {
	*Fake
	victim string
	done   bool
}

func (r *racingIface) EnsureSet(s Set) error {
	err := r.Fake.EnsureSet(s)
	if s.Name == r.victim && !r.done {
		r.done = true
		_ = r.Fake.Destroy(s.Name)
	}
	return err
}

func TestSyncSetsRetriesSetDestroyedMidSync(t *testing.T) {
	r := &racingIface{Fake: &Fake{}, victim: NoMasqSet}
	if err := SyncSets(r, proxyDesired()); err != nil {
		t.Fatal(err)
	}
	wantMembers(t, r.Fake, NoMasqSet, pfx("198.51.100.7", "203.0.113.0/24"))
}

func TestSyncSetsReportsEveryFailureAndContinues(t *testing.T) {
	f := &Fake{}
	// Someone else owns a same-named set of another type.
	if err := f.EnsureSet(Set{Name: PodCIDRsSet, Type: HashIP}); err != nil {
		t.Fatal(err)
	}
	desired := proxyDesired()
	desired[NoMasqSet] = Desired{Type: HashNet, Members: []netip.Prefix{netip.MustParsePrefix("2001:db8::/32")}}
	err := SyncSets(f, desired)
	if !errors.Is(err, ErrMismatch) || !errors.Is(err, ErrInvalid) {
		t.Fatalf("SyncSets error = %v, want both ErrMismatch and ErrInvalid", err)
	}
	for _, name := range []string{PodCIDRsSet, NoMasqSet} {
		if !strings.Contains(err.Error(), `"`+name+`"`) {
			t.Errorf("error %q does not name %s", err, name)
		}
	}
	// The healthy sets were still synced.
	wantMembers(t, f, PodCIDRsSet6, pfx("2001:db8:1::/48"))
}

func TestCleanup(t *testing.T) {
	f := &Fake{}
	if err := SyncSets(f, proxyDesired()); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"KUBE-CLUSTER-IP", "OTHER", TempName(PodCIDRsSet)} {
		if err := f.EnsureSet(Set{Name: n, Type: HashNet}); err != nil {
			t.Fatal(err)
		}
	}
	f.MarkInUse(PodCIDRsSet)

	if err := Cleanup(f, Prefix); err != nil {
		t.Fatalf("Cleanup = %v; a set in use must be skipped, not fail the cleanup", err)
	}
	names, _ := f.ListSets()
	if fmt.Sprint(names) != fmt.Sprint([]string{"KUBE-CLUSTER-IP", "OTHER", PodCIDRsSet}) {
		t.Errorf("after Cleanup(%q): %v", Prefix, names)
	}

	// Other failures are reported, naming the set, and do not stop the rest.
	boom := errors.New("boom")
	f.FailOn(OpDestroy, "KUBE-CLUSTER-IP", boom)
	if err := f.EnsureSet(Set{Name: "KUBE-OTHER", Type: HashNet}); err != nil {
		t.Fatal(err)
	}
	err := Cleanup(f, "KUBE-")
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "KUBE-CLUSTER-IP") {
		t.Errorf("Cleanup error = %v", err)
	}
	if _, err := f.ListMembers("KUBE-OTHER"); !errors.Is(err, ErrNotFound) {
		t.Errorf("KUBE-OTHER survived Cleanup: %v", err)
	}

	f.FailOn(OpListSets, "", boom)
	if err := Cleanup(f, "KUBE-"); !errors.Is(err, boom) {
		t.Errorf("Cleanup with failing ListSets = %v", err)
	}
	if err := Cleanup(f, ""); !errors.Is(err, ErrInvalid) {
		t.Errorf("Cleanup with empty prefix = %v, want ErrInvalid", err)
	}
}
