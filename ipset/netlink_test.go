package ipset

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// newTestSets returns netlinkSets over memOps with one live hash:net set, already filled.
func newTestSets(t *testing.T, name string, members ...string) (*netlinkSets, *memOps) {
	t.Helper()
	m := newMemOps()
	r := newNetlinkSets(m)
	if err := r.EnsureSet(Set{Name: name, Type: HashNet, Comment: "pods"}); err != nil {
		t.Fatal(err)
	}
	if err := r.ReplaceMembers(name, pfx(members...)); err != nil {
		t.Fatal(err)
	}
	m.calls = nil
	return r, m
}

func TestTempName(t *testing.T) {
	for _, name := range []string{"S", PodCIDRsSet6, strings.Repeat("A", 27)} {
		if got := TempName(name); got != name+"-tmp" {
			t.Errorf("TempName(%q) = %q, want %q", name, got, name+"-tmp")
		}
	}
	seen := map[string]string{}
	for _, name := range []string{
		strings.Repeat("A", 28),
		strings.Repeat("A", 31),
		"SVCPROXY-A-RATHER-LONG-NAME-31X",
		"SVCPROXY-A-RATHER-LONG-NAME-31Y",
		"SVCPROXY-A-RATHER-LONG-NAME-3",
	} {
		got := TempName(name)
		if len(got) != MaxNameLen || !strings.HasPrefix(got, name[:18]) || !strings.HasSuffix(got, "-tmp") {
			t.Errorf("TempName(%q) = %q (%d bytes), want 31 bytes: first 18 of the name, hash, -tmp", name, got, len(got))
		}
		if prev, dup := seen[got]; dup {
			t.Errorf("TempName(%q) = TempName(%q) = %q", name, prev, got)
		}
		seen[got] = name
		if got != TempName(name) {
			t.Errorf("TempName(%q) is not deterministic", name)
		}
	}
}

func TestFamilyName(t *testing.T) {
	if got := FamilyName(PodCIDRsSet, IPv6); got != PodCIDRsSet6 {
		t.Errorf("FamilyName(PodCIDRsSet, IPv6) = %q", got)
	}
	if got := FamilyName(NoMasqSet, IPv4); got != NoMasqSet {
		t.Errorf("FamilyName(NoMasqSet, IPv4) = %q", got)
	}
	if FamilyName(NoMasqSet, IPv6) != NoMasqSet6 {
		t.Errorf("NoMasqSet6 mismatch")
	}
	for _, n := range []string{PodCIDRsSet, PodCIDRsSet6, NoMasqSet, NoMasqSet6} {
		if !strings.HasPrefix(n, Prefix) || validateName(n) != nil || !strings.HasPrefix(TempName(n), Prefix) {
			t.Errorf("set name %q: want a valid name under Prefix with a temp name under Prefix", n)
		}
	}
}

