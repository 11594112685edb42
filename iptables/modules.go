package iptables

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// matchModule defines one -m match module of ParseRuleArgs: everything the
// parser knows about it. Supporting a new module means adding one value
// here (and its Match type in rulespec.go, and its evaluation in the
// tracer); the parser itself needs no change.
type matchModule struct {
	name string
	// options lists every option the module accepts; any other is an
	// "unknown option" unless another loaded module or the target takes it.
	options map[string]optionSpec
	// newMatch returns the empty Match that -m NAME adds to the rule and
	// setOption fills in. It is nil for a module whose options each add a
	// Match of their own instead (tcp/udp/sctp: one PortMatch per port option).
	newMatch func() Match
	// setOption applies one option, its values read and its negation
	// already checked against optionSpec.negatable.
	setOption func(u *moduleUse, o optionArg) error
	// check validates the module's use once all the rule's arguments are
	// read (required options, combinations); nil when there is nothing to check.
	check func(u *moduleUse) error
}

// moduleUse is one -m in the rule being parsed.
type moduleUse struct {
	module *matchModule
	match  Match           // from module.newMatch; nil for tcp/udp/sctp
	seen   map[string]bool // the options applied so far
	rule   *RuleSpec       // the rule being built, for modules that add matches or look at others
}

// addMatch appends m to the rule, where the option that built it was written.
func (u *moduleUse) addMatch(m Match) {
	u.rule.Matches = append(u.rule.Matches, m)
}

// matchModules holds every module ParseRuleArgs understands, by name.
var matchModules = byName("match module", func(m *matchModule) string { return m.name },
	portModule("tcp"), portModule("udp"), portModule("sctp"),
	commentModule, addrTypeModule, markModule, statisticModule,
	recentModule, conntrackModule, setModule,
	// Other software's modules (modules_more.go).
	multiportModule, iprangeModule, physdevModule, connmarkModule, stateModule,
	icmpModule(false), icmpModule(true), pktTypeModule, nfacctModule,
	limitModule, hashlimitModule, connlimitModule, socketModule, ownerModule,
	macModule, rpfilterModule, policyModule, lengthModule,
)

// needs returns a check that option opt was given.
func needs(opt string) func(u *moduleUse) error {
	return func(u *moduleUse) error {
		if !u.seen[opt] {
			return fmt.Errorf("-m %s needs %s", u.module.name, opt)
		}
		return nil
	}
}

// needsAny returns a check that at least one of the module's options was
// given; what names them in the error.
func needsAny(what string) func(u *moduleUse) error {
	return func(u *moduleUse) error {
		if len(u.seen) == 0 {
			return fmt.Errorf("-m %s needs %s", u.module.name, what)
		}
		return nil
	}
}

// count parses an option's value as a number of seconds, packets or hits.
func count(o optionArg) (int, error) {
	n, err := strconv.Atoi(o.value())
	if err != nil || n < 0 {
		return 0, o.errorf("invalid number %q", o.value())
	}
	return n, nil
}

// portModule is -m tcp, -m udp or -m sctp. Each port option adds a
// PortMatch; the module needs the same protocol given with -p (which, as in
// iptables, also loads it implicitly: see ruleParser.option).
//
// -m tcp also takes --tcp-flags MASK COMP, --syn (which is --tcp-flags
// SYN,RST,ACK,FIN SYN) and --tcp-option N; each adds a match of its own.
func portModule(protocol string) *matchModule {
	options := map[string]optionSpec{
		"--dport":            {values: 1, negatable: true},
		"--destination-port": {values: 1, negatable: true},
		"--sport":            {values: 1, negatable: true},
		"--source-port":      {values: 1, negatable: true},
	}
	if protocol == "tcp" {
		options["--tcp-flags"] = optionSpec{values: 2, negatable: true}
		options["--syn"] = optionSpec{negatable: true}
		options["--tcp-option"] = optionSpec{values: 1, negatable: true}
	}
	return &matchModule{
		name:    protocol,
		options: options,
		setOption: func(u *moduleUse, o optionArg) error {
			switch o.name {
			case "--tcp-flags", "--syn":
				m, err := parseTCPFlags(o)
				if err != nil {
					return err
				}
				u.addMatch(m)
				return nil
			case "--tcp-option":
				if n, err := strconv.Atoi(o.value()); err != nil || n < 0 || n > 255 {
					return o.errorf("invalid TCP option %q", o.value())
				}
				u.addMatch(&UndecidableMatch{Module: "tcp --tcp-option", Why: "the TCP options the client sends"})
				return nil
			}
			lo, hi, err := parsePortRange(o.value())
			if err != nil {
				return o.errorf("%v", err)
			}
			source := o.name == "--sport" || o.name == "--source-port"
			u.addMatch(&PortMatch{Protocol: protocol, Source: source, Min: lo, Max: hi, Negate: o.negate})
			return nil
		},
		check: func(u *moduleUse) error {
			if p := protocolOf(u.rule); p == nil || p.Negate || p.Protocol != protocol {
				return fmt.Errorf("-m %s needs -p %s", protocol, protocol)
			}
			return nil
		},
	}
}

