package ipset

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"slices"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// ops is the seam between the logic in this file and the kernel: the few netlink operations the
// netlinkSets needs, returning the kernel's raw errors (syscall.Errno or nl.IPSetError). nlOps is the
// real implementation; tests substitute an in-memory one.
type ops interface {
	create(name, typ string, opts netlink.IpsetCreateOptions) error
	destroy(name string) error
	swap(a, b string) error
	list(name string) (*netlink.IPSetResult, error)
	add(name string, e *netlink.IPSetEntry) error
	names() ([]string, error)
}

// Kernel type revisions used for sets this package creates: the first revisions with per-entry
// comment support (kernel ip_set_hash_net.c and ip_set_hash_ip.c), present since Linux 3.10.
// Choosing them explicitly, rather than the newest, keeps the headers the kernel reports within
// what vishvananda/netlink parses (newer revisions add bucketsize/initval, which it logs about).
var revisions = map[SetType]uint8{HashNet: 4, HashIP: 2}

// netlinkSets is the real Interface. It serialises its operations with one mutex so that two
// ReplaceMembers calls for the same set never share a temporary set.
type netlinkSets struct {
	ops ops
	// session, when set, returns the ops ReplaceMembers uses for its many requests (one socket
	// for all of them) and a function that releases it.
	session func() (ops, func(), error)

	mu       sync.Mutex
	comments map[string]string // set name → Comment given to EnsureSet
}

var _ Interface = &netlinkSets{}

// New returns an Interface that manages sets through netlink in the network namespace of the
// calling OS thread at the time of each call: every call opens its own netlink socket(s) there
// and closes them before returning (ReplaceMembers uses one socket for all its requests). It
// never runs the ipset binary.
// Creating the Interface does no I/O; errors appear on the first call that reaches the kernel.
func New() Interface {
	r := newNetlinkSets(nlOps{})
	r.session = netlinkSession
	return r
}

// netlinkSession opens one netfilter netlink socket in the calling thread's network namespace,
// so that a replace's requests (one per member) do not each open and close a socket.
func netlinkSession() (ops, func(), error) {
	h, err := netlink.NewHandle(unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, nil, fmt.Errorf("open netlink socket: %w", err)
	}
	return nlOps{h: h}, h.Close, nil
}

// pkgHandle is a Handle without sockets of its own: each request opens one in the calling
// thread's network namespace, like the netlink package-level functions.
var pkgHandle = &netlink.Handle{}

func newNetlinkSets(o ops) *netlinkSets { return &netlinkSets{ops: o, comments: map[string]string{}} }

func familyNumber(f Family) uint8 {
	if f == IPv6 {
		return unix.AF_INET6
	}
	return unix.AF_INET
}

func familyFromKernel(n uint8) (Family, error) {
	switch n {
	case unix.AF_INET:
		return IPv4, nil
	case unix.AF_INET6:
		return IPv6, nil
	}
	return "", fmt.Errorf("kernel reports unknown family %d", n)
}

