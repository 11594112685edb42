package ipset

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

// harness is one Interface implementation under the shared behavioural checks, with a way to
// make the kernel (or its stand-in) hold a reference to a set.
type harness struct {
	iface      Interface
	markInUse  func(t *testing.T, name string)
	clearInUse func(t *testing.T, name string)
}

func pfx(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(ss))
	for _, s := range ss {
		if !strings.Contains(s, "/") {
			a := netip.MustParseAddr(s)
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func wantMembers(t *testing.T, iface Interface, name string, want []netip.Prefix) {
	t.Helper()
	got, err := iface.ListMembers(name)
	if err != nil {
		t.Fatalf("ListMembers(%s): %v", name, err)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("ListMembers(%s) = %v, want %v", name, got, want)
	}
}

// wantErr checks that err matches target and names the set.
func wantErr(t *testing.T, what string, err, target error, set string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: got error %v, want one wrapping %v", what, err, target)
	}
	var e *Error
	if !errors.As(err, &e) || e.Set != set || !strings.Contains(err.Error(), set) {
		t.Fatalf("%s: error %q does not name set %q", what, err, set)
	}
}

// destroyEventually retries Destroy while it reports ErrInUse: the nf_tables backend of
// iptables releases a rule's set reference asynchronously after the rule is deleted. The
// minute allowed is a bound on a release that never comes, not on a slow one.
func destroyEventually(t *testing.T, iface Interface, name string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		err := iface.Destroy(name)
		if err == nil {
			return
		}
		if !errors.Is(err, ErrInUse) || time.Now().After(deadline) {
			t.Fatalf("Destroy(%s): %v", name, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkConformance runs the behaviour every Interface implementation shares. It runs steps in
// sequence (no t.Run) so that the root harness can run it on one OS thread inside a network
// namespace.
func checkConformance(t *testing.T, h harness) {
	iface := h.iface
	const (
		v4   = "SVCPROXY-TEST-NET"
		v6   = "SVCPROXY-TEST-NET6"
		host = "SVCPROXY-TEST-IP"
		long = "SVCPROXY-A-RATHER-LONG-NAME-31X" // exactly MaxNameLen
	)

	// EnsureSet: create, idempotent, mismatches.
	if err := iface.EnsureSet(Set{Name: v4, Type: HashNet, Family: IPv4, Comment: "svcproxy test"}); err != nil {
		t.Fatalf("EnsureSet: %v", err)
	}
	if err := iface.EnsureSet(Set{Name: v4, Type: HashNet, Comment: "svcproxy test"}); err != nil {
		t.Fatalf("EnsureSet again (default family): %v", err)
	}
	wantErr(t, "EnsureSet with another type", iface.EnsureSet(Set{Name: v4, Type: HashIP, Family: IPv4}), ErrMismatch, v4)
	wantErr(t, "EnsureSet with another family", iface.EnsureSet(Set{Name: v4, Type: HashNet, Family: IPv6}), ErrMismatch, v4)
	wantErr(t, "EnsureSet with a 32-byte name", iface.EnsureSet(Set{Name: long + "Y", Type: HashNet}), ErrInvalid, long+"Y")
	wantErr(t, "EnsureSet with an unknown type", iface.EnsureSet(Set{Name: "SVCPROXY-X", Type: "list:set"}), ErrInvalid, "SVCPROXY-X")
	wantMembers(t, iface, v4, []netip.Prefix{})

	// ReplaceMembers: masked, deduplicated, sorted; host entries are /32.
	if err := iface.ReplaceMembers(v4, pfx("203.0.113.0/25", "198.51.100.7", "192.0.2.0/24", "192.0.2.77/24")); err != nil {
		t.Fatalf("ReplaceMembers: %v", err)
	}
	want := pfx("192.0.2.0/24", "198.51.100.7/32", "203.0.113.0/25")
	wantMembers(t, iface, v4, want)
	if err := iface.ReplaceMembers(v4, pfx("198.51.100.0/24", "192.0.2.0/24")); err != nil {
		t.Fatalf("ReplaceMembers (second list): %v", err)
	}
	want = pfx("192.0.2.0/24", "198.51.100.0/24")
	wantMembers(t, iface, v4, want)

	// Invalid members fail before anything changes.
	wantErr(t, "IPv6 member in IPv4 set", iface.ReplaceMembers(v4, pfx("192.0.2.0/24", "2001:db8::/32")), ErrInvalid, v4)
	wantErr(t, "/0 in hash:net", iface.ReplaceMembers(v4, pfx("0.0.0.0/0")), ErrInvalid, v4)
	wantMembers(t, iface, v4, want)

	// Missing sets.
	wantErr(t, "ReplaceMembers on a missing set", iface.ReplaceMembers("SVCPROXY-MISSING", pfx("192.0.2.0/24")), ErrNotFound, "SVCPROXY-MISSING")
	_, err := iface.ListMembers("SVCPROXY-MISSING")
	wantErr(t, "ListMembers on a missing set", err, ErrNotFound, "SVCPROXY-MISSING")
	if err := iface.Destroy("SVCPROXY-MISSING"); err != nil {
		t.Fatalf("Destroy of a missing set: %v", err)
	}
	wantErr(t, "Destroy with an empty name", iface.Destroy(""), ErrInvalid, "")

	// IPv6 hash:net and IPv4 hash:ip.
	if err := iface.EnsureSet(Set{Name: v6, Type: HashNet, Family: IPv6}); err != nil {
		t.Fatalf("EnsureSet v6: %v", err)
	}
	if err := iface.ReplaceMembers(v6, pfx("2001:db8:1::1", "2001:db8::/64")); err != nil {
		t.Fatalf("ReplaceMembers v6: %v", err)
	}
	wantMembers(t, iface, v6, pfx("2001:db8::/64", "2001:db8:1::1/128"))
	wantErr(t, "IPv4 member in IPv6 set", iface.ReplaceMembers(v6, pfx("192.0.2.0/24")), ErrInvalid, v6)

	if err := iface.EnsureSet(Set{Name: host, Type: HashIP, Family: IPv4, Comment: "hosts"}); err != nil {
		t.Fatalf("EnsureSet hash:ip: %v", err)
	}
	if err := iface.ReplaceMembers(host, pfx("192.0.2.2", "192.0.2.1/32")); err != nil {
		t.Fatalf("ReplaceMembers hash:ip: %v", err)
	}
	wantMembers(t, iface, host, pfx("192.0.2.1/32", "192.0.2.2/32"))
	wantErr(t, "network in hash:ip", iface.ReplaceMembers(host, pfx("192.0.2.0/24")), ErrInvalid, host)

	// Emptying a set is a replace like any other.
	if err := iface.ReplaceMembers(host, nil); err != nil {
		t.Fatalf("ReplaceMembers(nil): %v", err)
	}
	wantMembers(t, iface, host, []netip.Prefix{})

	// A name at the length limit still gets a temporary set.
	if err := iface.EnsureSet(Set{Name: long, Type: HashNet}); err != nil {
		t.Fatalf("EnsureSet(%s): %v", long, err)
	}
	if err := iface.ReplaceMembers(long, pfx("203.0.113.0/24")); err != nil {
		t.Fatalf("ReplaceMembers(%s): %v", long, err)
	}
	wantMembers(t, iface, long, pfx("203.0.113.0/24"))

	// ListSets: sorted, our sets, no temporary sets left over.
	names, err := iface.ListSets()
	if err != nil {
		t.Fatalf("ListSets: %v", err)
	}
	for _, n := range []string{v4, v6, host, long} {
		if !slices.Contains(names, n) {
			t.Errorf("ListSets() = %v, missing %s", names, n)
		}
	}
	if !slices.IsSorted(names) {
		t.Errorf("ListSets() = %v, not sorted", names)
	}
	for _, n := range names {
		if strings.HasSuffix(n, "-tmp") {
			t.Errorf("temporary set %s left behind", n)
		}
	}

	// In use: Destroy refuses, replacing still works, and the set goes once released.
	h.markInUse(t, v4)
	wantErr(t, "Destroy of a referenced set", iface.Destroy(v4), ErrInUse, v4)
	if err := iface.ReplaceMembers(v4, pfx("192.0.2.0/24")); err != nil {
		t.Fatalf("ReplaceMembers on a referenced set: %v", err)
	}
	wantMembers(t, iface, v4, pfx("192.0.2.0/24"))
	h.clearInUse(t, v4)
	destroyEventually(t, iface, v4)
	_, err = iface.ListMembers(v4)
	wantErr(t, "ListMembers after Destroy", err, ErrNotFound, v4)

	for _, n := range []string{v6, host, long} {
		if err := iface.Destroy(n); err != nil {
			t.Fatalf("Destroy(%s): %v", n, err)
		}
	}
	if names, err := iface.ListSets(); err != nil || len(names) != 0 {
		t.Fatalf("ListSets() after destroying everything = %v, %v; want none", names, err)
	}
}

func TestConformanceFake(t *testing.T) {
	f := &Fake{}
	checkConformance(t, harness{
		iface:      f,
		markInUse:  func(_ *testing.T, n string) { f.MarkInUse(n) },
		clearInUse: func(_ *testing.T, n string) { f.ClearInUse(n) },
	})
}

func TestConformanceRunnerOverSeam(t *testing.T) {
	m := newMemOps()
	checkConformance(t, harness{
		iface:      newNetlinkSets(m),
		markInUse:  func(_ *testing.T, n string) { m.sets[n].refs++ },
		clearInUse: func(_ *testing.T, n string) { m.sets[n].refs-- },
	})
}
