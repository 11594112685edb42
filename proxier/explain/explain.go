// Package explain turns the outcomes of a packet trace (iptables/trace)
// into a diagnosis: which endpoints a packet reaches, whether it is
// masqueraded, and — when it fails — the cause, named from the kube-proxy
// rule comments on the path. Node checks (routes, sysctls) run behind the
// small interfaces of package host, so that the logic is testable without
// root. Offline explains rendered rules; Live reads the node it runs on.
package explain

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/svcproxy/svcproxy/iptables"
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
	// StatusFail: some outcome is dropped or rejected, the packet matched no
	// service, or a blocking node problem was found.
	StatusFail Status = "fail"
)

// Report is what explain prints. Field order and JSON names are stable.
type Report struct {
	Packet   PacketInfo   `json:"packet"`
	Service  string       `json:"service,omitempty"` // "ns/name:port", when one matched
	Outcomes []Outcome    `json:"outcomes"`
	Problems []Problem    `json:"problems,omitempty"`
	Routes   []host.Route `json:"routes,omitempty"` // endpoint routes (live mode)
	Status   Status       `json:"status"`
	Verdict  string       `json:"verdict"` // the one-line summary
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
	Path       []Step `json:"path"`
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

// Severity of a Problem.
type Severity string

const (
	// Blocking problems make the connection fail; they fail the report.
	Blocking Severity = "error"
	// Warnings may break some traffic (e.g. hairpin) but not necessarily this packet.
	Warning Severity = "warning"
)

// Problem is a node-level finding outside the rules.
type Problem struct {
	Severity Severity `json:"severity"`
	Message  string   `json:"message"`
}

// Explain traces p through rules and builds the report. It does not look at
// the node; see Check for that.
func Explain(rules *iptables.Dump, ctx trace.Context, p trace.Packet) (*Report, error) {
	outcomes, err := trace.Trace(rules, ctx, p)
	if err != nil {
		return nil, err
	}
	r := &Report{Packet: packetInfo(p)}
	for _, o := range outcomes {
		out := Outcome{Verdict: o.Verdict, Masquerade: o.Masquerade}
		if o.Endpoint.IsValid() {
			out.Endpoint = o.Endpoint.String()
		}
		for _, s := range o.Path {
			out.Path = append(out.Path, Step{Table: string(s.Table), Chain: s.Chain, Rule: s.RuleIndex + 1, Raw: s.Raw})
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

func packetInfo(p trace.Packet) PacketInfo {
	return PacketInfo{
		Src:      p.Src.String(),
		Dst:      netip.AddrPortFrom(p.Dst, uint16(p.DstPort)).String(),
		Protocol: p.Protocol,
		Origin:   p.Origin.String(),
		InIface:  p.InIface,
	}
}

// finish computes Status and Verdict from the outcomes and problems.
func (r *Report) finish(ctx trace.Context, p trace.Packet) {
	r.Status, r.Verdict = StatusOK, ""
	for _, o := range r.Outcomes {
		if o.Verdict != trace.Accept {
			r.Status, r.Verdict = StatusFail, o.Cause
			break
		}
	}
	if r.Verdict == "" {
		var eps, masq []string
		for _, o := range r.Outcomes {
			if o.Endpoint != "" {
				eps = append(eps, o.Endpoint)
				if o.Masquerade {
					masq = append(masq, o.Endpoint)
				}
			}
		}
		switch {
		case len(eps) == 0 && ctx.IsLocal(p.Dst):
			r.Verdict = fmt.Sprintf("ACCEPT: %s is delivered to this node (no service matched %s, the packet is not DNATed)", dest(p), dest(p))
		case len(eps) == 0:
			r.Status = StatusFail
			r.Verdict = fmt.Sprintf("no service matched %s: the packet is not DNATed (is the Service programmed? is the port right?)", dest(p))
		default:
			svc := r.Service
			if svc == "" {
				svc = dest(p)
			}
			r.Verdict = fmt.Sprintf("OK: %s reaches %d endpoint%s of %s (%s); masquerade: %s",
				dest(p), len(eps), plural(len(eps)), svc, strings.Join(eps, ", "), masqWords(eps, masq))
		}
	}
	for _, pr := range r.Problems {
		if pr.Severity == Blocking {
			if r.Status == StatusOK {
				r.Verdict = "FAIL: " + pr.Message
			}
			r.Status = StatusFail
			break
		}
	}
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
	seen := map[string]bool{}
	for _, o := range r.Outcomes {
		if o.Verdict == trace.Accept && o.Endpoint != "" && !seen[o.Endpoint] {
			seen[o.Endpoint] = true
			out = append(out, o.Endpoint)
		}
	}
	return out
}

// Text renders the report for people: one block per outcome with its rule
// path, the node findings, then the verdict line.
func (r *Report) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "packet: %s %s -> %s (%s", r.Packet.Protocol, r.Packet.Src, r.Packet.Dst, r.Packet.Origin)
	if r.Packet.InIface != "" {
		fmt.Fprintf(&b, ", in %s", r.Packet.InIface)
	}
	b.WriteString(")\n")
	if r.Service != "" {
		fmt.Fprintf(&b, "service: %s\n", r.Service)
	}
	for i, o := range r.Outcomes {
		fmt.Fprintf(&b, "\noutcome %d: %s", i+1, o.Verdict)
		if o.Endpoint != "" {
			fmt.Fprintf(&b, " endpoint %s", o.Endpoint)
		}
		fmt.Fprintf(&b, ", masquerade %s\n", yesNo(o.Masquerade))
		for _, s := range o.Path {
			fmt.Fprintf(&b, "  %s\n", s)
		}
	}
	if len(r.Routes) > 0 {
		b.WriteString("\nroutes:\n")
		for _, rt := range r.Routes {
			fmt.Fprintf(&b, "  %s\n", rt)
		}
	}
	if len(r.Problems) > 0 {
		b.WriteString("\nproblems:\n")
		for _, p := range r.Problems {
			fmt.Fprintf(&b, "  %s: %s\n", p.Severity, p.Message)
		}
	}
	fmt.Fprintf(&b, "\n%s\n", r.Verdict)
	return b.String()
}
