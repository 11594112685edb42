package proxier

import (
	"strings"

	"github.com/svcproxy/svcproxy/ipset"
	"github.com/svcproxy/svcproxy/proxier/nodeconfig"
	"github.com/svcproxy/svcproxy/proxier/rules"
)

// SyncIPSets writes cfg.IPSets through sets (creating, refilling or
// re-creating each set as needed).
func SyncIPSets(sets ipset.Interface, cfg *rules.NodeConfig) error {
	if len(cfg.IPSets) == 0 {
		return nil
	}
	family := nodeconfig.IPSetFamily(cfg.Family)
	desired := map[string]ipset.Desired{}
	for name, members := range cfg.IPSets {
		desired[name] = ipset.Desired{Type: ipset.HashNet, Family: family, Members: members,
			Comment: "svcproxy " + strings.ToLower(strings.TrimPrefix(name, ipset.Prefix))}
	}
	return ipset.SyncSets(sets, desired)
}
