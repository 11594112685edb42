package iptables

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// optionSpec says how an option of a match module or target is written.
type optionSpec struct {
	values    int  // how many values follow the option: 0, 1 or 2
	negatable bool // whether "!" may precede it
}

// optionArg is one option as written in a rule, its values read.
type optionArg struct {
	owner  string   // what took the option, e.g. "-m tcp", for error messages
	name   string   // e.g. "--dport"
	values []string // as many as its optionSpec says
	negate bool
}

// value returns the option's first value, or "" for an option that takes none.
func (o optionArg) value() string {
	if len(o.values) == 0 {
		return ""
	}
	return o.values[0]
}

// errorf reports a problem with the option's value, naming the option and
// what took it: "-m tcp --dport: invalid port \"x\"".
func (o optionArg) errorf(format string, a ...any) error {
	return fmt.Errorf("%s %s: %s", o.owner, o.name, fmt.Sprintf(format, a...))
}

// byName indexes the definitions of match modules or targets by name. A
// name defined twice is a programming error, caught when the package loads.
func byName[D any](kind string, nameOf func(D) string, defs ...D) map[string]D {
	m := make(map[string]D, len(defs))
	for _, d := range defs {
		name := nameOf(d)
		if _, dup := m[name]; dup {
			panic("iptables: " + kind + " " + name + " defined twice")
		}
		m[name] = d
	}
	return m
}

// ParseRuleArgs interprets a rule's arguments (those after "-A CHAIN").
// It returns an error naming the argument for anything it does not
// understand: unknown options, unknown -m modules, a value missing, a
// negation where iptables allows none, or a malformed address, port, mark
// or probability.
func ParseRuleArgs(args []string) (*RuleSpec, error) {
	p := &ruleParser{args: args, spec: &RuleSpec{}}
	if err := p.parse(); err != nil {
		return nil, err
	}
	return p.spec, nil
}

type ruleParser struct {
	args      []string
	i         int
	spec      *RuleSpec
	modules   []*moduleUse
	protocol  *ProtocolMatch
	hasTarget bool
	target    *targetUse // the target when it is not a user chain
}

func (p *ruleParser) value(opt string) (string, error) {
	if p.i+1 >= len(p.args) {
		return "", fmt.Errorf("option %s needs a value", opt)
	}
	p.i++
	return p.args[p.i], nil
}

// readOption reads the values that follow option opt.
func (p *ruleParser) readOption(owner, opt string, spec optionSpec, negate bool) (optionArg, error) {
	o := optionArg{owner: owner, name: opt, negate: negate}
	for range spec.values {
		v, err := p.value(opt)
		if err != nil {
			return optionArg{}, err
		}
		o.values = append(o.values, v)
	}
	return o, nil
}

func (p *ruleParser) parse() error {
	negate := false
	for ; p.i < len(p.args); p.i++ {
		arg := p.args[p.i]
		if arg == "!" {
			if negate {
				return fmt.Errorf("double negation at argument %d", p.i+1)
			}
			negate = true
			continue
		}
		if err := p.option(arg, negate); err != nil {
			return err
		}
		negate = false
	}
	if negate {
		return fmt.Errorf("trailing \"!\"")
	}
	return p.finish()
}

