// Package explain turns the outcomes of a packet trace (iptables/trace)
// into a diagnosis: which endpoints a packet reaches, whether it is
// masqueraded, and — when it fails — the cause, named from the kube-proxy
// rule comments on the path. Node checks (routes, sysctls, the path of the
// reply) run behind the small interfaces of package host, so that the logic
// is testable without root. Offline explains rendered rules, Saved a saved
// rule file, Live reads the node it runs on, chain by chain.
package explain

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/svcproxy/svcproxy/iptables/trace"
	"github.com/svcproxy/svcproxy/proxier/host"
)

// Status is the overall result of an explanation.
type Status string

const (
	// StatusOK: every outcome is accepted and DNATed to an endpoint (or
	// accepted, for a packet addressed to the node itself), and no blocking
	// problem was found.
	StatusOK Status = "ok"
	// StatusFail: some certain outcome is dropped or rejected, the packet
	// matched no service, or a blocking node problem was found.
	StatusFail Status = "fail"
	// StatusUncertain: nothing certainly fails, but an outcome that
	// depends on a test the tracer could not decide fails, or a check
	// could not be made.
	StatusUncertain Status = "uncertain"
)

// Report is what explain prints. Field order and JSON names are stable.
type Report struct {
	Packet PacketInfo `json:"packet"`
	// Rules says where the rules came from.
	Rules RulesInfo `json:"rules"`
	// Resolved says how --to ns/name[:port] became an address.
	Resolved *Resolved `json:"resolved,omitempty"`
	Service  string    `json:"service,omitempty"` // "ns/name:port", when one matched
	Outcomes []Outcome `json:"outcomes"`
	// Routes are the node's routes to the endpoints.
	Routes []host.Route `json:"routes,omitempty"`
	// ReturnPaths follow each endpoint's reply back (see ReturnPath).
	ReturnPaths []ReturnPath `json:"returnPaths,omitempty"`
	Problems    []Problem    `json:"problems,omitempty"`
	// Skipped names the checks that were not made, and why.
	Skipped []string `json:"skipped,omitempty"`
	Status  Status   `json:"status"`
	Verdict string   `json:"verdict"` // the one-line summary
}

// RulesInfo describes the rules traced.
type RulesInfo struct {
	// Source is "live" (read from this node), "file" (a saved rule file)
	// or "manifests" (rendered from -f).
	Source string `json:"source"`
	File   string `json:"file,omitempty"`
	// Backend is the live node's iptables backend (nft or legacy).
	Backend string `json:"backend,omitempty"`
	// ChainsRead counts the chains read from the live node, one
	// "iptables -S CHAIN" each: only those the packet can reach.
	ChainsRead int `json:"chainsRead,omitempty"`
}

// PacketInfo describes the traced packet.
type PacketInfo struct {
	Src      string `json:"src"`
	Dst      string `json:"dst"`
	Protocol string `json:"protocol"`
	Origin   string `json:"origin"` // "local" (a process on the node) or "incoming"
	InIface  string `json:"inIface,omitempty"`
}

// Outcome is one possible fate of the packet.
type Outcome struct {
	Verdict    string `json:"verdict"`            // ACCEPT, DROP or REJECT
	Endpoint   string `json:"endpoint,omitempty"` // ip:port after DNAT
	Masquerade bool   `json:"masquerade"`
	Cause      string `json:"cause,omitempty"` // for DROP/REJECT
	Note       string `json:"note,omitempty"`  // REDIRECT, TPROXY, NFQUEUE
	// Uncertain lists the tests this outcome depends on that could not be
	// decided; empty when it is certain.
	Uncertain []Dependency `json:"uncertain,omitempty"`
	Path      []Step       `json:"path"`
}

// Step is one rule on an outcome's path. Rule is 1-based, as in
// "iptables -L --line-numbers"; 0 means the chain's policy.
type Step struct {
	Table string `json:"table"`
	Chain string `json:"chain"`
	Rule  int    `json:"rule"`
	Raw   string `json:"raw"`
}

func (s Step) String() string {
	if s.Rule == 0 {
		return fmt.Sprintf("%s/%s policy: %s", s.Table, s.Chain, s.Raw)
	}
	return fmt.Sprintf("%s/%s rule %d: %s", s.Table, s.Chain, s.Rule, s.Raw)
}

// Dependency is a test an outcome depends on that could not be decided.
type Dependency struct {
	Step
	// What was unknown, e.g. "set cali40s: its members are unknown".
	What string `json:"what"`
	// Assumed is "matched" or "did not match": this outcome's assumption.
	Assumed string `json:"assumed"`
	// Help says what would decide it, e.g. "give --in-iface".
	Help string `json:"help,omitempty"`
}

