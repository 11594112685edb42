package iptables

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// The match modules of other software's rules on real nodes: Calico,
// Flannel, Docker, Cilium, firewalld, ufw, and kube-proxy's own newer
// ones. Each is one definition, as in modules.go.

// multiportModule is -m multiport: up to 15 ports or ranges, "80,443,8000:8080".
var multiportModule = &matchModule{
	name: "multiport",
	options: map[string]optionSpec{
		"--dports": {values: 1, negatable: true}, "--destination-ports": {values: 1, negatable: true},
		"--sports": {values: 1, negatable: true}, "--source-ports": {values: 1, negatable: true},
		"--ports": {values: 1, negatable: true},
	},
	newMatch: func() Match { return &MultiportMatch{} },
	setOption: func(u *moduleUse, o optionArg) error {
		m := u.match.(*MultiportMatch)
		if m.Side != "" {
			return o.errorf("only one of --dports, --sports, --ports is allowed")
		}
		for _, part := range strings.Split(o.value(), ",") {
			lo, hi, err := parsePortRange(part)
			if err != nil {
				return o.errorf("%v", err)
			}
			m.Ports = append(m.Ports, PortRange{lo, hi})
		}
		switch o.name {
		case "--dports", "--destination-ports":
			m.Side = "dst"
		case "--sports", "--source-ports":
			m.Side = "src"
		default:
			m.Side = "any"
		}
		m.Negate = o.negate
		return nil
	},
	check: func(u *moduleUse) error {
		if u.match.(*MultiportMatch).Side == "" {
			return fmt.Errorf("-m multiport needs --dports, --sports or --ports")
		}
		if p := protocolOf(u.rule); p == nil || p.Negate || !slices.Contains([]string{"tcp", "udp", "sctp", "udplite", "dccp"}, p.Protocol) {
			return fmt.Errorf("-m multiport needs -p tcp, udp, sctp, udplite or dccp")
		}
		return nil
	},
}

// iprangeModule is -m iprange --src-range A-B / --dst-range A-B; each option
// adds an IPRangeMatch.
var iprangeModule = &matchModule{
	name: "iprange",
	options: map[string]optionSpec{
		"--src-range": {values: 1, negatable: true},
		"--dst-range": {values: 1, negatable: true},
	},
	setOption: func(u *moduleUse, o optionArg) error {
		lo, hi, _ := strings.Cut(o.value(), "-")
		from, err1 := netip.ParseAddr(lo)
		to, err2 := netip.ParseAddr(hi)
		if err1 != nil || err2 != nil || from.Is4() != to.Is4() || to.Less(from) {
			return o.errorf("invalid address range %q (want FROM-TO)", o.value())
		}
		u.addMatch(&IPRangeMatch{Source: o.name == "--src-range", From: from, To: to, Negate: o.negate})
		return nil
	},
	check: needsAny("--src-range or --dst-range"),
}

var physdevModule = &matchModule{
	name: "physdev",
	options: map[string]optionSpec{
		"--physdev-in": {values: 1, negatable: true}, "--physdev-out": {values: 1, negatable: true},
		"--physdev-is-in": {negatable: true}, "--physdev-is-out": {negatable: true},
		"--physdev-is-bridged": {negatable: true},
	},
	newMatch: func() Match { return &PhysdevMatch{} },
	setOption: func(u *moduleUse, o optionArg) error {
		m := u.match.(*PhysdevMatch)
		switch o.name {
		case "--physdev-in":
			m.In, m.NegateIn = o.value(), o.negate
		case "--physdev-out":
			m.Out, m.NegateOut = o.value(), o.negate
		case "--physdev-is-in":
			m.IsIn, m.NegateIsIn = true, o.negate
		case "--physdev-is-out":
			m.IsOut, m.NegateIsOut = true, o.negate
		case "--physdev-is-bridged":
			m.IsBridged, m.NegateIsBridged = true, o.negate
		}
		return nil
	},
	check: needsAny("an option"),
}

var connmarkModule = markLikeModule("connmark", func() Match { return &ConnmarkMatch{} }, func(m Match, value, mask uint32, negate bool) {
	cm := m.(*ConnmarkMatch)
	cm.Value, cm.Mask, cm.Negate = value, mask, negate
})

