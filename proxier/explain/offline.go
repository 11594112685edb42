package explain

import (
	"fmt"
	"net/netip"

	"github.com/svcproxy/svcproxy/iptables"
	"github.com/svcproxy/svcproxy/iptables/trace"
	"github.com/svcproxy/svcproxy/proxier/rules"
)

// Offline traces p through rules rendered for a node: rendered is restore
// text as rules.Render (or svcproxy dump) writes it, without the jumps from
// built-in chains, which are added here as a full sync would; cfg is the
// node configuration it was rendered for. p must have its source set. The
// node's own addresses are its NodeIPs and NodePortAddresses.
func Offline(rendered []byte, cfg *rules.NodeConfig, p trace.Packet) (*Report, error) {
	d, err := iptables.ParseDump(rules.WithJumps(rendered, rules.JumpsFor(cfg)))
	if err != nil {
		return nil, fmt.Errorf("parsing the rendered rules: %w", err)
	}
	local := append(append([]netip.Addr{}, cfg.NodeIPs...), cfg.NodePortAddresses...)
	FromLocal(&p, local)
	r, err := Explain(trace.DumpChains{Dump: d}, trace.Context{LocalAddrs: local, Sets: cfg.IPSets}, p)
	if err != nil {
		return nil, err
	}
	r.Rules = RulesInfo{Source: "manifests"}
	return r, nil
}