func (d Dependency) String() string {
	s := fmt.Sprintf("%s/%s rule %d (%s), assumed it %s", d.Table, d.Chain, d.Rule, d.What, d.Assumed)
	if d.Help != "" {
		s += "; " + d.Help
	}
	return s
}

// Severity of a Problem.
type Severity string

const (
	// Blocking problems make the connection fail; they fail the report.
	Blocking Severity = "error"
	// Unknown: a check that decides whether the packet gets through could
	// not be made (a setting could not be read); the report is uncertain.
	Unknown Severity = "unknown"
	// Warnings may break some traffic (e.g. hairpin) but not necessarily this packet.
	Warning Severity = "warning"
)

// Problem is a node-level finding outside the rules.
type Problem struct {
	Severity Severity `json:"severity"`
	Message  string   `json:"message"`
}

// Explain traces p through the rules rules serves and builds the report.
// It does not look at the node; see Check for that.
func Explain(rules trace.Chains, ctx trace.Context, p trace.Packet) (*Report, error) {
	outcomes, err := trace.TraceChains(rules, ctx, p)
	if err != nil {
		return nil, err
	}
	r := &Report{Packet: packetInfo(p)}
	for _, o := range outcomes {
		out := Outcome{Verdict: o.Verdict, Masquerade: o.Masquerade, Note: o.Note}
		if o.Endpoint.IsValid() {
			out.Endpoint = o.Endpoint.String()
		}
		for _, s := range o.Path {
			out.Path = append(out.Path, stepOf(s))
		}
		for _, u := range o.Uncertain {
			out.Uncertain = append(out.Uncertain, dependencyOf(u))
		}
		if o.Verdict != trace.Accept {
			out.Cause = Cause(o.Verdict, out.Path, p)
		}
		if r.Service == "" {
			r.Service = ServiceOf(o.Path)
		}
		r.Outcomes = append(r.Outcomes, out)
	}
	r.finish(ctx, p)
	return r, nil
}

// stepOf converts a tracer step, dropping the "[packets:bytes] " a saved
// file's rule may start with.
func stepOf(s trace.Step) Step {
	raw := s.Raw
	if strings.HasPrefix(raw, "[") {
		if end := strings.Index(raw, "] "); end > 0 {
			raw = raw[end+2:]
		}
	}
	return Step{Table: string(s.Table), Chain: s.Chain, Rule: s.RuleIndex + 1, Raw: raw}
}

func dependencyOf(u trace.Undecided) Dependency {
	assumed := "did not match"
	if u.Matched {
		assumed = "matched"
	}
	return Dependency{Step: stepOf(u.Step), What: u.What, Assumed: assumed, Help: helpFor(u.Kind)}
}

// helpFor says what decides a test of the kind, in explain's words.
func helpFor(kind error) string {
	switch {
	case errors.Is(kind, trace.ErrNeedInIface):
		return "give the incoming interface with --in-iface (or --routes)"
	case errors.Is(kind, trace.ErrNeedOutIface), errors.Is(kind, trace.ErrNeedRoutes):
		return "give the node's routes (--routes, or run explain on the node)"
	case errors.Is(kind, trace.ErrNeedSrcPort):
		return "give --source-port"
	case errors.Is(kind, trace.ErrNeedLocalAddrs):
		return "give the node's addresses (--addrs or --node-ip)"
	case errors.Is(kind, trace.ErrUnknownSet):
		return "run explain on the node, which reads the sets"
	case errors.Is(kind, trace.ErrNeedBridges):
		return "run explain on the node, which knows its bridges"
	}
	return ""
}

func packetInfo(p trace.Packet) PacketInfo {
	return PacketInfo{
		Src:      p.Src.String(),
		Dst:      netip.AddrPortFrom(p.Dst, uint16(p.DstPort)).String(),
		Protocol: p.Protocol,
		Origin:   p.Origin.String(),
		InIface:  p.InIface,
	}
}

