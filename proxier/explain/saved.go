package explain

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/svcproxy/svcproxy/iptables"
	"github.com/svcproxy/svcproxy/iptables/trace"
	"github.com/svcproxy/svcproxy/proxier/host"
)

// Saved is a saved rule file and what is known of the node it came from:
// what users paste into bug reports.
type Saved struct {
	// Name names the file in messages ("-" for stdin).
	Name string
	// Rules is its parsed text (see ParseSaved).
	Rules *iptables.Dump
	// Routes ("ip route" output) and Addrs ("ip -o addr") are nil when not
	// given: the checks that need them are skipped.
	Routes *host.RouteTable
	Addrs  []host.IfaceAddr
	// NodeIPs are more of the node's addresses (--node-ip).
	NodeIPs []netip.Addr
}

// InputError is a problem with what the user gave explain (a file that is
// not what it should be, an address of the wrong family): the caller
// reports it as bad input.
type InputError struct{ Err error }

func (e *InputError) Error() string { return e.Err.Error() }
func (e *InputError) Unwrap() error { return e.Err }

func inputErrorf(format string, a ...any) error {
	return &InputError{fmt.Errorf(format, a...)}
}

// ParseSaved reads iptables-save (or ip6tables-save) text, legacy or nft,
// of any version since 1.4.21, with or without [packets:bytes] counters.
// Errors name the file and line.
func ParseSaved(name string, text []byte) (*iptables.Dump, error) {
	d, err := iptables.ParseDump(text)
	if err != nil {
		return nil, inputErrorf("%s: %v", name, err)
	}
	if len(d.Tables) == 0 {
		return nil, inputErrorf("%s: no tables in it (want iptables-save output)", name)
	}
	return d, nil
}

// ExplainSaved traces p through a saved rule file. Without the node's
// routes and sysctls the checks that need them are skipped and the report
// says so; without its addresses, only loopback and NodeIPs are known to
// be local, and tests that depend on others are uncertain.
func ExplainSaved(s Saved, p trace.Packet) (*Report, error) {
	if fam, ok := savedFamily(s.Rules); ok && fam != familyWord(p.Dst) {
		return nil, inputErrorf("%s holds %s rules but the destination %s is %s", s.Name, fam, p.Dst, familyWord(p.Dst))
	}
	local := append(host.AddrsOf(s.Addrs), s.NodeIPs...)
	var routes host.RouteLookup
	if s.Routes != nil {
		s.Routes.Addrs = s.Addrs
		routes = s.Routes
	}
	if p.Origin == trace.Local && !p.Src.IsValid() && len(local) == 0 && routes == nil {
		return nil, inputErrorf("--from-node with a saved rule file: the node's address is unknown; give --from NODE_IP, --node-ip or --addrs")
	}
	if err := sourceAndInterface(&p, local, routes); err != nil {
		return nil, &InputError{err}
	}
	tctx := trace.Context{LocalAddrs: local, LocalAddrsPartial: s.Addrs == nil, Route: routeIface(routes)}
	if s.Addrs != nil {
		tctx.IfaceAddrs = host.ByIface(s.Addrs)
	}
	rep, err := Explain(trace.DumpChains{Dump: s.Rules}, tctx, p)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.Name, err)
	}
	rep.Rules = RulesInfo{Source: "file", File: s.Name}
	if s.Addrs == nil {
		rep.Skipped = append(rep.Skipped, "the node's addresses (no --addrs FILE, \"ip -o addr\" output): only loopback and --node-ip are known to be local; a packet to any other address is taken as forwarded")
	}
	rep.Skipped = append(rep.Skipped, "ipsets: a saved rule file has no set members; tests of sets are uncertain")
	Check(rep, tctx, p, Node{Routes: routes, Addrs: s.Addrs})
	return rep, nil
}

// savedFamily tells IPv4 rules from IPv6 ones by the addresses their
// -s/-d name; not ok when they name none, or both kinds.
func savedFamily(d *iptables.Dump) (string, bool) {
	v4, v6 := 0, 0
	for _, t := range d.Tables {
		for _, c := range t.Chains {
			for _, r := range c.Rules {
				for _, a := range r.Args {
					addr, _, _ := strings.Cut(strings.Trim(a, "[]"), "/")
					if ip, err := netip.ParseAddr(addr); err == nil {
						if ip.Is4() {
							v4++
						} else {
							v6++
						}
					}
				}
			}
		}
	}
	switch {
	case v4 > 0 && v6 == 0:
		return "IPv4", true
	case v6 > 0 && v4 == 0:
		return "IPv6", true
	}
	return "", false
}