func TestNormalizeMembers(t *testing.T) {
	for _, tc := range []struct {
		typ     SetType
		fam     Family
		in      []netip.Prefix
		want    []netip.Prefix
		wantErr string
	}{
		{HashNet, IPv4, pfx("198.51.100.9/24", "192.0.2.1", "198.51.100.0/24"), pfx("192.0.2.1/32", "198.51.100.0/24"), ""},
		{HashNet, IPv4, pfx("192.0.2.0/24", "192.0.2.0/25"), pfx("192.0.2.0/24", "192.0.2.0/25"), ""},
		{HashNet, IPv4, nil, []netip.Prefix{}, ""},
		{HashNet, IPv6, pfx("2001:db8::1/64"), pfx("2001:db8::/64"), ""},
		{HashNet, IPv4, pfx("2001:db8::/64"), nil, "does not belong in a inet set"},
		{HashNet, IPv6, pfx("192.0.2.0/24"), nil, "does not belong in a inet6 set"},
		{HashNet, IPv4, pfx("0.0.0.0/0"), nil, "cannot hold a /0"},
		{HashNet, IPv6, pfx("::ffff:192.0.2.0/120"), nil, "IPv4-mapped"},
		{HashIP, IPv4, pfx("192.0.2.0/31"), nil, "only host addresses"},
		{HashIP, IPv6, pfx("2001:db8::2", "2001:db8::1"), pfx("2001:db8::1/128", "2001:db8::2/128"), ""},
		{HashNet, IPv4, []netip.Prefix{{}}, nil, "invalid prefix"},
	} {
		got, err := normalizeMembers(tc.typ, tc.fam, tc.in)
		if tc.wantErr != "" {
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("normalizeMembers(%s %s, %v) error = %v, want ErrInvalid containing %q", tc.typ, tc.fam, tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("normalizeMembers(%s %s, %v) = %v, %v; want %v", tc.typ, tc.fam, tc.in, got, err, tc.want)
		}
	}
}

func TestReplaceOrder(t *testing.T) {
	r, m := newTestSets(t, "S", "192.0.2.0/24")
	// The live set must never be written to except by the swap: record its entries at every call.
	var liveStates [][]string
	m.onCall = func(string) { liveStates = append(liveStates, m.entries("S")) }

	if err := r.ReplaceMembers("S", pfx("198.51.100.0/24", "192.0.2.0/24")); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"list S",
		"destroy S-tmp",
		"create S-tmp hash:net",
		"add S-tmp 192.0.2.0/24",
		"add S-tmp 198.51.100.0/24",
		"swap S-tmp S",
		"destroy S-tmp",
	}
	if !slices.Equal(m.calls, want) {
		t.Errorf("calls:\n  %s\nwant:\n  %s", strings.Join(m.calls, "\n  "), strings.Join(want, "\n  "))
	}
	old, next := []string{"192.0.2.0/24 pods"}, []string{"192.0.2.0/24 pods", "198.51.100.0/24 pods"}
	for i, s := range liveStates {
		if !slices.Equal(s, old) && !slices.Equal(s, next) {
			t.Errorf("before call %d the live set held %v: neither the old nor the new membership", i, s)
		}
	}
	if got := m.entries("S"); !slices.Equal(got, next) {
		t.Errorf("live set = %v, want %v", got, next)
	}
	if _, ok := m.sets["S-tmp"]; ok {
		t.Error("temporary set left behind")
	}
}

func TestReplaceNoop(t *testing.T) {
	r, m := newTestSets(t, "S", "192.0.2.0/24", "198.51.100.7")
	// Same members, different order, unmasked, duplicated: nothing to do.
	if err := r.ReplaceMembers("S", pfx("198.51.100.7/32", "192.0.2.9/24", "192.0.2.0/24")); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(m.calls, []string{"list S"}) {
		t.Errorf("no-op replace made calls %v, want only the list", m.calls)
	}
}

func TestReplaceKeepsHeaderAndComment(t *testing.T) {
	m := newMemOps()
	// A set created by an earlier process: comments on, a maxelem, a comment on its entries.
	m.sets["S"] = &memSet{typ: "hash:net", opts: netlink.IpsetCreateOptions{Family: unix.AF_INET, Revision: 7, Comments: true, MaxElements: 2},
		entries: []netlink.IPSetEntry{{IP: []byte{192, 0, 2, 0}, CIDR: 24, Comment: "from before"}}}
	r := newNetlinkSets(m)
	if err := r.ReplaceMembers("S", pfx("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")); err != nil {
		t.Fatal(err)
	}
	s := m.sets["S"]
	if s.opts.Revision != 7 || !s.opts.Comments || s.opts.Family != unix.AF_INET || s.opts.MaxElements != 3 {
		t.Errorf("swapped-in set options = %+v; want the live set's revision, family and comments, maxelem raised to 3", s.opts)
	}
	if got := m.entries("S"); !slices.Equal(got, []string{"192.0.2.0/24 from before", "198.51.100.0/24 from before", "203.0.113.0/24 from before"}) {
		t.Errorf("entries = %v", got)
	}

	// After EnsureSet, its Comment wins.
	if err := r.EnsureSet(Set{Name: "S", Type: HashNet, Comment: "pod CIDRs"}); err != nil {
		t.Fatal(err)
	}
	if err := r.ReplaceMembers("S", pfx("192.0.2.0/24")); err != nil {
		t.Fatal(err)
	}
	if got := m.entries("S"); !slices.Equal(got, []string{"192.0.2.0/24 pod CIDRs"}) {
		t.Errorf("entries = %v", got)
	}
}