// finish computes Status and Verdict from the outcomes and problems: a
// certain failure fails; a failure that rests on an undecided test makes
// the report uncertain; blocking problems fail, unknown ones make it
// uncertain.
func (r *Report) finish(ctx trace.Context, p trace.Packet) {
	r.Status, r.Verdict = StatusOK, ""
	if o := everyWayFails(r.Outcomes); o != nil {
		// Whatever the undecided tests say, the packet fails.
		r.Status, r.Verdict = StatusFail, o.Cause
		r.problemsDecide()
		return
	}
	var eps, masq []string
	var unsure *Outcome
	anyUnsure, undnatedUnsure := false, false
	for i, o := range r.Outcomes {
		failed := o.Verdict != trace.Accept
		anyUnsure = anyUnsure || len(o.Uncertain) > 0
		switch {
		case failed && len(o.Uncertain) == 0:
			r.Status, r.Verdict = StatusFail, o.Cause
			r.problemsDecide()
			return
		case failed:
			if unsure == nil {
				unsure = &r.Outcomes[i]
			}
		case o.Endpoint != "":
			eps = append(eps, o.Endpoint)
			if o.Masquerade {
				masq = append(masq, o.Endpoint)
			}
		case len(o.Uncertain) > 0 && o.Note == "":
			undnatedUnsure = true
		}
	}
	switch {
	case len(eps) == 0 && ctx.IsLocal(p.Dst):
		r.Verdict = fmt.Sprintf("ACCEPT: %s is delivered to this node (no service matched %s, the packet is not DNATed)", dest(p), dest(p))
	case len(eps) == 0 && anyUnsure:
		r.Status = StatusUncertain
		r.Verdict = fmt.Sprintf("UNCERTAIN: %s is not DNATed to any endpoint on the paths traced, which depend on %s", dest(p), firstDependency(r.Outcomes))
	case len(eps) == 0:
		r.Status = StatusFail
		r.Verdict = fmt.Sprintf("no service matched %s: the packet is not DNATed (is the Service programmed? is the port right?)", dest(p))
	case unsure != nil:
		r.Status = StatusUncertain
		r.Verdict = fmt.Sprintf("UNCERTAIN: the packet may be dropped — %s — depending on %s", unsure.Cause, unsure.Uncertain[0])
	case undnatedUnsure:
		r.Status = StatusUncertain
		r.Verdict = fmt.Sprintf("UNCERTAIN: %s may not be DNATed, depending on %s", dest(p), firstDependency(r.Outcomes))
	default:
		svc := r.Service
		if svc == "" {
			svc = dest(p)
		}
		r.Verdict = fmt.Sprintf("OK: %s reaches %d endpoint%s of %s (%s); masquerade: %s",
			dest(p), len(dedupeStrings(eps)), plural(len(dedupeStrings(eps))), svc, strings.Join(dedupeStrings(eps), ", "), masqWords(dedupeStrings(eps), dedupeStrings(masq)))
	}
	r.problemsDecide()
}

// everyWayFails returns the failure to name when every outcome fails: the
// one assuming the fewest undecided tests matched (undecided rules are
// usually the exceptions: rate limits, sockets, spoofing checks), and of
// those the one resting on the fewest. Nil when some outcome is accepted.
func everyWayFails(outcomes []Outcome) *Outcome {
	var best *Outcome
	matched := func(o *Outcome) int {
		n := 0
		for _, d := range o.Uncertain {
			if d.Assumed == "matched" {
				n++
			}
		}
		return n
	}
	for i := range outcomes {
		o := &outcomes[i]
		if o.Verdict == trace.Accept {
			return nil
		}
		if best == nil || matched(o) < matched(best) ||
			matched(o) == matched(best) && len(o.Uncertain) < len(best.Uncertain) {
			best = o
		}
	}
	return best
}

// problemsDecide lets node problems override the verdict: the first
// blocking problem fails an OK or uncertain report, the first unknown one
// makes an OK report uncertain.
func (r *Report) problemsDecide() {
	for _, pr := range r.Problems {
		if pr.Severity == Blocking {
			if r.Status != StatusFail {
				r.Verdict = "FAIL: " + pr.Message
			}
			r.Status = StatusFail
			return
		}
	}
	for _, pr := range r.Problems {
		if pr.Severity == Unknown && r.Status == StatusOK {
			r.Status, r.Verdict = StatusUncertain, "UNCERTAIN: "+pr.Message
			return
		}
	}
}

// firstDependency names the first undecided test of any outcome.
func firstDependency(outcomes []Outcome) string {
	for _, o := range outcomes {
		if len(o.Uncertain) > 0 {
			return o.Uncertain[0].String()
		}
	}
	return "nothing"
}

// dedupeStrings keeps the first of each string, in order.
func dedupeStrings(in []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// dest formats the packet's original destination, e.g. "203.0.113.10:80/tcp".
func dest(p trace.Packet) string {
	return fmt.Sprintf("%s/%s", netip.AddrPortFrom(p.Dst, uint16(p.DstPort)), p.Protocol)
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// masqWords says which of eps are masqueraded: "no", "yes" or "only to a, b".
func masqWords(eps, masq []string) string {
	switch len(masq) {
	case 0:
		return "no"
	case len(eps):
		return "yes"
	}
	return "only to " + strings.Join(masq, ", ")
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// Endpoints returns the report's distinct accepted endpoints, in outcome order.
func (r *Report) Endpoints() []string {
	var out []string
	for _, o := range r.Outcomes {
		if o.Verdict == trace.Accept && o.Endpoint != "" {
			out = append(out, o.Endpoint)
		}
	}
	return dedupeStrings(out)
}