// protocolOf returns the rule's -p match, or nil.
func protocolOf(rule *RuleSpec) *ProtocolMatch {
	for _, m := range rule.Matches {
		if p, ok := m.(*ProtocolMatch); ok {
			return p
		}
	}
	return nil
}

var commentModule = &matchModule{
	name:     "comment",
	options:  map[string]optionSpec{"--comment": {values: 1}},
	newMatch: func() Match { return &CommentMatch{} },
	setOption: func(u *moduleUse, o optionArg) error {
		u.match.(*CommentMatch).Comment = o.value()
		return nil
	},
	check: needs("--comment"),
}

var addrTypes = []string{"UNSPEC", "UNICAST", "LOCAL", "BROADCAST", "ANYCAST", "MULTICAST", "BLACKHOLE", "UNREACHABLE", "PROHIBIT", "THROW", "NAT", "XRESOLVE"}

var addrTypeModule = &matchModule{
	name: "addrtype",
	options: map[string]optionSpec{
		"--src-type":        {values: 1, negatable: true},
		"--dst-type":        {values: 1, negatable: true},
		"--limit-iface-in":  {},
		"--limit-iface-out": {},
	},
	newMatch: func() Match { return &AddrTypeMatch{} },
	setOption: func(u *moduleUse, o optionArg) error {
		m := u.match.(*AddrTypeMatch)
		switch o.name {
		case "--limit-iface-in":
			m.LimitIfaceIn = true
			return nil
		case "--limit-iface-out":
			m.LimitIfaceOut = true
			return nil
		}
		types := o.value()
		for _, t := range strings.Split(types, ",") {
			if !slices.Contains(addrTypes, t) {
				return o.errorf("unknown address type %q", t)
			}
		}
		if o.name == "--src-type" {
			m.SrcType, m.NegateSrc = types, o.negate
		} else {
			m.DstType, m.NegateDst = types, o.negate
		}
		return nil
	},
	check: func(u *moduleUse) error {
		if m := u.match.(*AddrTypeMatch); m.SrcType == "" && m.DstType == "" {
			return fmt.Errorf("-m addrtype needs --src-type or --dst-type")
		}
		return nil
	},
}

var markModule = markLikeModule("mark", func() Match { return &MarkMatch{} }, func(m Match, value, mask uint32, negate bool) {
	mm := m.(*MarkMatch)
	mm.Value, mm.Mask, mm.Negate = value, mask, negate
})

// markLikeModule is a module of one option, --mark VALUE[/MASK] (-m mark,
// -m connmark); set stores it in the module's Match.
func markLikeModule(name string, newMatch func() Match, set func(m Match, value, mask uint32, negate bool)) *matchModule {
	return &matchModule{
		name:     name,
		options:  map[string]optionSpec{"--mark": {values: 1, negatable: true}},
		newMatch: newMatch,
		setOption: func(u *moduleUse, o optionArg) error {
			val, mask, err := parseMark(o.value())
			if err != nil {
				return o.errorf("%v", err)
			}
			set(u.match, val, mask, o.negate)
			return nil
		},
		check: needs("--mark"),
	}
}

