package ipset

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
)

// Op names an Interface method, for Fake's failure injection.
type Op string

const (
	OpEnsure    Op = "ensure"
	OpReplace   Op = "replace"
	OpList      Op = "list"
	OpListSets  Op = "list-sets"
	OpDestroy   Op = "destroy"
	anySetMatch    = "*"
)

// FakeSet is one set as Fake.Sets reports it.
type FakeSet struct {
	Set
	Members []netip.Prefix // sorted
	InUse   bool           // see Fake.MarkInUse
	Swaps   int            // ReplaceMembers calls that changed the members
}

type fakeSet struct {
	set     Set
	members []netip.Prefix
	inUse   bool
	swaps   int
}

// Fake is an in-memory Interface with the real implementation's semantics: the same validation
// and error classes, atomic ReplaceMembers (it fails without changing anything, or swaps in the
// whole new membership), no-op replaces, ErrInUse for sets marked in use, and ErrNotFound for
// missing sets. Its zero value is an empty namespace, ready to use; it is safe for concurrent use.
type Fake struct {
	mu       sync.Mutex
	sets     map[string]*fakeSet
	failures map[failKey]error
}

type failKey struct {
	op  Op
	set string
}

var _ Interface = &Fake{}

// NewFake returns an empty Fake (the same as &Fake{}).
func NewFake() *Fake { return &Fake{} }

// MarkInUse simulates a kernel reference to the named set, such as an iptables
// `-m set --match-set` rule: Destroy then fails with ErrInUse. It has no effect on a missing set.
func (f *Fake) MarkInUse(name string) { f.setInUse(name, true) }

// ClearInUse drops the reference MarkInUse simulated.
func (f *Fake) ClearInUse(name string) { f.setInUse(name, false) }

func (f *Fake) setInUse(name string, v bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s := f.sets[name]; s != nil {
		s.inUse = v
	}
}

// FailOn makes every later call of op on the named set fail with err (wrapped like a real
// error, so errors.Is(err, injected) holds) until it is called again with a nil err. An empty
// name matches every set; OpListSets ignores the name. The failing call changes nothing.
func (f *Fake) FailOn(op Op, name string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if name == "" || op == OpListSets {
		name = anySetMatch
	}
	k := failKey{op, name}
	if err == nil {
		delete(f.failures, k)
		return
	}
	if f.failures == nil {
		f.failures = map[failKey]error{}
	}
	f.failures[k] = err
}

func (f *Fake) injected(op Op, name string) error {
	if err, ok := f.failures[failKey{op, name}]; ok {
		return err
	}
	return f.failures[failKey{op, anySetMatch}]
}

// Sets returns a snapshot of every set, keyed by name. The caller owns the result.
func (f *Fake) Sets() map[string]FakeSet {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]FakeSet, len(f.sets))
	for n, s := range f.sets {
		out[n] = FakeSet{Set: s.set, Members: slices.Clone(s.members), InUse: s.inUse, Swaps: s.swaps}
	}
	return out
}

// Dump returns the sets in `ipset save` form, sorted by set name, each set's members sorted:
// stable text for golden tests.
func (f *Fake) Dump() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var b strings.Builder
	for _, n := range slices.Sorted(maps.Keys(f.sets)) {
		s := f.sets[n]
		fmt.Fprintf(&b, "create %s %s family %s", n, s.set.Type, s.set.Family)
		if s.set.Comment != "" {
			b.WriteString(" comment")
		}
		b.WriteByte('\n')
		for _, p := range s.members {
			m := p.String()
			if p.IsSingleIP() {
				m = p.Addr().String()
			}
			fmt.Fprintf(&b, "add %s %s", n, m)
			if s.set.Comment != "" {
				fmt.Fprintf(&b, " comment %q", s.set.Comment)
			}
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// EnsureSet implements Interface.
func (f *Fake) EnsureSet(set Set) error {
	set, err := normalizeSet(set)
	if err != nil {
		return setErr("ensure", set.Name, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.injected(OpEnsure, set.Name); err != nil {
		return setErr("ensure", set.Name, err)
	}
	if s := f.sets[set.Name]; s != nil {
		if s.set.Type != set.Type || s.set.Family != set.Family {
			return setErr("ensure", set.Name, fmt.Errorf("%w: it is %s family %s, want %s family %s",
				ErrMismatch, s.set.Type, s.set.Family, set.Type, set.Family))
		}
		return nil
	}
	if f.sets == nil {
		f.sets = map[string]*fakeSet{}
	}
	f.sets[set.Name] = &fakeSet{set: set}
	return nil
}

// ReplaceMembers implements Interface.
func (f *Fake) ReplaceMembers(name string, members []netip.Prefix) error {
	if err := validateName(name); err != nil {
		return setErr("replace", name, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.sets[name]
	if s == nil {
		return setErr("replace", name, ErrNotFound)
	}
	want, err := normalizeMembers(s.set.Type, s.set.Family, members)
	if err != nil {
		return setErr("replace", name, err)
	}
	if err := f.injected(OpReplace, name); err != nil {
		return setErr("replace", name, err)
	}
	if slices.Equal(s.members, want) {
		return nil
	}
	s.members = want
	s.swaps++
	return nil
}

// ListMembers implements Interface.
func (f *Fake) ListMembers(name string) ([]netip.Prefix, error) {
	if err := validateName(name); err != nil {
		return nil, setErr("list", name, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.injected(OpList, name); err != nil {
		return nil, setErr("list", name, err)
	}
	s := f.sets[name]
	if s == nil {
		return nil, setErr("list", name, ErrNotFound)
	}
	return slices.Clone(s.members), nil
}

// ListSets implements Interface.
func (f *Fake) ListSets() ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.injected(OpListSets, anySetMatch); err != nil {
		return nil, setErr("list-sets", "", err)
	}
	return slices.Sorted(maps.Keys(f.sets)), nil
}

// Destroy implements Interface.
func (f *Fake) Destroy(name string) error {
	if err := validateName(name); err != nil {
		return setErr("destroy", name, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.injected(OpDestroy, name); err != nil {
		return setErr("destroy", name, err)
	}
	s := f.sets[name]
	if s == nil {
		return nil
	}
	if s.inUse {
		return setErr("destroy", name, fmt.Errorf("%w: referenced by a rule (simulated by Fake.MarkInUse)", ErrInUse))
	}
	delete(f.sets, name)
	return nil
}
