// Package ipset manages the kernel ipsets svcproxy uses, through netlink.
//
// The package has one small [Interface] with two implementations: [New], which talks to the
// kernel's ipset subsystem over netlink (never the ipset binary), and [Fake], an in-memory
// stateful stand-in with the same semantics for tests of code that uses sets. [SyncSets] and
// [Cleanup] build the proxy's reconcile step on top of the Interface.
//
// Membership is always replaced atomically: [Interface.ReplaceMembers] fills a temporary set and
// swaps it with the live one in a single kernel operation, so a packet (or an `ipset test`) never
// sees a half-filled set.
//
// IPv4 and IPv6 are two instances of one code path: every set has a [Family], and the proxy's IPv6
// sets carry a "6" suffix (see [FamilyName]).
package ipset

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// SetType is an ipset type name as the kernel knows it.
type SetType string

const (
	// HashNet stores network prefixes; a /32 (IPv4) or /128 (IPv6) member is a host entry.
	// The kernel cannot store a /0 in a hash:net set.
	HashNet SetType = "hash:net"
	// HashIP stores host addresses; every member must be a /32 or /128 prefix.
	HashIP SetType = "hash:ip"
)

// Family is the address family of a set, spelled as ipset spells it.
type Family string

const (
	// IPv4 is the "inet" family.
	IPv4 Family = "inet"
	// IPv6 is the "inet6" family.
	IPv6 Family = "inet6"
)

// Names of the sets the proxy owns. Every name starts with [Prefix] so that [Cleanup] finds them.
const (
	// Prefix starts the name of every set svcproxy creates.
	Prefix = "SVCPROXY-"
	// PodCIDRsSet (hash:net, inet) holds the cluster's IPv4 pod CIDRs.
	PodCIDRsSet = "SVCPROXY-POD-CIDRS"
	// PodCIDRsSet6 (hash:net, inet6) holds the cluster's IPv6 pod CIDRs.
	PodCIDRsSet6 = "SVCPROXY-POD-CIDRS6"
	// NoMasqSet (hash:net, inet) holds extra IPv4 destinations that must not be masqueraded.
	NoMasqSet = "SVCPROXY-NO-MASQ"
	// NoMasqSet6 (hash:net, inet6) holds extra IPv6 destinations that must not be masqueraded.
	NoMasqSet6 = "SVCPROXY-NO-MASQ6"
)

// MaxNameLen is the longest set name the kernel accepts (IPSET_MAXNAMELEN minus the NUL).
const MaxNameLen = 31

// maxCommentLen is the longest comment the kernel stores (IPSET_MAX_COMMENT_SIZE).
const maxCommentLen = 255

// FamilyName returns the name of a set of family fam built from the IPv4 name base: base itself for
// IPv4 and base+"6" for IPv6, so FamilyName(PodCIDRsSet, IPv6) == PodCIDRsSet6.
func FamilyName(base string, fam Family) string {
	if fam == IPv6 {
		return base + "6"
	}
	return base
}

// Set describes a set. Comment, when not empty, turns on the kernel's per-entry comments for the
// set and is attached to every member [Interface.ReplaceMembers] writes; `ipset list` shows it.
// The kernel has no comment on the set itself.
type Set struct {
	Name    string
	Type    SetType
	Family  Family
	Comment string
}

// Interface manages ipsets. Every error names the set it concerns and is, or wraps, an [*Error].
// Implementations are safe for concurrent use.
type Interface interface {
	// EnsureSet creates set if no set of that name exists. It returns nil when the set already
	// exists with the same type and family (the existing members and comment setting are kept),
	// an error wrapping [ErrMismatch] when it exists with a different type or family, and an
	// error wrapping [ErrInvalid] when set has an empty or too long name, an unknown type or
	// family, or an over-long comment. An empty Family means IPv4.
	EnsureSet(set Set) error

	// ReplaceMembers atomically makes members the exact contents of the named set: it fills a
	// temporary set (see [TempName]) and swaps it with the live set, so no reader ever sees a
	// half-filled set, then destroys the temporary set. It writes nothing when the set already
	// holds exactly members (after masking host bits and removing duplicates). It returns an
	// error wrapping [ErrNotFound] when the set does not exist, [ErrInvalid] when a member is
	// not valid for the set (wrong family, /0 in hash:net, a non-host prefix in hash:ip), and
	// the kernel's error otherwise; on any error the live set is left unchanged.
	ReplaceMembers(name string, members []netip.Prefix) error

	// ListMembers returns the members of the named set, sorted by address then prefix length.
	// Host entries come back as /32 or /128 prefixes. It returns an error wrapping
	// [ErrNotFound] when the set does not exist.
	ListMembers(name string) ([]netip.Prefix, error)

	// ListSets returns the names of all sets in the network namespace, sorted, including sets
	// svcproxy did not create.
	ListSets() ([]string, error)

	// Destroy destroys the named set. A missing set is not an error. It returns an error
	// wrapping [ErrInUse] when the kernel refuses because something (such as an iptables
	// `-m set --match-set` rule) references the set, and [ErrInvalid] for an empty name.
	Destroy(name string) error
}