var statisticModule = &matchModule{
	name: "statistic",
	options: map[string]optionSpec{
		"--mode":        {values: 1},
		"--probability": {values: 1, negatable: true},
		"--every":       {values: 1, negatable: true},
		"--packet":      {values: 1},
	},
	newMatch: func() Match { return &StatisticMatch{} },
	setOption: func(u *moduleUse, o optionArg) error {
		m, v := u.match.(*StatisticMatch), o.value()
		switch o.name {
		case "--mode":
			if v != "random" && v != "nth" {
				return o.errorf("unknown mode %q", v)
			}
			m.Mode = v
		case "--probability":
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || f < 0 || f > 1 {
				return o.errorf("probability %q is not a number between 0 and 1", v)
			}
			m.Probability, m.Negate = f, o.negate
		case "--every", "--packet":
			n, err := count(o)
			if err != nil {
				return err
			}
			if o.name == "--every" {
				m.Every, m.Negate = n, o.negate
			} else {
				m.Packet = n
			}
		}
		return nil
	},
	check: func(u *moduleUse) error {
		seen := u.seen
		switch u.match.(*StatisticMatch).Mode {
		case "random":
			if !seen["--probability"] || seen["--every"] || seen["--packet"] {
				return fmt.Errorf("-m statistic --mode random needs --probability (and only that)")
			}
		case "nth":
			if !seen["--every"] || seen["--probability"] {
				return fmt.Errorf("-m statistic --mode nth needs --every (and no --probability)")
			}
		default:
			return fmt.Errorf("-m statistic needs --mode")
		}
		return nil
	},
}

var recentModule = &matchModule{
	name: "recent",
	options: map[string]optionSpec{
		"--name": {values: 1},
		// The mode: exactly one of these four.
		"--set":    {negatable: true},
		"--rcheck": {negatable: true},
		"--update": {negatable: true},
		"--remove": {negatable: true},

		"--seconds":  {values: 1},
		"--hitcount": {values: 1},
		"--reap":     {},
		"--rttl":     {},
		"--rsource":  {},
		"--rdest":    {},
		"--mask":     {values: 1},
	},
	newMatch: func() Match { return &RecentMatch{Name: "DEFAULT"} },
	setOption: func(u *moduleUse, o optionArg) error {
		m, v := u.match.(*RecentMatch), o.value()
		switch o.name {
		case "--set", "--rcheck", "--update", "--remove":
			if m.Mode != "" {
				return o.errorf("only one of --set, --rcheck, --update, --remove is allowed")
			}
			m.Mode, m.Negate = strings.TrimPrefix(o.name, "--"), o.negate
		case "--name":
			m.Name = v
		case "--seconds", "--hitcount":
			n, err := count(o)
			if err != nil {
				return err
			}
			if o.name == "--seconds" {
				m.Seconds = n
			} else {
				m.Hitcount = n
			}
		case "--reap":
			m.Reap = true
		case "--rttl":
			m.RTTL = true
		case "--rsource":
			m.Dest = false
		case "--rdest":
			m.Dest = true
		case "--mask":
			if _, err := netip.ParseAddr(v); err != nil {
				return o.errorf("invalid mask %q", v)
			}
			m.Mask = v
		}
		return nil
	},
	check: func(u *moduleUse) error {
		m := u.match.(*RecentMatch)
		if m.Mode == "" {
			return fmt.Errorf("-m recent needs one of --set, --rcheck, --update, --remove")
		}
		if (m.Seconds != 0 || m.Hitcount != 0 || m.Reap) && (m.Mode == "set" || m.Mode == "remove") {
			return fmt.Errorf("-m recent --seconds/--hitcount/--reap need --rcheck or --update")
		}
		if m.Reap && m.Seconds == 0 {
			return fmt.Errorf("-m recent --reap needs --seconds")
		}
		return nil
	},
}

var ctStates = []string{"INVALID", "NEW", "ESTABLISHED", "RELATED", "UNTRACKED", "SNAT", "DNAT"}

var ctStatuses = []string{"NONE", "EXPECTED", "SEEN_REPLY", "ASSURED", "CONFIRMED"}

