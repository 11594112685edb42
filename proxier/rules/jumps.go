package rules

import (
	"bytes"
	"slices"

	"github.com/svcproxy/svcproxy/iptables"
)

// Jump is a rule in a built-in chain that sends traffic into one of ours.
// The restore input cannot carry these (it would have to own the whole
// built-in chain), so the sync loop ensures them on every full sync.
type Jump struct {
	Table, From, To string
	// Args are the rule's arguments as argv (unquoted), ending in "-j To".
	Args []string
}

func jump(table, from, to, why string, extra ...string) Jump {
	return Jump{Table: table, From: from, To: to, Args: slices.Concat(extra, []string{"-m", "comment", "--comment", why, "-j", to})}
}

// Jumps lists kube-proxy's jumps from built-in chains, in its order.
func Jumps() []Jump {
	newConn := []string{"-m", "conntrack", "--ctstate", "NEW"}
	return []Jump{
		jump("filter", "INPUT", ChainExternalServices, "kubernetes externally-visible service portals", newConn...),
		jump("filter", "FORWARD", ChainExternalServices, "kubernetes externally-visible service portals", newConn...),
		jump("filter", "INPUT", ChainNodePorts, "kubernetes health check service ports"),
		jump("filter", "FORWARD", ChainServices, "kubernetes service portals", newConn...),
		jump("filter", "OUTPUT", ChainServices, "kubernetes service portals", newConn...),
		jump("filter", "FORWARD", ChainForward, "kubernetes forwarding rules"),
		jump("filter", "INPUT", ChainProxyFirewall, "kubernetes load balancer firewall", newConn...),
		jump("filter", "OUTPUT", ChainProxyFirewall, "kubernetes load balancer firewall", newConn...),
		jump("filter", "FORWARD", ChainProxyFirewall, "kubernetes load balancer firewall", newConn...),
		jump("nat", "OUTPUT", ChainServices, "kubernetes service portals"),
		jump("nat", "PREROUTING", ChainServices, "kubernetes service portals"),
		jump("nat", "POSTROUTING", ChainPostrouting, "kubernetes postrouting rules"),
	}
}

// PodEgressJump sends POSTROUTING traffic to the pod egress chain; it is
// needed only with --masquerade-pod-egress.
func PodEgressJump() Jump {
	return jump("nat", "POSTROUTING", ChainPodEgress, "svcproxy pod egress masquerade")
}

// KubeletJumps are kubelet's jumps into KUBE-FIREWALL, which kube-proxy also
// ensures (and never deletes).
func KubeletJumps() []Jump {
	return []Jump{
		{Table: "filter", From: "INPUT", To: ChainKubeletFirewall, Args: []string{"-j", ChainKubeletFirewall}},
		{Table: "filter", From: "OUTPUT", To: ChainKubeletFirewall, Args: []string{"-j", ChainKubeletFirewall}},
	}
}

// JumpsFor lists the jumps a node with cfg needs from built-in chains:
// kube-proxy's, plus the pod egress jump when pod egress masquerade is on.
func JumpsFor(cfg *NodeConfig) []Jump {
	jumps := Jumps()
	if cfg.PodEgress != nil {
		jumps = append(jumps, PodEgressJump())
	}
	return jumps
}

// WithJumps adds jumps to restore text, each as "-A FROM ARGS" just before
// its table's COMMIT, so the text applies to an empty ruleset (svcproxy
// dump --jumps, and explain of rendered rules).
func WithJumps(data []byte, jumps []Jump) []byte {
	byTable := JumpsRestoreText(jumps)
	var out bytes.Buffer
	table := ""
	for _, line := range bytes.SplitAfter(data, []byte("\n")) {
		t := string(bytes.TrimSpace(line))
		if len(t) > 0 && t[0] == '*' {
			table = t[1:]
		}
		if t == "COMMIT" {
			for _, j := range byTable[table] {
				out.WriteString(j + "\n")
			}
		}
		out.Write(line)
	}
	return out.Bytes()
}

// JumpsRestoreText renders jumps as restore lines per table, for applying a
// dump to an empty ruleset (svcproxy dump --jumps).
func JumpsRestoreText(jumps []Jump) map[string][]string {
	out := map[string][]string{}
	for _, j := range jumps {
		out[j.Table] = append(out[j.Table], "-A "+j.From+" "+iptables.JoinArgs(j.Args))
	}
	return out
}