// EnsureSet implements Interface.
func (r *netlinkSets) EnsureSet(set Set) error {
	set, err := normalizeSet(set)
	if err != nil {
		return setErr("ensure", set.Name, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()

	opts := netlink.IpsetCreateOptions{
		Family:   familyNumber(set.Family),
		Revision: revisions[set.Type],
		Comments: set.Comment != "",
	}
	err = r.ops.create(set.Name, string(set.Type), opts)
	switch {
	case err == nil:
	case errors.Is(err, unix.EEXIST):
		live, lerr := r.ops.list(set.Name)
		if lerr != nil {
			return setErr("ensure", set.Name, fmt.Errorf("set exists but cannot be listed: %w", mapErr(lerr)))
		}
		fam, _ := familyFromKernel(live.Family)
		if SetType(live.TypeName) != set.Type || fam != set.Family {
			return setErr("ensure", set.Name, fmt.Errorf("%w: it is %s family %s, want %s family %s",
				ErrMismatch, live.TypeName, familyString(live.Family), set.Type, set.Family))
		}
	default:
		return setErr("ensure", set.Name, mapErr(err))
	}
	r.comments[set.Name] = set.Comment
	return nil
}

func familyString(n uint8) string {
	if f, err := familyFromKernel(n); err == nil {
		return string(f)
	}
	return fmt.Sprintf("%d", n)
}

// ReplaceMembers implements Interface. The order is: list the live set (its header gives the
// type, family and flags of the temporary set; its entries decide whether anything changes),
// destroy a temporary set left by an interrupted call, create the temporary set, add every
// member, swap, destroy the temporary set (which now holds the old members). Failure before the
// swap destroys the temporary set and leaves the live set alone. Failure to destroy the temporary
// set after a successful swap is only logged: the new members are live, and the next call (or
// Cleanup) removes it.
func (r *netlinkSets) ReplaceMembers(name string, members []netip.Prefix) error {
	if err := validateName(name); err != nil {
		return setErr("replace", name, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	o := r.ops
	if r.session != nil {
		s, done, err := r.session()
		if err != nil {
			return setErr("replace", name, err)
		}
		defer done()
		o = s
	}
	return setErr("replace", name, r.replace(o, name, members))
}

func (r *netlinkSets) replace(o ops, name string, members []netip.Prefix) error {
	live, err := o.list(name)
	if err != nil {
		return mapErr(err)
	}
	typ := SetType(live.TypeName)
	if _, ok := revisions[typ]; !ok {
		return invalidf("set has type %q; only %s and %s are supported", live.TypeName, HashNet, HashIP)
	}
	fam, err := familyFromKernel(live.Family)
	if err != nil {
		return err
	}
	want, err := normalizeMembers(typ, fam, members)
	if err != nil {
		return err
	}
	if have, err := entriesToPrefixes(live.Entries); err == nil && slices.Equal(have, want) {
		return nil
	}

	tmp := TempName(name)
	if err := o.destroy(tmp); err != nil && !isNotFound(err) {
		return fmt.Errorf("remove leftover temporary set %q: %w", tmp, mapErr(err))
	}
	opts := netlink.IpsetCreateOptions{
		Family:      live.Family,
		Revision:    live.Revision,
		Comments:    live.CadtFlags&nl.IPSET_FLAG_WITH_COMMENT != 0,
		Counters:    live.CadtFlags&nl.IPSET_FLAG_WITH_COUNTERS != 0,
		Skbinfo:     live.CadtFlags&nl.IPSET_FLAG_WITH_SKBINFO != 0,
		Timeout:     live.Timeout,
		MaxElements: live.MaxElements,
	}
	if opts.MaxElements != 0 && len(want) > int(opts.MaxElements) {
		opts.MaxElements = uint32(min(len(want), math.MaxUint32))
	}
	if err := o.create(tmp, live.TypeName, opts); err != nil {
		return fmt.Errorf("create temporary set %q: %w", tmp, mapErr(err))
	}
	comment := ""
	if opts.Comments {
		comment = r.commentFor(name, live.Entries)
	}
	for _, p := range want {
		if err := o.add(tmp, entryFor(typ, p, comment)); err != nil {
			discard(o, name, tmp)
			return fmt.Errorf("add %v to temporary set %q: %w", p, tmp, mapErr(err))
		}
	}
	if err := o.swap(tmp, name); err != nil {
		discard(o, name, tmp)
		return fmt.Errorf("swap temporary set %q with the live set: %w", tmp, mapErr(err))
	}
	if err := o.destroy(tmp); err != nil && !isNotFound(err) {
		klog.ErrorS(err, "New members are live but the temporary ipset could not be destroyed; the next replace removes it",
			"set", name, "tempSet", tmp)
	}
	return nil
}

// commentFor picks the entry comment for name: the Comment given to EnsureSet, or else the
// comment the existing members carry (a set created by an earlier process).
func (r *netlinkSets) commentFor(name string, entries []netlink.IPSetEntry) string {
	if c, ok := r.comments[name]; ok {
		return c
	}
	for _, e := range entries {
		if e.Comment != "" {
			return e.Comment
		}
	}
	return ""
}

// discard destroys a temporary set after a failed replace, logging (not returning) a failure,
// because the caller is already returning the error that matters.
func discard(o ops, name, tmp string) {
	if err := o.destroy(tmp); err != nil && !isNotFound(err) {
		klog.ErrorS(err, "Could not destroy temporary ipset after a failed replace", "set", name, "tempSet", tmp)
	}
}

// ListMembers implements Interface.
func (r *netlinkSets) ListMembers(name string) ([]netip.Prefix, error) {
	if err := validateName(name); err != nil {
		return nil, setErr("list", name, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	live, err := r.ops.list(name)
	if err != nil {
		return nil, setErr("list", name, mapErr(err))
	}
	ps, err := entriesToPrefixes(live.Entries)
	return ps, setErr("list", name, err)
}

// ListSets implements Interface.
func (r *netlinkSets) ListSets() ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	names, err := r.ops.names()
	if err != nil {
		return nil, setErr("list-sets", "", mapErr(err))
	}
	slices.Sort(names)
	return slices.Compact(names), nil
}

// Destroy implements Interface.
func (r *netlinkSets) Destroy(name string) error {
	if err := validateName(name); err != nil {
		// An empty name must never reach the kernel: without a name, DESTROY destroys every set.
		return setErr("destroy", name, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.ops.destroy(name); err != nil && !isNotFound(err) {
		return setErr("destroy", name, mapErr(err))
	}
	delete(r.comments, name)
	return nil
}

func entryFor(typ SetType, p netip.Prefix, comment string) *netlink.IPSetEntry {
	e := &netlink.IPSetEntry{IP: net.IP(p.Addr().AsSlice()), Comment: comment}
	if typ == HashNet {
		e.CIDR = uint8(p.Bits())
	}
	return e
}

// entriesToPrefixes converts kernel entries to sorted prefixes. An entry without a CIDR (every
// hash:ip entry) is a host.
func entriesToPrefixes(entries []netlink.IPSetEntry) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(entries))
	for _, e := range entries {
		a, ok := netip.AddrFromSlice(e.IP)
		if !ok {
			return nil, fmt.Errorf("kernel returned an entry with unparseable address %v", []byte(e.IP))
		}
		a = a.Unmap()
		bits := int(e.CIDR)
		if bits == 0 {
			bits = a.BitLen()
		}
		p, err := a.Prefix(bits)
		if err != nil {
			return nil, fmt.Errorf("kernel returned entry %v/%d: %w", a, e.CIDR, err)
		}
		out = append(out, p)
	}
	sortPrefixes(out)
	return out, nil
}

// isNotFound reports a missing set. The kernel says ENOENT for a missing (first) set and
// IPSET_ERR_EXIST_SETNAME2 when the second set of a swap is missing.
func isNotFound(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, nl.IPSetError(nl.IPSET_ERR_EXIST_SETNAME2))
}

// isInUse reports the kernel refusing because the set is referenced (by an iptables match, a
// list:set, or an in-flight dump).
func isInUse(err error) bool {
	return errors.Is(err, unix.EBUSY) ||
		errors.Is(err, nl.IPSetError(nl.IPSET_ERR_BUSY)) ||
		errors.Is(err, nl.IPSetError(nl.IPSET_ERR_REFERENCED))
}

// mapErr adds this package's sentinel errors to a kernel error, keeping the kernel's error in the
// chain too.
func mapErr(err error) error {
	switch {
	case err == nil:
		return nil
	case isNotFound(err):
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	case isInUse(err):
		return fmt.Errorf("%w: %w", ErrInUse, err)
	case errors.Is(err, nl.IPSetError(nl.IPSET_ERR_TYPE_MISMATCH)):
		return fmt.Errorf("%w: %w", ErrMismatch, err)
	}
	return err
}

// nlOps is the real ops, over vishvananda/netlink's ipset API and, for the name-only listing the
// library lacks, one hand-built message.
type nlOps struct {
	h *netlink.Handle // nil: the package-level functions, one socket per request
}

func (o nlOps) handle() *netlink.Handle {
	if o.h == nil {
		return pkgHandle
	}
	return o.h
}

// guard turns a panic inside the netlink library into an error. vishvananda/netlink v1.3.1's
// ipsetExecute type-asserts every error to syscall.Errno, so a non-Errno error (an interrupted
// dump, a sequence mismatch) would otherwise crash the proxy.
func guard(err *error) {
	if p := recover(); p != nil {
		*err = fmt.Errorf("netlink ipset request failed: %v", p)
	}
}

func (o nlOps) create(name, typ string, opts netlink.IpsetCreateOptions) (err error) {
	defer guard(&err)
	return o.handle().IpsetCreate(name, typ, opts)
}

func (o nlOps) destroy(name string) (err error) {
	defer guard(&err)
	return o.handle().IpsetDestroy(name)
}

func (o nlOps) swap(a, b string) (err error) {
	defer guard(&err)
	return o.handle().IpsetSwap(a, b)
}

func (o nlOps) list(name string) (res *netlink.IPSetResult, err error) {
	defer guard(&err)
	return o.handle().IpsetList(name)
}

func (o nlOps) add(name string, e *netlink.IPSetEntry) (err error) {
	defer guard(&err)
	return o.handle().IpsetAdd(name, e)
}

// ipsetFlagListSetname is IPSET_FLAG_LIST_SETNAME from <linux/netfilter/ipset/ip_set.h>: in the
// IPSET_ATTR_FLAGS of an IPSET_CMD_LIST request it asks for set names only, no headers or members.
const ipsetFlagListSetname = 1 << 1

// names lists every set's name with one IPSET_CMD_LIST dump carrying IPSET_FLAG_LIST_SETNAME.
// netlink.IpsetListAll would also work, but it dumps every member of every set on the host, and
// the library logs a line for each header attribute it does not know (sets created by the ipset
// binary carry several), so it is a poor fit for a periodic cleanup.
func (nlOps) names() (names []string, err error) {
	defer guard(&err)
	req := nl.NewNetlinkRequest(nl.IPSET_CMD_LIST|(unix.NFNL_SUBSYS_IPSET<<8), nl.GetIpsetFlags(nl.IPSET_CMD_LIST))
	req.AddData(&nl.Nfgenmsg{NfgenFamily: unix.AF_NETLINK, Version: nl.NFNETLINK_V0})
	req.AddData(nl.NewRtAttr(nl.IPSET_ATTR_PROTOCOL, nl.Uint8Attr(nl.IPSET_PROTOCOL)))
	req.AddData(&nl.Uint32Attribute{Type: nl.IPSET_ATTR_FLAGS | nl.NLA_F_NET_BYTEORDER, Value: ipsetFlagListSetname})
	msgs, err := req.Execute(unix.NETLINK_NETFILTER, 0)
	if err != nil {
		return nil, err
	}
	for _, m := range msgs {
		if n, ok := parseSetName(m); ok {
			names = append(names, n)
		}
	}
	return names, nil
}

// parseSetName returns the IPSET_ATTR_SETNAME of one list reply (an nfgenmsg header followed by
// attributes).
func parseSetName(msg []byte) (string, bool) {
	const nfgenmsgLen = 4
	if len(msg) < nfgenmsgLen {
		return "", false
	}
	attrs, err := parseAttrs(msg[nfgenmsgLen:])
	if err != nil {
		return "", false
	}
	for _, a := range attrs {
		if a.typ&^(nl.NLA_F_NESTED|nl.NLA_F_NET_BYTEORDER) == nl.IPSET_ATTR_SETNAME {
			v := a.value
			if i := bytes.IndexByte(v, 0); i >= 0 {
				v = v[:i]
			}
			return string(v), len(v) > 0
		}
	}
	return "", false
}

type attr struct {
	typ   uint16
	value []byte
}

// parseAttrs splits a run of netlink attributes (not recursing into nested ones).
func parseAttrs(b []byte) ([]attr, error) {
	var out []attr
	native := nl.NativeEndian()
	for len(b) >= 4 {
		l := int(native.Uint16(b[0:2]))
		if l < 4 || l > len(b) {
			return out, fmt.Errorf("malformed netlink attribute (length %d, %d bytes left)", l, len(b))
		}
		out = append(out, attr{typ: native.Uint16(b[2:4]), value: b[4:l]})
		l = (l + unix.NLA_ALIGNTO - 1) &^ (unix.NLA_ALIGNTO - 1)
		if l > len(b) {
			break
		}
		b = b[l:]
	}
	return out, nil
}