func (p *ruleParser) option(opt string, negate bool) error {
	switch opt {
	case "-s", "--source", "--src", "-d", "--destination", "--dst":
		v, err := p.value(opt)
		if err != nil {
			return err
		}
		m, err := parseAddrMatch(v)
		if err != nil {
			return fmt.Errorf("%s: %w", opt, err)
		}
		m.Source = opt == "-s" || opt == "--source" || opt == "--src"
		m.Negate = negate
		p.spec.Matches = append(p.spec.Matches, m)
		return nil
	case "-p", "--protocol":
		v, err := p.value(opt)
		if err != nil {
			return err
		}
		if p.protocol != nil {
			return fmt.Errorf("-p given twice")
		}
		v, err = parseProtocol(v)
		if err != nil {
			return fmt.Errorf("-p: %w", err)
		}
		p.protocol = &ProtocolMatch{Protocol: v, Negate: negate}
		p.spec.Matches = append(p.spec.Matches, p.protocol)
		return nil
	case "-i", "--in-interface", "-o", "--out-interface":
		v, err := p.value(opt)
		if err != nil {
			return err
		}
		if v == "" || len(v) > 15 {
			return fmt.Errorf("%s: invalid interface name %q", opt, v)
		}
		p.spec.Matches = append(p.spec.Matches, &IfaceMatch{In: opt == "-i" || opt == "--in-interface", Name: v, Negate: negate})
		return nil
	case "-m", "--match":
		if negate {
			return fmt.Errorf("\"!\" cannot precede %s", opt)
		}
		v, err := p.value(opt)
		if err != nil {
			return err
		}
		m, ok := matchModules[v]
		if !ok {
			return fmt.Errorf("unsupported match module %q", v)
		}
		p.loadModule(m)
		return nil
	case "-j", "--jump", "-g", "--goto":
		if negate {
			return fmt.Errorf("\"!\" cannot precede %s", opt)
		}
		if p.hasTarget {
			return fmt.Errorf("more than one target")
		}
		v, err := p.value(opt)
		if err != nil {
			return err
		}
		if v == "" || strings.HasPrefix(v, "-") {
			return fmt.Errorf("%s: invalid target %q", opt, v)
		}
		p.hasTarget = true
		p.spec.Target = Target{Name: v, Goto: opt == "-g" || opt == "--goto"}
		if def, ok := targets[v]; ok {
			p.target = &targetUse{def: def, target: &p.spec.Target, seen: map[string]bool{}}
		}
		return nil
	}
	if !strings.HasPrefix(opt, "--") {
		return fmt.Errorf("unsupported argument %q", opt)
	}
	if p.target != nil {
		if _, ok := p.target.def.options[opt]; ok {
			return p.targetOption(p.target, opt, negate)
		}
	}
	for _, u := range slices.Backward(p.modules) {
		if _, ok := u.module.options[opt]; ok {
			return p.moduleOption(u, opt, negate)
		}
	}
	// Like iptables, -p tcp/udp/sctp implicitly loads that protocol's match.
	if p.protocol != nil && !p.protocol.Negate {
		if m, ok := matchModules[p.protocol.Protocol]; ok {
			if _, ok := m.options[opt]; ok {
				u := p.loadModule(m)
				return p.moduleOption(u, opt, negate)
			}
		}
	}
	if p.hasTarget && p.spec.Target.IsChain() {
		return fmt.Errorf("unknown option %s (target %s is a chain and takes no options)", opt, p.spec.Target.Name)
	}
	return fmt.Errorf("unknown option %s (not accepted by any loaded match or the target)", opt)
}

// loadModule adds a use of module m to the rule; its options follow.
func (p *ruleParser) loadModule(m *matchModule) *moduleUse {
	u := &moduleUse{module: m, seen: map[string]bool{}, rule: p.spec}
	if m.newMatch != nil {
		u.match = m.newMatch()
		p.spec.Matches = append(p.spec.Matches, u.match)
	}
	p.modules = append(p.modules, u)
	return u
}

// moduleOption reads option opt of module use u. What every module shares
// is checked here, in this order: the option given twice, its values, a
// negation it does not allow.
func (p *ruleParser) moduleOption(u *moduleUse, opt string, negate bool) error {
	if u.seen[opt] {
		return fmt.Errorf("-m %s: option %s given twice", u.module.name, opt)
	}
	spec := u.module.options[opt]
	o, err := p.readOption("-m "+u.module.name, opt, spec, negate)
	if err != nil {
		return err
	}
	if negate && !spec.negatable {
		return o.errorf("cannot be negated")
	}
	if err := u.module.setOption(u, o); err != nil {
		return err
	}
	u.seen[opt] = true
	return nil
}

// targetOption reads option opt of the rule's target. No target option
// may be negated.
func (p *ruleParser) targetOption(u *targetUse, opt string, negate bool) error {
	if negate {
		return fmt.Errorf("\"!\" cannot precede target option %s", opt)
	}
	o, err := p.readOption("-j "+u.def.name, opt, u.def.options[opt], false)
	if err != nil {
		return err
	}
	if err := u.def.setOption(u, o); err != nil {
		return err
	}
	u.seen[opt] = true
	return nil
}

// finish checks what can only be checked once all arguments are read.
func (p *ruleParser) finish() error {
	for _, u := range p.modules {
		if u.module.check == nil {
			continue
		}
		if err := u.module.check(u); err != nil {
			return err
		}
	}
	if u := p.target; u != nil && u.def.check != nil {
		return u.def.check(u)
	}
	return nil
}

// parsePrefix parses an -s/-d value: an address, a CIDR, or an address with
// a dotted netmask. A bare address means a host prefix.
// parseAddrMatch parses an -s/-d value: an address, a CIDR, or an address
// with an address-form mask. A mask that is not a prefix (iptables accepts
// any, e.g. "0.0.0.5/0.0.0.63", matching on the low bits) is kept as Mask.
func parseAddrMatch(v string) (*AddrMatch, error) {
	addr, mask, hasMask := strings.Cut(v, "/")
	if a, err := netip.ParseAddr(addr); err == nil && hasMask {
		if m, err := netip.ParseAddr(mask); err == nil && m.Is4() == a.Is4() && maskLen(m) < 0 {
			return &AddrMatch{Prefix: netip.PrefixFrom(andAddr(a, m), a.BitLen()), Mask: m}, nil
		}
	}
	prefix, err := parsePrefix(v)
	if err != nil {
		return nil, err
	}
	return &AddrMatch{Prefix: prefix}, nil
}

