package explain

import (
	"fmt"
	"strings"
)

// Text renders the report for people: one block per outcome with its rule
// path, the node findings (routes, the reply's way back, problems, checks
// skipped), then the verdict line.
func (r *Report) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "packet: %s %s -> %s (%s", r.Packet.Protocol, r.Packet.Src, r.Packet.Dst, r.Packet.Origin)
	if r.Packet.InIface != "" {
		fmt.Fprintf(&b, ", in %s", r.Packet.InIface)
	}
	b.WriteString(")\n")
	if r.Rules.Source == "file" {
		fmt.Fprintf(&b, "rules: %s (saved)\n", r.Rules.File)
	}
	if r.Resolved != nil {
		fmt.Fprintf(&b, "resolved: %s\n", r.Resolved)
	}
	if r.Service != "" {
		fmt.Fprintf(&b, "service: %s\n", r.Service)
	}
	for i, o := range r.Outcomes {
		fmt.Fprintf(&b, "\noutcome %d: %s", i+1, o.Verdict)
		if o.Endpoint != "" {
			fmt.Fprintf(&b, " endpoint %s", o.Endpoint)
		}
		fmt.Fprintf(&b, ", masquerade %s", yesNo(o.Masquerade))
		if o.Note != "" {
			fmt.Fprintf(&b, " (%s)", o.Note)
		}
		b.WriteString("\n")
		for _, d := range o.Uncertain {
			fmt.Fprintf(&b, "  uncertain: depends on %s\n", d)
		}
		for _, s := range o.Path {
			fmt.Fprintf(&b, "  %s\n", s)
		}
	}
	section := func(title string, lines []string) {
		if len(lines) == 0 {
			return
		}
		b.WriteString("\n" + title + ":\n")
		for _, l := range lines {
			fmt.Fprintf(&b, "  %s\n", l)
		}
	}
	section("routes", stringsOf(r.Routes))
	section("return path", stringsOf(r.ReturnPaths))
	var problems []string
	for _, p := range r.Problems {
		problems = append(problems, string(p.Severity)+": "+p.Message)
	}
	section("problems", problems)
	section("not checked", r.Skipped)
	fmt.Fprintf(&b, "\n%s\n", r.Verdict)
	return b.String()
}

func stringsOf[T fmt.Stringer](xs []T) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = x.String()
	}
	return out
}