// stateModule is -m state --state, the older spelling of -m conntrack
// --ctstate; it yields the same ConntrackMatch.
var stateModule = &matchModule{
	name:     "state",
	options:  map[string]optionSpec{"--state": {values: 1, negatable: true}},
	newMatch: func() Match { return &ConntrackMatch{} },
	setOption: func(u *moduleUse, o optionArg) error {
		states, err := parseCTStates(o, []string{"INVALID", "NEW", "ESTABLISHED", "RELATED", "UNTRACKED"})
		if err != nil {
			return err
		}
		m := u.match.(*ConntrackMatch)
		m.States, m.Negate = states, o.negate
		return nil
	},
	check: needs("--state"),
}

// parseCTStates reads a comma list of states, each one of allowed.
func parseCTStates(o optionArg, allowed []string) ([]string, error) {
	var states []string
	for _, s := range strings.Split(o.value(), ",") {
		if !slices.Contains(allowed, s) {
			return nil, o.errorf("unknown state %q", s)
		}
		states = append(states, s)
	}
	return states, nil
}

// icmpModule is -m icmp --icmp-type, or (ipv6) -m icmp6 --icmpv6-type: a
// type name, a number, or NUMBER/CODE.
func icmpModule(ipv6 bool) *matchModule {
	name, opt, proto := "icmp", "--icmp-type", "icmp"
	if ipv6 {
		name, opt, proto = "icmp6", "--icmpv6-type", "icmpv6"
	}
	return &matchModule{
		name:     name,
		options:  map[string]optionSpec{opt: {values: 1, negatable: true}},
		newMatch: func() Match { return &ICMPMatch{IPv6: ipv6} },
		setOption: func(u *moduleUse, o optionArg) error {
			if !validICMPType(o.value()) {
				return o.errorf("invalid ICMP type %q", o.value())
			}
			m := u.match.(*ICMPMatch)
			m.Type, m.Negate = o.value(), o.negate
			return nil
		},
		check: func(u *moduleUse) error {
			if err := needs(opt)(u); err != nil {
				return err
			}
			if p := protocolOf(u.rule); p == nil || p.Negate || (p.Protocol != proto && !(ipv6 && p.Protocol == "ipv6-icmp")) {
				return fmt.Errorf("-m %s needs -p %s", name, proto)
			}
			return nil
		},
	}
}

// validICMPType accepts "any", names such as "echo-request", "N" and "N/C".
func validICMPType(v string) bool {
	num, code, hasCode := strings.Cut(v, "/")
	if n, err := strconv.Atoi(num); err == nil {
		if n < 0 || n > 255 {
			return false
		}
		if !hasCode {
			return true
		}
		c, err := strconv.Atoi(code)
		return err == nil && c >= 0 && c <= 255
	}
	return !hasCode && v != "" && strings.Trim(v, "abcdefghijklmnopqrstuvwxyz-") == ""
}

var pktTypes = []string{"unicast", "broadcast", "multicast", "host", "otherhost"}

var pktTypeModule = &matchModule{
	name:     "pkttype",
	options:  map[string]optionSpec{"--pkt-type": {values: 1, negatable: true}},
	newMatch: func() Match { return &PktTypeMatch{} },
	setOption: func(u *moduleUse, o optionArg) error {
		t := strings.ToLower(o.value())
		if !slices.Contains(pktTypes, t) {
			return o.errorf("unknown packet type %q", o.value())
		}
		m := u.match.(*PktTypeMatch)
		m.Type, m.Negate = t, o.negate
		return nil
	},
	check: needs("--pkt-type"),
}

// nfacctModule is -m nfacct --nfacct-name NAME: an accounting object that
// counts what reaches it and always matches (kube-proxy 1.29 and later
// count localhost NodePort packets this way).
var nfacctModule = &matchModule{
	name:      "nfacct",
	options:   map[string]optionSpec{"--nfacct-name": {values: 1}},
	newMatch:  func() Match { return &CommentMatch{} },
	setOption: func(*moduleUse, optionArg) error { return nil },
	check:     needs("--nfacct-name"),
}

// undecidable defines a module whose result the tracer cannot know from a
// packet's description (see UndecidableMatch): the parser checks its
// options, nothing more.
func undecidable(name, why string, options map[string]optionSpec) *matchModule {
	return &matchModule{
		name:      name,
		options:   options,
		newMatch:  func() Match { return &UndecidableMatch{Module: name, Why: why} },
		setOption: func(*moduleUse, optionArg) error { return nil },
	}
}

