// Package nodeconfig turns the proxy's settings and this node's facts (its
// Node object, its interface addresses, which iptables families work) into
// what the renderer needs for one IP family: a rules.NodeConfig. It is the
// one place that knows how kube-proxy reads detect-local-mode,
// nodePortAddresses, bindAddress and the primary IP family, so that
// "svcproxy run", "svcproxy dump" and "svcproxy explain -f" all derive the
// same rules from the same settings.
package nodeconfig

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/svcproxy/svcproxy/proxier/rules"
)

// Ways to tell local (pod) traffic from other traffic (detectLocalMode).
const (
	LocalModeClusterCIDR         = "ClusterCIDR"
	LocalModeNodeCIDR            = "NodeCIDR"
	LocalModeBridgeInterface     = "BridgeInterface"
	LocalModeInterfaceNamePrefix = "InterfaceNamePrefix"
)

// NodePortAddressesPrimary is the special nodePortAddresses value meaning
// "the node's primary IPs, as the Node object gives them".
const NodePortAddressesPrimary = "primary"

// Settings are the proxy settings the rules of one node depend on; the
// daemon takes them from its flags and configuration file, dump and
// explain from their flags.
type Settings struct {
	MasqueradeAll      bool
	MasqueradeBit      int32
	LocalhostNodePorts bool
	// TCPBeLiberal: conntrack accepts out-of-window TCP packets, so
	// INVALID packets need not be dropped.
	TCPBeLiberal bool

	// DetectLocalMode is one of the LocalMode* values ("" means
	// ClusterCIDR, kube-proxy's default); BridgeInterface and
	// InterfaceNamePrefix go with the modes of those names.
	DetectLocalMode     string
	BridgeInterface     string
	InterfaceNamePrefix string
	// ClusterCIDRs is the pod network, any number of CIDRs of either family.
	ClusterCIDRs []netip.Prefix

	// NodePortAddresses: CIDRs, or the single value "primary"; empty means
	// every local address.
	NodePortAddresses []string
	// BindAddress, when a specific address (not 0.0.0.0 or ::), is the
	// node's primary IP, as kube-proxy's bindAddress.
	BindAddress string

	// MasqueradePodEgress masquerades pod traffic to destinations outside
	// ClusterCIDRs and NoMasqueradeCIDRs (svcproxy extra).
	MasqueradePodEgress bool
	NoMasqueradeCIDRs   []netip.Prefix

	// RuleLayout is the shape of the rules (rules.ParseLayout; "" is the
	// default, compact).
	RuleLayout string
}

// Setting names one field of Settings in a validation error; each front
// door (flags, configuration file) says how it spells it.
type Setting int

const (
	SettingMasqueradeBit Setting = iota
	SettingDetectLocalMode
	SettingBridgeInterface
	SettingInterfaceNamePrefix
	SettingClusterCIDRs
	SettingMasqueradePodEgress
	SettingRuleLayout
)

// Validate reports every problem with s, joined; name spells each setting
// as its front door knows it (a flag, or a file field and a flag). It does
// not check CIDR syntax (the front doors parse those) but does check what
// only makes sense together.
func (s Settings) Validate(name func(Setting) string) error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if s.MasqueradeBit < 0 || s.MasqueradeBit > 31 {
		add("%s: %d is out of range 0..31", name(SettingMasqueradeBit), s.MasqueradeBit)
	}
	// Pod egress masquerade is defined by the pod network: without it every
	// destination would count as "outside".
	if s.MasqueradePodEgress && len(s.ClusterCIDRs) == 0 {
		add("%s needs the pod network: %s must list at least one CIDR", name(SettingMasqueradePodEgress), name(SettingClusterCIDRs))
	}
	if _, err := rules.ParseLayout(s.RuleLayout); err != nil {
		add("%s: %v", name(SettingRuleLayout), err)
	}
	switch s.DetectLocalMode {
	case "", LocalModeClusterCIDR, LocalModeNodeCIDR:
	case LocalModeBridgeInterface:
		if s.BridgeInterface == "" {
			add("%s %s requires the bridge name: %s must not be empty", name(SettingDetectLocalMode), s.DetectLocalMode, name(SettingBridgeInterface))
		}
	case LocalModeInterfaceNamePrefix:
		if s.InterfaceNamePrefix == "" {
			add("%s %s requires the prefix: %s must not be empty", name(SettingDetectLocalMode), s.DetectLocalMode, name(SettingInterfaceNamePrefix))
		}
	default:
		add("%s: %q must be one of %s, %s, %s, %s", name(SettingDetectLocalMode), s.DetectLocalMode,
			LocalModeClusterCIDR, LocalModeNodeCIDR, LocalModeBridgeInterface, LocalModeInterfaceNamePrefix)
	}
	return errors.Join(errs...)
}
