package iptables

import (
	"fmt"
	"strings"
)

// targetDef defines one target ParseRuleArgs understands besides user
// chains: a verdict or a target extension. Like a matchModule, it is all
// the parser knows about the target; supporting a new one means adding one
// value here (and teaching the tracer what it does).
type targetDef struct {
	name string
	// natOnly: iptables accepts the target in the nat table only.
	natOnly bool
	// options lists every option the target accepts. None may be negated.
	options map[string]optionSpec
	// setOption applies one option to the rule's Target, its values read.
	setOption func(u *targetUse, o optionArg) error
	// check validates the target once all the rule's arguments are read;
	// nil when there is nothing to check.
	check func(u *targetUse) error
}

// targetUse is the -j / -g of the rule being parsed, when it names a targetDef.
type targetUse struct {
	def    *targetDef
	target *Target
	seen   map[string]bool // the options applied so far
}

// targets holds every target ParseRuleArgs understands, by name.
var targets = byName("target", func(d *targetDef) string { return d.name },
	&targetDef{name: TargetAccept},
	&targetDef{name: TargetDrop},
	&targetDef{name: TargetReturn},
	&targetDef{name: "QUEUE"},
	&targetDef{name: "NOTRACK"},
	dnatTarget, snatTarget, masqueradeTarget, redirectTarget,
	markTarget, rejectTarget, logTarget,
	// Other software's targets (targets_more.go).
	connmarkTarget, ctTarget, tproxyTarget, netmapTarget, nfqueueTarget,
	nflogTarget, tcpmssTarget, checksumTarget, classifyTarget, dscpTarget, tosTarget,
	auditTarget, traceTarget,
)

// IsStandardTarget reports whether name is a verdict or a target extension
// known to ParseRuleArgs, rather than a user-defined chain.
func IsStandardTarget(name string) bool {
	_, ok := targets[name]
	return ok
}

// isNATOnlyTarget reports whether iptables accepts target name in the nat table only.
func isNATOnlyTarget(name string) bool {
	d := targets[name]
	return d != nil && d.natOnly
}

// targetNeeds returns a check that option opt was given.
func targetNeeds(opt string) func(u *targetUse) error {
	return func(u *targetUse) error {
		if !u.seen[opt] {
			return fmt.Errorf("-j %s needs %s", u.def.name, opt)
		}
		return nil
	}
}

var dnatTarget = &targetDef{
	name:    "DNAT",
	natOnly: true,
	options: map[string]optionSpec{
		"--to-destination": {values: 1},
		"--random":         {},
		"--persistent":     {},
	},
	setOption: setNATOption,
	check:     targetNeeds("--to-destination"),
}

var snatTarget = &targetDef{
	name:    "SNAT",
	natOnly: true,
	options: map[string]optionSpec{
		"--to-source":    {values: 1},
		"--random":       {},
		"--random-fully": {},
		"--persistent":   {},
	},
	setOption: setNATOption,
	check:     targetNeeds("--to-source"),
}

var masqueradeTarget = &targetDef{
	name:    "MASQUERADE",
	natOnly: true,
	options: map[string]optionSpec{
		"--to-ports":     {values: 1},
		"--random":       {},
		"--random-fully": {},
	},
	setOption: setNATOption,
}

var redirectTarget = &targetDef{
	name:    "REDIRECT",
	natOnly: true,
	options: map[string]optionSpec{
		"--to-ports": {values: 1},
		"--random":   {},
	},
	setOption: setNATOption,
}

// setNATOption applies an option of DNAT, SNAT, MASQUERADE or REDIRECT;
// each target's options say which of these it accepts.
func setNATOption(u *targetUse, o optionArg) error {
	t := u.target
	switch o.name {
	case "--to-destination", "--to-source":
		if t.NAT != nil {
			return o.errorf("given twice")
		}
		r, err := parseNATRange(o.value())
		if err != nil {
			return o.errorf("%v", err)
		}
		t.NAT = r
	case "--to-ports":
		if _, _, err := parsePortRange(strings.Replace(o.value(), "-", ":", 1)); err != nil {
			return o.errorf("%v", err)
		}
		t.ToPorts = o.value()
	case "--random":
		t.Random = true
	case "--random-fully":
		t.RandomFully = true
	case "--persistent":
		t.Persistent = true
	}
	return nil
}

// markTarget's options are all mark operations, of which a rule may give
// one; each is normalised to new = (old &^ MarkMask) ^ MarkValue.
var markTarget = &targetDef{
	name: "MARK",
	options: map[string]optionSpec{
		"--set-xmark": {values: 1},
		"--set-mark":  {values: 1},
		"--or-mark":   {values: 1},
		"--and-mark":  {values: 1},
		"--xor-mark":  {values: 1},
	},
	setOption: func(u *targetUse, o optionArg) error {
		if len(u.seen) > 0 {
			return o.errorf("only one mark operation is allowed")
		}
		op, err := markOperation(o)
		if err != nil {
			return err
		}
		u.target.MarkValue, u.target.MarkMask = op.value, op.mask
		return nil
	},
	check: func(u *targetUse) error {
		if len(u.seen) == 0 {
			return fmt.Errorf("-j MARK needs a mark operation")
		}
		return nil
	},
}

// markOp is a mark operation normalised to new = (old &^ mask) ^ value.
type markOp struct{ value, mask uint32 }

// markOperation reads one of the mark operations MARK and CONNMARK share:
// --set-xmark, --set-mark, --or-mark, --and-mark, --xor-mark.
func markOperation(o optionArg) (markOp, error) {
	val, mask, err := parseMark(o.value())
	if err != nil {
		return markOp{}, o.errorf("%v", err)
	}
	if strings.Contains(o.value(), "/") && o.name != "--set-xmark" && o.name != "--set-mark" {
		return markOp{}, o.errorf("takes no mask")
	}
	switch o.name {
	case "--set-xmark":
		return markOp{val, mask}, nil
	case "--set-mark":
		return markOp{val, mask | val}, nil
	case "--or-mark":
		return markOp{val, val}, nil
	case "--and-mark":
		return markOp{0, ^val}, nil
	}
	return markOp{val, 0}, nil // --xor-mark
}

var rejectTarget = &targetDef{
	name:    TargetReject,
	options: map[string]optionSpec{"--reject-with": {values: 1}},
	setOption: func(u *targetUse, o optionArg) error {
		u.target.RejectWith = o.value()
		return nil
	},
}

// logTarget keeps the prefix and level; its flags change only what is logged.
var logTarget = &targetDef{
	name: "LOG",
	options: map[string]optionSpec{
		"--log-prefix":       {values: 1},
		"--log-level":        {values: 1},
		"--log-tcp-sequence": {},
		"--log-tcp-options":  {},
		"--log-ip-options":   {},
		"--log-uid":          {},
	},
	setOption: func(u *targetUse, o optionArg) error {
		switch o.name {
		case "--log-prefix":
			u.target.LogPrefix = o.value()
		case "--log-level":
			u.target.LogLevel = o.value()
		}
		return nil
	},
}