var (
	limitModule = undecidable("limit", "the rate of matching packets", map[string]optionSpec{
		"--limit": {values: 1}, "--limit-burst": {values: 1},
	})
	hashlimitModule = undecidable("hashlimit", "the rate of matching packets", map[string]optionSpec{
		"--hashlimit": {values: 1}, "--hashlimit-upto": {values: 1}, "--hashlimit-above": {values: 1},
		"--hashlimit-burst": {values: 1}, "--hashlimit-mode": {values: 1}, "--hashlimit-name": {values: 1},
		"--hashlimit-srcmask": {values: 1}, "--hashlimit-dstmask": {values: 1},
		"--hashlimit-htable-size": {values: 1}, "--hashlimit-htable-max": {values: 1},
		"--hashlimit-htable-expire": {values: 1}, "--hashlimit-htable-gcinterval": {values: 1},
		"--hashlimit-rate-match": {}, "--hashlimit-rate-interval": {values: 1},
	})
	connlimitModule = undecidable("connlimit", "how many connections the client already has", map[string]optionSpec{
		"--connlimit-upto": {values: 1}, "--connlimit-above": {values: 1}, "--connlimit-mask": {values: 1},
		"--connlimit-saddr": {}, "--connlimit-daddr": {},
	})
	socketModule = undecidable("socket", "whether a local socket matches the packet", map[string]optionSpec{
		"--transparent": {}, "--nowildcard": {}, "--restore-skmark": {},
	})
	ownerModule = undecidable("owner", "which local process sends the packet", map[string]optionSpec{
		"--uid-owner": {values: 1, negatable: true}, "--gid-owner": {values: 1, negatable: true},
		"--socket-exists": {negatable: true}, "--suppl-groups": {},
	})
	macModule = undecidable("mac", "the sender's MAC address", map[string]optionSpec{
		"--mac-source": {values: 1, negatable: true},
	})
	policyModule = undecidable("policy", "the packet's IPsec policy", map[string]optionSpec{
		"--dir": {values: 1}, "--pol": {values: 1}, "--strict": {}, "--reqid": {values: 1, negatable: true},
		"--spi": {values: 1, negatable: true}, "--proto": {values: 1, negatable: true},
		"--mode": {values: 1, negatable: true}, "--tunnel-src": {values: 1, negatable: true},
		"--tunnel-dst": {values: 1, negatable: true}, "--next": {},
	})
	lengthModule = undecidable("length", "the packet's length", map[string]optionSpec{
		"--length": {values: 1, negatable: true},
	})
)

// tcpFlags are the flag names --tcp-flags takes, besides ALL and NONE.
var tcpFlags = []string{"FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"}

// parseTCPFlags reads --tcp-flags MASK COMP or --syn.
func parseTCPFlags(o optionArg) (*TCPFlagsMatch, error) {
	if o.name == "--syn" {
		return &TCPFlagsMatch{Mask: []string{"SYN", "RST", "ACK", "FIN"}, Set: []string{"SYN"}, Negate: o.negate}, nil
	}
	list := func(v string) ([]string, error) {
		switch strings.ToUpper(v) {
		case "ALL":
			return slices.Clone(tcpFlags), nil
		case "NONE":
			return nil, nil
		}
		var out []string
		for _, f := range strings.Split(strings.ToUpper(v), ",") {
			if !slices.Contains(tcpFlags, f) {
				return nil, o.errorf("unknown TCP flag %q", f)
			}
			out = append(out, f)
		}
		return out, nil
	}
	mask, err := list(o.values[0])
	if err != nil {
		return nil, err
	}
	set, err := list(o.values[1])
	if err != nil {
		return nil, err
	}
	return &TCPFlagsMatch{Mask: mask, Set: set, Negate: o.negate}, nil
}

// rpfilterModule is -m rpfilter: the reverse-path test of rp_filter, as a
// match (Calico drops spoofed pod traffic in raw PREROUTING with it).
var rpfilterModule = &matchModule{
	name:     "rpfilter",
	options:  map[string]optionSpec{"--loose": {}, "--validmark": {}, "--accept-local": {}, "--invert": {}},
	newMatch: func() Match { return &RPFilterMatch{} },
	setOption: func(u *moduleUse, o optionArg) error {
		m := u.match.(*RPFilterMatch)
		switch o.name {
		case "--loose":
			m.Loose = true
		case "--validmark":
			m.ValidMark = true
		case "--accept-local":
			m.AcceptLocal = true
		case "--invert":
			m.Invert = true
		}
		return nil
	},
}