// conntrackModule is -m conntrack. Each option adds a match of its own:
// --ctstate a ConntrackMatch; the tuple options (--ctorigdst ...) a
// CTAddrMatch or CTPortMatch; --ctproto, --ctstatus and --ctdir a
// CTFieldMatch; --ctexpire an UndecidableMatch.
var conntrackModule = &matchModule{
	name: "conntrack",
	options: map[string]optionSpec{
		"--ctstate":   {values: 1, negatable: true},
		"--ctproto":   {values: 1, negatable: true},
		"--ctorigsrc": {values: 1, negatable: true}, "--ctorigdst": {values: 1, negatable: true},
		"--ctreplsrc": {values: 1, negatable: true}, "--ctrepldst": {values: 1, negatable: true},
		"--ctorigsrcport": {values: 1, negatable: true}, "--ctorigdstport": {values: 1, negatable: true},
		"--ctreplsrcport": {values: 1, negatable: true}, "--ctrepldstport": {values: 1, negatable: true},
		"--ctstatus": {values: 1, negatable: true},
		"--ctexpire": {values: 1, negatable: true},
		"--ctdir":    {values: 1},
	},
	setOption: func(u *moduleUse, o optionArg) error {
		field := strings.TrimPrefix(o.name, "--ct")
		switch o.name {
		case "--ctstate":
			states, err := parseCTStates(o, ctStates)
			if err != nil {
				return err
			}
			u.addMatch(&ConntrackMatch{States: states, Negate: o.negate})
		case "--ctorigsrc", "--ctorigdst", "--ctreplsrc", "--ctrepldst":
			prefix, err := parsePrefix(o.value())
			if err != nil {
				return o.errorf("%v", err)
			}
			u.addMatch(&CTAddrMatch{Field: field, Prefix: prefix, Negate: o.negate})
		case "--ctorigsrcport", "--ctorigdstport", "--ctreplsrcport", "--ctrepldstport":
			lo, hi, err := parsePortRange(o.value())
			if err != nil {
				return o.errorf("%v", err)
			}
			u.addMatch(&CTPortMatch{Field: field, Min: lo, Max: hi, Negate: o.negate})
		case "--ctproto":
			proto, err := parseProtocol(o.value())
			if err != nil {
				return o.errorf("%v", err)
			}
			u.addMatch(&CTFieldMatch{Field: field, Values: []string{proto}, Negate: o.negate})
		case "--ctstatus":
			statuses, err := parseCTStates(o, ctStatuses)
			if err != nil {
				return err
			}
			u.addMatch(&CTFieldMatch{Field: field, Values: statuses, Negate: o.negate})
		case "--ctdir":
			dir := strings.ToUpper(o.value())
			if dir != "ORIGINAL" && dir != "REPLY" {
				return o.errorf("direction %q is neither ORIGINAL nor REPLY", o.value())
			}
			u.addMatch(&CTFieldMatch{Field: field, Values: []string{dir}})
		case "--ctexpire":
			u.addMatch(&UndecidableMatch{Module: "conntrack --ctexpire", Why: "how long the connection has left"})
		}
		return nil
	},
	check: needsAny("--ctstate (or another conntrack option)"),
}

var setModule = &matchModule{
	name: "set",
	// --match-set NAME FLAGS, e.g. "--match-set KUBE-X src,dst".
	// The counter conditions (--packets-gt ...) add an UndecidableMatch;
	// the other options change only counters and timeouts.
	options: map[string]optionSpec{
		"--match-set":      {values: 2, negatable: true},
		"--return-nomatch": {}, "--update-counters": {negatable: true},
		"--update-subcounters": {negatable: true}, "--skip-counter-update": {},
		"--skip-subcounter-update": {},
		"--packets-eq":             {values: 1, negatable: true}, "--packets-lt": {values: 1}, "--packets-gt": {values: 1},
		"--bytes-eq": {values: 1, negatable: true}, "--bytes-lt": {values: 1}, "--bytes-gt": {values: 1},
	},
	newMatch: func() Match { return &SetMatch{} },
	setOption: func(u *moduleUse, o optionArg) error {
		if strings.HasPrefix(o.name, "--packets-") || strings.HasPrefix(o.name, "--bytes-") {
			if _, err := count(o); err != nil {
				return err
			}
			u.addMatch(&UndecidableMatch{Module: "set " + o.name, Why: "the set entry's counters"})
			return nil
		}
		if o.name != "--match-set" {
			return nil
		}
		name, flags := o.values[0], o.values[1]
		if name == "" {
			return o.errorf("empty set name")
		}
		m := u.match.(*SetMatch)
		m.Name, m.Negate = name, o.negate
		for _, f := range strings.Split(flags, ",") {
			if f != "src" && f != "dst" {
				return o.errorf("flag %q is neither src nor dst", f)
			}
			m.Flags = append(m.Flags, f)
		}
		return nil
	},
	check: needs("--match-set"),
}