func TestReplaceRemovesLeftoverTemp(t *testing.T) {
	r, m := newTestSets(t, "S", "192.0.2.0/24")
	// A crash between create and swap left a half-filled temporary set.
	m.sets["S-tmp"] = &memSet{typ: "hash:net", opts: netlink.IpsetCreateOptions{Family: unix.AF_INET},
		entries: []netlink.IPSetEntry{{IP: []byte{203, 0, 113, 0}, CIDR: 24}}}
	if err := r.ReplaceMembers("S", pfx("198.51.100.0/24")); err != nil {
		t.Fatal(err)
	}
	if got := m.entries("S"); !slices.Equal(got, []string{"198.51.100.0/24 pods"}) {
		t.Errorf("live set = %v", got)
	}
	if _, ok := m.sets["S-tmp"]; ok {
		t.Error("temporary set left behind")
	}

	// If the leftover cannot be destroyed, the replace fails before touching anything.
	m.sets["S-tmp"] = &memSet{typ: "hash:net", opts: netlink.IpsetCreateOptions{Family: unix.AF_INET}, refs: 1}
	err := r.ReplaceMembers("S", pfx("203.0.113.0/24"))
	wantErr(t, "replace with a referenced leftover", err, ErrInUse, "S")
	if !strings.Contains(err.Error(), `"S-tmp"`) {
		t.Errorf("error %q does not name the temporary set", err)
	}
	if got := m.entries("S"); !slices.Equal(got, []string{"198.51.100.0/24 pods"}) {
		t.Errorf("live set changed to %v", got)
	}
}