var (
	// ErrInUse means the kernel refused to destroy a set that is referenced, typically by an
	// iptables rule.
	ErrInUse = errors.New("set is in use")
	// ErrNotFound means the set does not exist.
	ErrNotFound = errors.New("set does not exist")
	// ErrMismatch means a set of that name exists with a different type or family.
	ErrMismatch = errors.New("set exists with a different type or family")
	// ErrInvalid means an argument was rejected before reaching the kernel.
	ErrInvalid = errors.New("invalid argument")
)

// Error is the error every method of Interface returns: the operation, the set and the cause.
// Use errors.Is with ErrInUse, ErrNotFound, ErrMismatch or ErrInvalid to classify it.
type Error struct {
	Op  string // "ensure", "replace", "list", "list-sets" or "destroy"
	Set string // empty for "list-sets"
	Err error
}

func (e *Error) Error() string {
	if e.Set == "" {
		return fmt.Sprintf("ipset %s: %v", e.Op, e.Err)
	}
	return fmt.Sprintf("ipset %s %q: %v", e.Op, e.Set, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

func setErr(op, name string, err error) error {
	if err == nil {
		return nil
	}
	return &Error{Op: op, Set: name, Err: err}
}

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// TempName returns the name of the temporary set ReplaceMembers fills before swapping it with the
// set called name: name+"-tmp" when that fits in MaxNameLen, otherwise the first 18 characters of
// name, "-", 8 hex digits of sha256(name) and "-tmp" (31 characters), so that long names sharing a
// prefix still get distinct temporary sets, and the temporary set still starts with the proxy's
// Prefix (so Cleanup finds one left behind by a crash).
func TempName(name string) string {
	const suffix = "-tmp"
	if len(name)+len(suffix) <= MaxNameLen {
		return name + suffix
	}
	sum := sha256.Sum256([]byte(name))
	h := hex.EncodeToString(sum[:4])
	keep := MaxNameLen - len(suffix) - len(h) - 1
	return name[:keep] + "-" + h + suffix
}

func validateName(name string) error {
	switch {
	case name == "":
		return invalidf("empty set name")
	case len(name) > MaxNameLen:
		return invalidf("set name %q is %d bytes, longer than the kernel's limit of %d", name, len(name), MaxNameLen)
	case strings.ContainsRune(name, 0):
		return invalidf("set name %q contains a NUL byte", name)
	}
	return nil
}

// normalizeSet validates set and fills in the default family.
func normalizeSet(set Set) (Set, error) {
	if err := validateName(set.Name); err != nil {
		return set, err
	}
	switch set.Type {
	case HashNet, HashIP:
	default:
		return set, invalidf("unsupported set type %q (want %q or %q)", set.Type, HashNet, HashIP)
	}
	switch set.Family {
	case "":
		set.Family = IPv4
	case IPv4, IPv6:
	default:
		return set, invalidf("unknown family %q (want %q or %q)", set.Family, IPv4, IPv6)
	}
	if len(set.Comment) > maxCommentLen {
		return set, invalidf("comment is %d bytes, longer than the kernel's limit of %d", len(set.Comment), maxCommentLen)
	}
	if strings.ContainsRune(set.Comment, 0) {
		return set, invalidf("comment contains a NUL byte")
	}
	return set, nil
}

// normalizeMembers checks members against the set's type and family and returns them masked,
// deduplicated and sorted: the form ListMembers returns.
func normalizeMembers(typ SetType, fam Family, members []netip.Prefix) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(members))
	for _, p := range members {
		if !p.IsValid() {
			return nil, invalidf("invalid prefix %v", p)
		}
		a := p.Addr()
		switch {
		case a.Is4In6():
			return nil, invalidf("member %v is an IPv4-mapped IPv6 prefix; use the plain IPv4 form", p)
		case fam == IPv4 && !a.Is4(), fam == IPv6 && !a.Is6():
			return nil, invalidf("member %v does not belong in a %s set", p, fam)
		case typ == HashNet && p.Bits() == 0:
			return nil, invalidf("member %v: a hash:net set cannot hold a /0", p)
		case typ == HashIP && !p.IsSingleIP():
			return nil, invalidf("member %v: a hash:ip set holds only host addresses (/%d)", p, a.BitLen())
		}
		out = append(out, p.Masked())
	}
	sortPrefixes(out)
	return slices.Compact(out), nil
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

func sortPrefixes(ps []netip.Prefix) { slices.SortFunc(ps, comparePrefix) }
