package ipset

import (
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// memOps is an in-memory ops that answers with the kernel's raw errors, as observed on Linux
// 6.x: EEXIST for creating an existing set, ENOENT for a missing first set, IPSET_ERR_EXIST_SETNAME2
// for a missing second swap set, IPSET_ERR_BUSY for destroying a referenced set, and success for
// destroying a missing set (the netlink library does not send NLM_F_EXCL with DESTROY).
type memOps struct {
	sets  map[string]*memSet
	calls []string
	// fail maps "op name" (e.g. "add S-tmp", "swap S-tmp") to the error that call returns.
	fail map[string]error
	// onCall, when set, runs before every call with its "op name" key.
	onCall func(key string)
}

type memSet struct {
	typ     string
	opts    netlink.IpsetCreateOptions
	entries []netlink.IPSetEntry
	refs    int
}

var _ ops = &memOps{}

func newMemOps() *memOps { return &memOps{sets: map[string]*memSet{}, fail: map[string]error{}} }

func (m *memOps) call(op, name string, extra ...string) error {
	key := op + " " + name
	m.calls = append(m.calls, strings.Join(append([]string{key}, extra...), " "))
	if m.onCall != nil {
		m.onCall(key)
	}
	return m.fail[key]
}

func (m *memOps) create(name, typ string, opts netlink.IpsetCreateOptions) error {
	if err := m.call("create", name, typ); err != nil {
		return err
	}
	if _, ok := m.sets[name]; ok {
		return unix.EEXIST
	}
	m.sets[name] = &memSet{typ: typ, opts: opts}
	return nil
}

func (m *memOps) destroy(name string) error {
	if err := m.call("destroy", name); err != nil {
		return err
	}
	s, ok := m.sets[name]
	if !ok {
		return nil
	}
	if s.refs > 0 {
		return nl.IPSetError(nl.IPSET_ERR_BUSY)
	}
	delete(m.sets, name)
	return nil
}

func (m *memOps) swap(a, b string) error {
	if err := m.call("swap", a, b); err != nil {
		return err
	}
	sa, sb := m.sets[a], m.sets[b]
	switch {
	case sa == nil:
		return unix.ENOENT
	case sb == nil:
		return nl.IPSetError(nl.IPSET_ERR_EXIST_SETNAME2)
	case sa.typ != sb.typ || sa.opts.Family != sb.opts.Family:
		return nl.IPSetError(nl.IPSET_ERR_TYPE_MISMATCH)
	}
	// References stay with the name (rules point at the slot), contents move.
	sa.refs, sb.refs = sb.refs, sa.refs
	m.sets[a], m.sets[b] = sb, sa
	return nil
}

func (m *memOps) list(name string) (*netlink.IPSetResult, error) {
	if err := m.call("list", name); err != nil {
		return nil, err
	}
	s, ok := m.sets[name]
	if !ok {
		return nil, unix.ENOENT
	}
	res := &netlink.IPSetResult{
		SetName:     name,
		TypeName:    s.typ,
		Family:      s.opts.Family,
		Revision:    s.opts.Revision,
		MaxElements: s.opts.MaxElements,
		References:  uint32(s.refs),
		Entries:     slices.Clone(s.entries),
	}
	if res.MaxElements == 0 {
		res.MaxElements = 65536
	}
	if s.opts.Comments {
		res.CadtFlags |= nl.IPSET_FLAG_WITH_COMMENT
	}
	return res, nil
}

func (m *memOps) add(name string, e *netlink.IPSetEntry) error {
	if err := m.call("add", name, fmt.Sprintf("%v/%d", e.IP, e.CIDR)); err != nil {
		return err
	}
	s, ok := m.sets[name]
	if !ok {
		return unix.ENOENT
	}
	is4 := e.IP.To4() != nil
	if is4 != (s.opts.Family == unix.AF_INET) {
		return nl.IPSetError(nl.IPSET_ERR_INVALID_FAMILY)
	}
	if e.Comment != "" && !s.opts.Comments {
		return nl.IPSetError(nl.IPSET_ERR_COMMENT)
	}
	for _, x := range s.entries {
		if x.IP.Equal(e.IP) && x.CIDR == e.CIDR {
			return nl.IPSetError(nl.IPSET_ERR_EXIST)
		}
	}
	ip := e.IP
	if is4 {
		ip = ip.To4()
	}
	s.entries = append(s.entries, netlink.IPSetEntry{IP: slices.Clone(ip), CIDR: e.CIDR, Comment: e.Comment})
	return nil
}

func (m *memOps) names() ([]string, error) {
	if err := m.call("names", ""); err != nil {
		return nil, err
	}
	return slices.Collect(maps.Keys(m.sets)), nil
}

// entries returns the named set's entries as "ip/cidr comment" strings, sorted.
func (m *memOps) entries(name string) []string {
	s := m.sets[name]
	if s == nil {
		return nil
	}
	var out []string
	for _, e := range s.entries {
		out = append(out, strings.TrimSpace(fmt.Sprintf("%v/%d %s", net.IP(e.IP), e.CIDR, e.Comment)))
	}
	slices.Sort(out)
	return out
}
