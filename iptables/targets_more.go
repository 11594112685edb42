package iptables

import (
	"fmt"
	"net/netip"
	"strconv"
)

// The target extensions of other software's rules on real nodes (CNI
// plugins, Docker, firewalls). Each is one definition, as in targets.go.

// connmarkTarget is -j CONNMARK: a mark operation on the connection's
// mark (normalised like MARK's), or --save-mark / --restore-mark between
// the packet's mark and the connection's.
var connmarkTarget = &targetDef{
	name: "CONNMARK",
	options: map[string]optionSpec{
		"--set-xmark": {values: 1}, "--set-mark": {values: 1},
		"--and-mark": {values: 1}, "--or-mark": {values: 1}, "--xor-mark": {values: 1},
		"--save-mark": {}, "--restore-mark": {},
		"--nfmask": {values: 1}, "--ctmask": {values: 1}, "--mask": {values: 1},
	},
	setOption: func(u *targetUse, o optionArg) error {
		t := connmarkOf(u.target)
		switch o.name {
		case "--nfmask", "--ctmask", "--mask":
			v, err := strconv.ParseUint(o.value(), 0, 32)
			if err != nil {
				return o.errorf("invalid mask %q", o.value())
			}
			if o.name != "--ctmask" {
				t.NFMask = uint32(v)
			}
			if o.name != "--nfmask" {
				t.CTMask = uint32(v)
			}
			return nil
		case "--save-mark", "--restore-mark":
			if t.Op != "" {
				return o.errorf("only one CONNMARK operation is allowed")
			}
			t.Op = o.name[2 : len(o.name)-len("-mark")]
			return nil
		}
		if t.Op != "" {
			return o.errorf("only one CONNMARK operation is allowed")
		}
		op, err := markOperation(o)
		if err != nil {
			return err
		}
		t.Op, t.Value, t.Mask = "set", op.value, op.mask
		return nil
	},
	check: func(u *targetUse) error {
		t := connmarkOf(u.target)
		switch {
		case t.Op == "":
			return fmt.Errorf("-j CONNMARK needs an operation (--set-xmark, --save-mark, --restore-mark, ...)")
		case t.Op == "set" && (u.seen["--nfmask"] || u.seen["--ctmask"] || u.seen["--mask"]):
			return fmt.Errorf("-j CONNMARK: --nfmask, --ctmask and --mask go with --save-mark or --restore-mark")
		}
		return nil
	},
}

// connmarkOf returns the target's CONNMARK options, creating them with
// the default masks (all ones) on first use.
func connmarkOf(t *Target) *ConnmarkTarget {
	if c, ok := t.Ext.(*ConnmarkTarget); ok {
		return c
	}
	c := &ConnmarkTarget{NFMask: 0xffffffff, CTMask: 0xffffffff}
	t.Ext = c
	return c
}

// ctTarget is -j CT (raw table). Of its options only --notrack changes the
// packet's fate; the others set zones, helpers and timeouts.
var ctTarget = &targetDef{
	name: "CT",
	options: map[string]optionSpec{
		"--notrack": {}, "--helper": {values: 1}, "--ctevents": {values: 1}, "--expevents": {values: 1},
		"--zone": {values: 1}, "--zone-orig": {values: 1}, "--zone-reply": {values: 1}, "--timeout": {values: 1},
	},
	setOption: func(u *targetUse, o optionArg) error {
		t, ok := u.target.Ext.(*CTTarget)
		if !ok {
			t = &CTTarget{}
			u.target.Ext = t
		}
		if o.name == "--notrack" {
			t.NoTrack = true
		}
		return nil
	},
}

// tproxyTarget is -j TPROXY (mangle PREROUTING, with -p tcp or udp).
var tproxyTarget = &targetDef{
	name: "TPROXY",
	options: map[string]optionSpec{
		"--on-port": {values: 1}, "--on-ip": {values: 1}, "--tproxy-mark": {values: 1},
	},
	setOption: func(u *targetUse, o optionArg) error {
		t, ok := u.target.Ext.(*TProxyTarget)
		if !ok {
			t = &TProxyTarget{}
			u.target.Ext = t
		}
		switch o.name {
		case "--on-port":
			lo, hi, err := parsePortRange(o.value())
			if err != nil || lo != hi {
				return o.errorf("invalid port %q", o.value())
			}
			t.Port = lo
		case "--on-ip":
			a, err := netip.ParseAddr(o.value())
			if err != nil {
				return o.errorf("invalid address %q", o.value())
			}
			t.Addr = a
		case "--tproxy-mark":
			v, m, err := parseMark(o.value())
			if err != nil {
				return o.errorf("%v", err)
			}
			t.MarkValue, t.MarkMask = v, m
		}
		return nil
	},
	check: targetNeeds("--on-port"),
}

// netmapTarget is -j NETMAP --to PREFIX (nat).
var netmapTarget = &targetDef{
	name:    "NETMAP",
	natOnly: true,
	options: map[string]optionSpec{"--to": {values: 1}},
	setOption: func(u *targetUse, o optionArg) error {
		p, err := parsePrefix(o.value())
		if err != nil {
			return o.errorf("%v", err)
		}
		u.target.Ext = &NetmapTarget{To: p}
		return nil
	},
	check: targetNeeds("--to"),
}

// passThrough defines a target that changes nothing the tracer follows
// (logging, queue selection, checksums, header fields): the packet goes
// on to the next rule. Its options are checked, not kept.
func passThrough(name string, options map[string]optionSpec) *targetDef {
	return &targetDef{name: name, options: options, setOption: func(*targetUse, optionArg) error { return nil }}
}

var (
	nflogTarget = passThrough("NFLOG", map[string]optionSpec{
		"--nflog-group": {values: 1}, "--nflog-prefix": {values: 1}, "--nflog-range": {values: 1},
		"--nflog-size": {values: 1}, "--nflog-threshold": {values: 1},
	})
	tcpmssTarget   = passThrough("TCPMSS", map[string]optionSpec{"--set-mss": {values: 1}, "--clamp-mss-to-pmtu": {}})
	checksumTarget = passThrough("CHECKSUM", map[string]optionSpec{"--checksum-fill": {}})
	classifyTarget = passThrough("CLASSIFY", map[string]optionSpec{"--set-class": {values: 1}})
	dscpTarget     = passThrough("DSCP", map[string]optionSpec{"--set-dscp": {values: 1}, "--set-dscp-class": {values: 1}})
	tosTarget      = passThrough("TOS", map[string]optionSpec{
		"--set-tos": {values: 1}, "--and-tos": {values: 1}, "--or-tos": {values: 1}, "--xor-tos": {values: 1},
	})
	auditTarget = passThrough("AUDIT", map[string]optionSpec{"--type": {values: 1}})
	traceTarget = passThrough("TRACE", nil)
)

// nfqueueTarget hands the packet to a userspace program, which decides.
var nfqueueTarget = &targetDef{
	name: "NFQUEUE",
	options: map[string]optionSpec{
		"--queue-num": {values: 1}, "--queue-balance": {values: 1}, "--queue-bypass": {},
		"--fail-open": {}, "--queue-cpu-fanout": {},
	},
	setOption: func(*targetUse, optionArg) error { return nil },
}