// maskLen returns the length of a contiguous address-form mask of either
// family, or -1.
func maskLen(mask netip.Addr) int {
	b := mask.AsSlice()
	n := 0
	for _, x := range b {
		for bit := 7; bit >= 0; bit-- {
			if x&(1<<bit) == 0 {
				goto rest
			}
			n++
		}
	}
	return n
rest:
	for i := n / 8; i < len(b); i++ {
		keep := byte(0)
		if i == n/8 {
			keep = byte(0xff << (8 - n%8))
		}
		if b[i]&^keep != 0 {
			return -1
		}
	}
	return n
}

// andAddr is a AND mask, bytewise.
func andAddr(a, mask netip.Addr) netip.Addr {
	x, m := a.AsSlice(), mask.AsSlice()
	for i := range x {
		x[i] &= m[i]
	}
	out, _ := netip.AddrFromSlice(x)
	return out
}

func parsePrefix(v string) (netip.Prefix, error) {
	addr, bits, hasBits := strings.Cut(v, "/")
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("invalid address %q", v)
	}
	n := a.BitLen()
	if hasBits {
		if mask, err := netip.ParseAddr(bits); err == nil && mask.Is4() == a.Is4() {
			n = maskLen(mask)
			if n < 0 {
				return netip.Prefix{}, fmt.Errorf("non-contiguous netmask in %q", v)
			}
		} else if n, err = strconv.Atoi(bits); err != nil || n < 0 || n > a.BitLen() {
			return netip.Prefix{}, fmt.Errorf("invalid prefix length in %q", v)
		}
	}
	return netip.PrefixFrom(a, n).Masked(), nil
}

// parsePortRange parses "p", "a:b", "a:" or ":b".
func parsePortRange(v string) (lo, hi uint16, err error) {
	port := func(s string, def uint16) (uint16, error) {
		if s == "" {
			return def, nil
		}
		n, err := strconv.ParseUint(s, 10, 16)
		if err != nil {
			return 0, fmt.Errorf("invalid port %q", s)
		}
		return uint16(n), nil
	}
	a, b, isRange := strings.Cut(v, ":")
	if !isRange {
		if v == "" {
			return 0, 0, fmt.Errorf("empty port")
		}
		p, err := port(v, 0)
		return p, p, err
	}
	if lo, err = port(a, 0); err != nil {
		return 0, 0, err
	}
	if hi, err = port(b, 65535); err != nil {
		return 0, 0, err
	}
	if lo > hi {
		return 0, 0, fmt.Errorf("port range %q is backwards", v)
	}
	return lo, hi, nil
}

// parseMark parses "value" or "value/mask" (decimal or 0x hex). Without a
// mask, the mask is all ones.
func parseMark(v string) (value, mask uint32, err error) {
	vs, ms, hasMask := strings.Cut(v, "/")
	val, err := strconv.ParseUint(vs, 0, 32)
	if err != nil {
		return 0, 0, fmt.Errorf("invalid mark %q", v)
	}
	m := uint64(0xffffffff)
	if hasMask {
		if m, err = strconv.ParseUint(ms, 0, 32); err != nil {
			return 0, 0, fmt.Errorf("invalid mask in %q", v)
		}
	}
	return uint32(val), uint32(m), nil
}

// parseNATRange parses DNAT/SNAT ranges: "a", "a:p", "a-b:p-q",
// "[v6]:p", "v6" (IPv6 without port needs no brackets).
func parseNATRange(v string) (*NATRange, error) {
	addrs, ports := v, ""
	if strings.HasPrefix(v, "[") {
		end := strings.Index(v, "]")
		if end < 0 {
			return nil, fmt.Errorf("unterminated [ in %q", v)
		}
		addrs, ports = v[1:end], strings.TrimPrefix(v[end+1:], ":")
		if end+1 < len(v) && v[end+1] != ':' {
			return nil, fmt.Errorf("invalid range %q", v)
		}
	} else if strings.Count(v, ":") == 1 {
		addrs, ports, _ = strings.Cut(v, ":")
	}
	r := &NATRange{}
	lo, hi, isRange := strings.Cut(addrs, "-")
	var err error
	if r.MinAddr, err = netip.ParseAddr(lo); err != nil {
		return nil, fmt.Errorf("invalid address in %q", v)
	}
	r.MaxAddr = r.MinAddr
	if isRange {
		if r.MaxAddr, err = netip.ParseAddr(hi); err != nil || r.MaxAddr.Less(r.MinAddr) || r.MaxAddr.Is4() != r.MinAddr.Is4() {
			return nil, fmt.Errorf("invalid address range in %q", v)
		}
	}
	if ports != "" {
		pl, ph, _ := strings.Cut(ports, "-")
		if ph == "" {
			ph = pl
		}
		if r.MinPort, r.MaxPort, err = parsePortRange(pl + ":" + ph); err != nil || r.MinPort == 0 {
			return nil, fmt.Errorf("invalid port range in %q", v)
		}
	}
	return r, nil
}