func TestReplaceFailuresLeaveLiveSetAlone(t *testing.T) {
	injected := nl.IPSetError(nl.IPSET_ERR_INVALID_CIDR)
	for _, key := range []string{"create S-tmp", "add S-tmp", "swap S-tmp"} {
		t.Run(key, func(t *testing.T) {
			r, m := newTestSets(t, "S", "192.0.2.0/24")
			m.fail[key] = injected
			err := r.ReplaceMembers("S", pfx("198.51.100.0/24", "203.0.113.0/24"))
			wantErr(t, "replace", err, injected, "S")
			if !strings.Contains(err.Error(), "S-tmp") {
				t.Errorf("error %q does not name the temporary set", err)
			}
			if key == "add S-tmp" && !strings.Contains(err.Error(), "198.51.100.0/24") {
				t.Errorf("error %q does not name the member", err)
			}
			if got := m.entries("S"); !slices.Equal(got, []string{"192.0.2.0/24 pods"}) {
				t.Errorf("live set changed to %v", got)
			}
			if _, ok := m.sets["S-tmp"]; ok {
				t.Error("temporary set left behind after failure")
			}
			for _, c := range m.calls {
				if strings.HasPrefix(c, "swap") && key != "swap S-tmp" {
					t.Errorf("swapped despite the failure: %v", m.calls)
				}
			}
			// The next attempt succeeds.
			delete(m.fail, key)
			if err := r.ReplaceMembers("S", pfx("198.51.100.0/24")); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestReplaceFinalDestroyFailureIsNotFatal(t *testing.T) {
	r, m := newTestSets(t, "S", "192.0.2.0/24")
	n := 0
	m.onCall = func(key string) {
		if key == "destroy S-tmp" {
			n++
			if n == 2 { // the destroy after the swap
				m.fail[key] = unix.EIO
			}
		}
	}
	if err := r.ReplaceMembers("S", pfx("198.51.100.0/24")); err != nil {
		t.Fatalf("ReplaceMembers = %v; the swap succeeded, so it should report success", err)
	}
	if got := m.entries("S"); !slices.Equal(got, []string{"198.51.100.0/24 pods"}) {
		t.Errorf("live set = %v", got)
	}
	// The leftover is removed by the next replace.
	m.onCall, m.fail = nil, map[string]error{}
	if err := r.ReplaceMembers("S", pfx("203.0.113.0/24")); err != nil {
		t.Fatal(err)
	}
	if _, ok := m.sets["S-tmp"]; ok {
		t.Error("temporary set left behind")
	}
}

func TestReplaceLongNameUsesShortTemp(t *testing.T) {
	name := "SVCPROXY-A-RATHER-LONG-NAME-31X"
	r, m := newTestSets(t, name, "192.0.2.0/24")
	if err := r.ReplaceMembers(name, pfx("198.51.100.0/24")); err != nil {
		t.Fatal(err)
	}
	tmp := TempName(name)
	if !slices.Contains(m.calls, "create "+tmp+" hash:net") || !slices.Contains(m.calls, "swap "+tmp+" "+name) {
		t.Errorf("calls %v do not use temporary set %q", m.calls, tmp)
	}
	for _, c := range m.calls {
		for _, f := range strings.Fields(c)[1:] {
			if strings.HasPrefix(f, "SVCPROXY") && len(f) > MaxNameLen {
				t.Errorf("call %q uses a name longer than %d", c, MaxNameLen)
			}
		}
	}
}

func TestReplaceSetVanishesBeforeSwap(t *testing.T) {
	r, m := newTestSets(t, "S", "192.0.2.0/24")
	m.onCall = func(key string) {
		if strings.HasPrefix(key, "swap") {
			delete(m.sets, "S") // someone destroyed the live set meanwhile
		}
	}
	wantErr(t, "replace", r.ReplaceMembers("S", pfx("198.51.100.0/24")), ErrNotFound, "S")
	if _, ok := m.sets["S-tmp"]; ok {
		t.Error("temporary set left behind")
	}
}

func TestEnsureSetCreateOptions(t *testing.T) {
	m := newMemOps()
	r := newNetlinkSets(m)
	for _, s := range []Set{
		{Name: "A", Type: HashNet, Family: IPv6},
		{Name: "B", Type: HashIP, Comment: "c"},
	} {
		if err := r.EnsureSet(s); err != nil {
			t.Fatal(err)
		}
	}
	if o := m.sets["A"].opts; o.Family != unix.AF_INET6 || o.Revision != 4 || o.Comments {
		t.Errorf("A options = %+v", o)
	}
	if o := m.sets["B"].opts; o.Family != unix.AF_INET || o.Revision != 2 || !o.Comments {
		t.Errorf("B options = %+v", o)
	}
	// An existing set is listed, not recreated or flushed.
	m.calls = nil
	if err := r.EnsureSet(Set{Name: "A", Type: HashNet, Family: IPv6}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(m.calls, []string{"create A hash:net", "list A"}) {
		t.Errorf("calls = %v", m.calls)
	}
	// Other kernel errors come through, naming the set.
	m.fail["create C"] = nl.IPSetError(nl.IPSET_ERR_MAX_SETS)
	wantErr(t, "EnsureSet", r.EnsureSet(Set{Name: "C", Type: HashNet}), nl.IPSetError(nl.IPSET_ERR_MAX_SETS), "C")
}

func TestDestroyErrorMapping(t *testing.T) {
	for _, tc := range []struct {
		kernel error
		want   error // nil: Destroy succeeds
	}{
		{nil, nil},
		{unix.ENOENT, nil},
		{unix.EBUSY, ErrInUse},
		{nl.IPSetError(nl.IPSET_ERR_BUSY), ErrInUse},
		{nl.IPSetError(nl.IPSET_ERR_REFERENCED), ErrInUse},
		{fmt.Errorf("%w: extended ack message", unix.EBUSY), ErrInUse},
		{unix.EPERM, unix.EPERM},
	} {
		m := newMemOps()
		m.fail["destroy S"] = tc.kernel
		err := newNetlinkSets(m).Destroy("S")
		if tc.want == nil {
			if err != nil {
				t.Errorf("kernel %v: Destroy = %v, want nil", tc.kernel, err)
			}
			continue
		}
		wantErr(t, fmt.Sprintf("kernel %v", tc.kernel), err, tc.want, "S")
		if !errors.Is(err, tc.kernel) {
			t.Errorf("kernel %v: Destroy error %v lost the kernel's error", tc.kernel, err)
		}
	}
	m := newMemOps()
	if err := newNetlinkSets(m).Destroy(""); !errors.Is(err, ErrInvalid) || len(m.calls) != 0 {
		t.Errorf("Destroy(\"\") = %v with calls %v; want ErrInvalid and no kernel call (an unnamed DESTROY destroys every set)", err, m.calls)
	}
}

func TestListMembersHostEntries(t *testing.T) {
	m := newMemOps()
	m.sets["H"] = &memSet{typ: "hash:ip", opts: netlink.IpsetCreateOptions{Family: unix.AF_INET6},
		entries: []netlink.IPSetEntry{{IP: netip.MustParseAddr("2001:db8::2").AsSlice()}, {IP: netip.MustParseAddr("2001:db8::1").AsSlice()}}}
	m.sets["N"] = &memSet{typ: "hash:net", opts: netlink.IpsetCreateOptions{Family: unix.AF_INET},
		// The kernel may hand back IPv4 addresses in 16-byte form.
		entries: []netlink.IPSetEntry{{IP: netip.MustParseAddr("::ffff:198.51.100.7").AsSlice(), CIDR: 32}, {IP: []byte{192, 0, 2, 0}, CIDR: 24}}}
	r := newNetlinkSets(m)
	wantMembers(t, r, "H", pfx("2001:db8::1", "2001:db8::2"))
	wantMembers(t, r, "N", pfx("192.0.2.0/24", "198.51.100.7"))

	m.sets["X"] = &memSet{typ: "hash:net", entries: []netlink.IPSetEntry{{IP: []byte{1, 2, 3}}}}
	if _, err := r.ListMembers("X"); err == nil || !strings.Contains(err.Error(), `"X"`) {
		t.Errorf("ListMembers of a garbled entry = %v, want an error naming the set", err)
	}
}

func TestListSetsSortedUnique(t *testing.T) {
	m := newMemOps()
	for _, n := range []string{"b", "a", "c"} {
		m.sets[n] = &memSet{typ: "hash:net"}
	}
	names, err := newNetlinkSets(m).ListSets()
	if err != nil || !slices.Equal(names, []string{"a", "b", "c"}) {
		t.Errorf("ListSets() = %v, %v", names, err)
	}
	m.fail["names "] = unix.EPERM
	if _, err := newNetlinkSets(m).ListSets(); !errors.Is(err, unix.EPERM) || !strings.HasPrefix(err.Error(), "ipset list-sets: ") {
		t.Errorf("ListSets() error = %v", err)
	}
}

func TestGuardTurnsPanicIntoError(t *testing.T) {
	f := func() (err error) {
		defer guard(&err)
		var e error = nl.ErrDumpInterrupted
		_ = e.(interface{ Timeout() bool }) // panics, like ipsetExecute's unchecked assertion
		return nil
	}
	if err := f(); err == nil || !strings.Contains(err.Error(), "netlink ipset request failed") {
		t.Errorf("guard: got %v", err)
	}
}

func TestParseSetName(t *testing.T) {
	// nfgenmsg, then PROTOCOL (u8) and SETNAME attributes, as the kernel sends a name-only listing.
	msg := []byte{unix.AF_UNSPEC, 0, 0, 0}
	msg = append(msg, (&nl.RtAttr{RtAttr: unix.RtAttr{Type: nl.IPSET_ATTR_PROTOCOL}, Data: []byte{7}}).Serialize()...)
	msg = append(msg, nl.NewRtAttr(nl.IPSET_ATTR_SETNAME, nl.ZeroTerminated("SVCPROXY-POD-CIDRS")).Serialize()...)
	if got, ok := parseSetName(msg); !ok || got != "SVCPROXY-POD-CIDRS" {
		t.Errorf("parseSetName = %q, %v", got, ok)
	}
	for _, bad := range [][]byte{nil, {0, 0}, {0, 0, 0, 0, 200, 0, 2, 0}} {
		if got, ok := parseSetName(bad); ok {
			t.Errorf("parseSetName(%v) = %q, want failure", bad, got)
		}
	}
}

func TestReplaceUsesOneSession(t *testing.T) {
	r, m := newTestSets(t, "S", "192.0.2.0/24")
	opened, closed := 0, 0
	r.session = func() (ops, func(), error) {
		opened++
		return m, func() { closed++ }, nil
	}
	if err := r.ReplaceMembers("S", pfx("198.51.100.0/24", "203.0.113.0/24")); err != nil {
		t.Fatal(err)
	}
	if opened != 1 || closed != 1 {
		t.Errorf("session opened %d and closed %d times, want 1 and 1", opened, closed)
	}
	r.session = func() (ops, func(), error) { return nil, nil, unix.EMFILE }
	wantErr(t, "replace without a socket", r.ReplaceMembers("S", pfx("192.0.2.0/24")), unix.EMFILE, "S")
}
