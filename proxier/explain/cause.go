package explain

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/svcproxy/svcproxy/iptables"
	"github.com/svcproxy/svcproxy/iptables/trace"
)

// Comment returns the first --comment of a rule's raw text, or "".
func Comment(raw string) string {
	if c := Comments(raw); len(c) > 0 {
		return c[0]
	}
	return ""
}

// Comments returns every --comment of a rule's raw text, in order (Calico
// writes an id, then words).
func Comments(raw string) []string {
	args, err := iptables.SplitLine(raw)
	if err != nil {
		return nil
	}
	var out []string
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "--comment" {
			out = append(out, args[i+1])
		}
	}
	return out
}

// describingComment is the comment that says most about a rule: the last
// one with words in it, else the first.
func describingComment(raw string) string {
	cs := Comments(raw)
	for _, c := range slices.Backward(cs) {
		if strings.Contains(c, " ") {
			return c
		}
	}
	if len(cs) > 0 {
		return cs[0]
	}
	return ""
}

// serviceRE matches the "ns/name:port" service port name that starts
// kube-proxy's per-service comments.
var serviceRE = regexp.MustCompile(`^([a-z0-9][-a-z0-9.]*)/([a-z0-9][-a-z0-9.]*):([-a-z0-9]*)(?:\s|$)`)

// ServiceOf returns the first service port name ("ns/name:port") named by a
// comment on the path, or "".
func ServiceOf(path []trace.Step) string {
	for _, s := range path {
		if m := serviceRE.FindStringSubmatch(Comment(s.Raw)); m != nil {
			return m[1] + "/" + m[2] + ":" + m[3]
		}
	}
	return ""
}

// causeRule maps the comment of the rule that decided a DROP/REJECT to a
// sentence. The first matching entry wins; svc is "ns/name:port".
type causeRule struct {
	re   *regexp.Regexp
	text func(m []string, last Step, p trace.Packet) string
}

func svcWords(svc string) string {
	ns, rest, _ := strings.Cut(svc, "/")
	name, port, _ := strings.Cut(rest, ":")
	if port == "" {
		return fmt.Sprintf("Service %s/%s", ns, name)
	}
	return fmt.Sprintf("Service %s/%s port %s", ns, name, port)
}

var causeRules = []causeRule{
	{regexp.MustCompile(`^(\S+) has no endpoints$`), func(m []string, _ Step, _ trace.Packet) string {
		return svcWords(m[1]) + " has no endpoints"
	}},
	{regexp.MustCompile(`^(\S+) has no local endpoints$`), func(m []string, last Step, _ trace.Packet) string {
		if last.Chain == "KUBE-SERVICES" { // the internal (cluster IP) side
			return m[1] + " has internalTrafficPolicy Local and this node has no local endpoint"
		}
		return m[1] + " has externalTrafficPolicy Local and this node has no local endpoint"
	}},
	{regexp.MustCompile(`^(\S+) traffic not accepted by (\S+)$`), func(m []string, _ Step, p trace.Packet) string {
		return fmt.Sprintf("source %s not in loadBalancerSourceRanges of %s", p.Src, m[1])
	}},
	{regexp.MustCompile(`^block incoming localnet connections$`), func(_ []string, _ Step, p trace.Packet) string {
		return fmt.Sprintf("connections to %s from outside 127.0.0.0/8 are blocked (kubelet's localnet firewall)", p.Dst)
	}},
}

// Cause names why an outcome ending in verdict failed, from the last step
// of its path (the rule or policy that decided). It always ends with where
// the decision was made, e.g.
// "REJECT: Service demo/empty port http has no endpoints (filter KUBE-SERVICES rule 3)".
func Cause(verdict string, path []Step, p trace.Packet) string {
	if len(path) == 0 {
		return verdict + ": no rule on the path (empty trace)"
	}
	last := path[len(path)-1]
	where := fmt.Sprintf("(%s %s rule %d)", last.Table, last.Chain, last.Rule)
	if last.Rule == 0 {
		return fmt.Sprintf("%s: the %s %s chain's policy is %s and no rule accepted the packet", verdict, last.Table, last.Chain, verdict)
	}
	comment := describingComment(last.Raw)
	for _, c := range causeRules {
		if m := c.re.FindStringSubmatch(comment); m != nil {
			return fmt.Sprintf("%s: %s %s", verdict, c.text(m, last, p), where)
		}
	}
	if strings.Contains(last.Raw, "--ctstate INVALID") {
		return fmt.Sprintf("%s: conntrack marks the packet INVALID %s", verdict, where)
	}
	if comment != "" {
		return fmt.Sprintf("%s: rule %q %s", verdict, comment, where)
	}
	return fmt.Sprintf("%s by %s", verdict, where)
}
