// Package options is svcproxy's kube-proxy-compatible configuration: kube-proxy's
// command-line flags (AddFlags), its KubeProxyConfiguration file
// (kubeproxy.config.k8s.io/v1alpha1, as kubeadm's kube-proxy ConfigMap holds it),
// and the precedence between the two, resolved into one Config.
//
// Typical use:
//
//	o := options.NewOptions()
//	o.AddFlags(cmd.Flags())
//	options.AddKlogFlags(cmd.Flags())
//	// ... after parsing:
//	if err := o.Complete(cmd.Flags()); err != nil { ... } // loads --config
//	if err := o.Validate(); err != nil { ... }
//	// use o.Config
package options

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/svcproxy/svcproxy/iptables"
	"github.com/svcproxy/svcproxy/proxier/nodeconfig"
	"github.com/svcproxy/svcproxy/proxier/rules"
)

// Proxy modes. svcproxy implements only kube-proxy's iptables mode.
const (
	ModeIPTables    = "iptables"
	ModeIPVS        = "ipvs"
	ModeNFTables    = "nftables"
	ModeKernelspace = "kernelspace"
)

// Default ports, as kube-proxy's.
const (
	DefaultHealthzPort = 10256
	DefaultMetricsPort = 10249
)

// Config is the resolved configuration of the svcproxy daemon. It mirrors the
// parts of kube-proxy's KubeProxyConfiguration that matter in iptables mode;
// comments give the file field and the flag of each setting.
type Config struct {
	// Kubeconfig: clientConnection.kubeconfig, --kubeconfig. Empty means
	// in-cluster configuration.
	Kubeconfig string
	// Master: --master only (not in the file); overrides the kubeconfig's
	// API server URL.
	Master string
	// ContentType: clientConnection.contentType, --kube-api-content-type.
	ContentType string
	// AcceptContentTypes: clientConnection.acceptContentTypes (file only).
	AcceptContentTypes string
	// QPS: clientConnection.qps, --kube-api-qps.
	QPS float32
	// Burst: clientConnection.burst, --kube-api-burst.
	Burst int32

	// HostnameOverride: hostnameOverride, --hostname-override. The node name;
	// empty means the host name. See NodeName.
	HostnameOverride string
	// BindAddress: bindAddress, --bind-address. Despite the name, the
	// node's primary IP override (0.0.0.0 or :: means "from the Node").
	BindAddress string
	// BindAddressHardFail: bindAddressHardFail, --bind-address-hard-fail.
	// When true, failing to serve healthz or metrics is fatal.
	BindAddressHardFail bool
	// HealthzBindAddress: healthzBindAddress, --healthz-bind-address.
	// IP:port; empty disables the healthz server.
	HealthzBindAddress string
	// MetricsBindAddress: metricsBindAddress, --metrics-bind-address.
	// IP:port; empty disables the metrics server.
	MetricsBindAddress string
	// ShowHiddenMetricsForVersion: showHiddenMetricsForVersion,
	// --show-hidden-metrics-for-version. Checked for form; svcproxy hides
	// no metrics.
	ShowHiddenMetricsForVersion string

	// Mode: mode, --proxy-mode. Only "iptables" (or empty) is accepted.
	Mode string
	// IPTablesBackend: --iptables-backend only (svcproxy extra): auto, nft
	// or legacy.
	IPTablesBackend iptables.Backend
	// MasqueradeAll: iptables.masqueradeAll, --masquerade-all.
	MasqueradeAll bool
	// MasqueradeBit: iptables.masqueradeBit, --iptables-masquerade-bit.
	MasqueradeBit int32
	// LocalhostNodePorts: iptables.localhostNodePorts,
	// --iptables-localhost-nodeports.
	LocalhostNodePorts bool
	// SyncPeriod: iptables.syncPeriod, --iptables-sync-period. The
	// periodic full resync interval.
	SyncPeriod time.Duration
	// MinSyncPeriod: iptables.minSyncPeriod, --iptables-min-sync-period.
	MinSyncPeriod time.Duration
	// ConfigSyncPeriod: configSyncPeriod, --config-sync-period. Informer
	// resync period.
	ConfigSyncPeriod time.Duration

	// DetectLocalMode: detectLocalMode, --detect-local-mode.
	DetectLocalMode string
	// DetectLocal: detectLocal.*, --pod-bridge-interface and
	// --pod-interface-name-prefix.
	DetectLocal DetectLocal
	// ClusterCIDRs: clusterCIDR, --cluster-cidr (comma-separated; one CIDR
	// or an IPv4/IPv6 pair). Masked to their network address.
	ClusterCIDRs []netip.Prefix
	// NodePortAddresses: nodePortAddresses, --nodeport-addresses. CIDRs,
	// or the single value "primary"; empty means all local addresses.
	NodePortAddresses []string

	// OOMScoreAdj: oomScoreAdj, --oom-score-adj. Written to
	// /proc/self/oom_score_adj when the daemon starts, as kube-proxy does
	// (a failure is logged, not fatal).
	OOMScoreAdj int32
	// Conntrack: conntrack.*, --conntrack-*.
	Conntrack Conntrack
	// FeatureGates: featureGates, --feature-gates. Accepted and ignored
	// (with a warning).
	FeatureGates map[string]bool

	// MasqueradePodEgress: --masquerade-pod-egress only (svcproxy extra).
	// When true, traffic from pods to destinations outside the cluster
	// CIDRs and NoMasqueradeCIDRs is masqueraded.
	MasqueradePodEgress bool
	// NoMasqueradeCIDRs: --no-masquerade-cidrs only (svcproxy extra).
	// Destinations never masqueraded by MasqueradePodEgress.
	NoMasqueradeCIDRs []netip.Prefix

	// RuleLayout: svcproxy.ruleLayout in the file, --rule-layout (svcproxy
	// extra): "compact" (the default) or "kube-proxy" (kube-proxy's exact
	// chains); see rules.Layout.
	RuleLayout string
}

// DetectLocal holds the interface settings of the interface-based
// detectLocalMode values.
type DetectLocal struct {
	// BridgeInterface: detectLocal.bridgeInterface, --pod-bridge-interface.
	BridgeInterface string
	// InterfaceNamePrefix: detectLocal.interfaceNamePrefix,
	// --pod-interface-name-prefix.
	InterfaceNamePrefix string
}

// Conntrack holds the conntrack sysctl settings. Zero values mean "leave the
// kernel's value as is", as in kube-proxy.
type Conntrack struct {
	MaxPerCore            int32         // conntrack.maxPerCore, --conntrack-max-per-core
	Min                   int32         // conntrack.min, --conntrack-min
	TCPEstablishedTimeout time.Duration // conntrack.tcpEstablishedTimeout, --conntrack-tcp-timeout-established
	TCPCloseWaitTimeout   time.Duration // conntrack.tcpCloseWaitTimeout, --conntrack-tcp-timeout-close-wait
	TCPBeLiberal          bool          // conntrack.tcpBeLiberal, --conntrack-tcp-be-liberal
	UDPTimeout            time.Duration // conntrack.udpTimeout, --conntrack-udp-timeout
	UDPStreamTimeout      time.Duration // conntrack.udpStreamTimeout, --conntrack-udp-timeout-stream
}

// Defaults returns kube-proxy v1.36's defaults (iptables mode, Linux), plus
// svcproxy's for its extras.
func Defaults() Config {
	return Config{
		ContentType:        "application/vnd.kubernetes.protobuf",
		QPS:                5,
		Burst:              10,
		BindAddress:        "0.0.0.0",
		HealthzBindAddress: net.JoinHostPort("0.0.0.0", strconv.Itoa(DefaultHealthzPort)),
		MetricsBindAddress: net.JoinHostPort("127.0.0.1", strconv.Itoa(DefaultMetricsPort)),
		Mode:               ModeIPTables,
		IPTablesBackend:    iptables.BackendAuto,
		MasqueradeBit:      14,
		LocalhostNodePorts: true,
		SyncPeriod:         30 * time.Second,
		MinSyncPeriod:      time.Second,
		ConfigSyncPeriod:   15 * time.Minute,
		DetectLocalMode:    nodeconfig.LocalModeClusterCIDR,
		RuleLayout:         string(rules.LayoutCompact),
		OOMScoreAdj:        -999,
		Conntrack: Conntrack{
			MaxPerCore:            32 * 1024,
			Min:                   128 * 1024,
			TCPEstablishedTimeout: 24 * time.Hour,
			TCPCloseWaitTimeout:   time.Hour,
		},
		FeatureGates: map[string]bool{},
	}
}

// name labels a setting in error messages by its file field and its flag, so
// the message is clear whichever way the value came in.
func name(fileField, flag string) string {
	return fmt.Sprintf("%s (--%s)", fileField, flag)
}

var hiddenMetricsVersion = regexp.MustCompile(`^[0-9]+\.[0-9]+$`)

// Validate checks c and returns every problem found, joined (nil if none).
// Each message names the file field and the flag concerned.
func (c *Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	switch c.Mode {
	case "", ModeIPTables:
	case ModeIPVS, ModeNFTables, ModeKernelspace:
		add("%s: %q is not supported by svcproxy (iptables mode only)", name("mode", "proxy-mode"), c.Mode)
	default:
		add("%s: %q is not a valid proxy mode (svcproxy supports only %q)", name("mode", "proxy-mode"), c.Mode, ModeIPTables)
	}
	switch c.IPTablesBackend {
	case iptables.BackendAuto, iptables.BackendNFT, iptables.BackendLegacy:
	default:
		add("--iptables-backend: %q must be one of %s, %s, %s", c.IPTablesBackend, iptables.BackendAuto, iptables.BackendNFT, iptables.BackendLegacy)
	}

	if c.SyncPeriod <= 0 {
		add("%s: %v must be greater than 0", name("iptables.syncPeriod", "iptables-sync-period"), c.SyncPeriod)
	}
	if c.MinSyncPeriod < 0 {
		add("%s: %v must not be negative", name("iptables.minSyncPeriod", "iptables-min-sync-period"), c.MinSyncPeriod)
	} else if c.SyncPeriod > 0 && c.MinSyncPeriod > c.SyncPeriod {
		add("iptables.minSyncPeriod (%v) must not exceed iptables.syncPeriod (%v) (--iptables-min-sync-period, --iptables-sync-period)", c.MinSyncPeriod, c.SyncPeriod)
	}
	if c.ConfigSyncPeriod <= 0 {
		add("%s: %v must be greater than 0", name("configSyncPeriod", "config-sync-period"), c.ConfigSyncPeriod)
	}
	if c.Burst < 0 {
		add("%s: %d must not be negative", name("clientConnection.burst", "kube-api-burst"), c.Burst)
	}

	if _, err := netip.ParseAddr(c.BindAddress); err != nil {
		add("%s: %q is not an IP address", name("bindAddress", "bind-address"), c.BindAddress)
	}
	if c.HealthzBindAddress != "" {
		if err := checkHostPort(c.HealthzBindAddress); err != nil {
			add("%s: %v", name("healthzBindAddress", "healthz-bind-address"), err)
		}
	}
	if c.MetricsBindAddress != "" {
		if err := checkHostPort(c.MetricsBindAddress); err != nil {
			add("%s: %v", name("metricsBindAddress", "metrics-bind-address"), err)
		}
	}
	if v := c.ShowHiddenMetricsForVersion; v != "" && !hiddenMetricsVersion.MatchString(v) {
		add("%s: %q must be of the form <major>.<minor>, e.g. 1.35", name("showHiddenMetricsForVersion", "show-hidden-metrics-for-version"), v)
	}

	for i, a := range c.NodePortAddresses {
		if a == nodeconfig.NodePortAddressesPrimary {
			if len(c.NodePortAddresses) != 1 {
				add("%s: can't use both %q and CIDRs", name("nodePortAddresses", "nodeport-addresses"), nodeconfig.NodePortAddressesPrimary)
			}
			continue
		}
		if _, err := parsePrefix(a); err != nil {
			add("%s[%d]: %q: invalid CIDR", name("nodePortAddresses", "nodeport-addresses"), i, a)
		}
	}

	// kube-proxy allows one CIDR per family. svcproxy takes any number (pod
	// pools added over time); several CIDRs of a family are matched through
	// one ipset. Duplicates are a mistake worth naming.
	seenCIDR := map[netip.Prefix]bool{}
	for _, p := range c.ClusterCIDRs {
		if seenCIDR[p] {
			add("%s: %s is listed twice", name("clusterCIDR", "cluster-cidr"), p)
		}
		seenCIDR[p] = true
	}

	// What the rules of a node depend on is checked where it is used, so
	// that dump and explain check it the same way.
	if err := c.NodeSettings().Validate(settingName); err != nil {
		errs = append(errs, err)
	}

	if c.OOMScoreAdj < -1000 || c.OOMScoreAdj > 1000 {
		add("%s: %d is out of range -1000..1000", name("oomScoreAdj", "oom-score-adj"), c.OOMScoreAdj)
	}
	ct := c.Conntrack
	for _, f := range []struct {
		neg        bool
		field, flg string
		v          any
	}{
		{ct.MaxPerCore < 0, "conntrack.maxPerCore", "conntrack-max-per-core", ct.MaxPerCore},
		{ct.Min < 0, "conntrack.min", "conntrack-min", ct.Min},
		{ct.TCPEstablishedTimeout < 0, "conntrack.tcpEstablishedTimeout", "conntrack-tcp-timeout-established", ct.TCPEstablishedTimeout},
		{ct.TCPCloseWaitTimeout < 0, "conntrack.tcpCloseWaitTimeout", "conntrack-tcp-timeout-close-wait", ct.TCPCloseWaitTimeout},
		{ct.UDPTimeout < 0, "conntrack.udpTimeout", "conntrack-udp-timeout", ct.UDPTimeout},
		{ct.UDPStreamTimeout < 0, "conntrack.udpStreamTimeout", "conntrack-udp-timeout-stream", ct.UDPStreamTimeout},
	} {
		if f.neg {
			add("%s: %v must not be negative", name(f.field, f.flg), f.v)
		}
	}
	return errors.Join(errs...)
}

// NodeSettings are the settings the rules of a node depend on.
func (c *Config) NodeSettings() nodeconfig.Settings {
	return nodeconfig.Settings{
		MasqueradeAll:       c.MasqueradeAll,
		MasqueradeBit:       c.MasqueradeBit,
		LocalhostNodePorts:  c.LocalhostNodePorts,
		TCPBeLiberal:        c.Conntrack.TCPBeLiberal,
		DetectLocalMode:     c.DetectLocalMode,
		BridgeInterface:     c.DetectLocal.BridgeInterface,
		InterfaceNamePrefix: c.DetectLocal.InterfaceNamePrefix,
		ClusterCIDRs:        c.ClusterCIDRs,
		NodePortAddresses:   c.NodePortAddresses,
		BindAddress:         c.BindAddress,
		MasqueradePodEgress: c.MasqueradePodEgress,
		NoMasqueradeCIDRs:   c.NoMasqueradeCIDRs,
		RuleLayout:          c.RuleLayout,
	}
}

// settingName spells a node setting as the file field and flag it comes from.
func settingName(s nodeconfig.Setting) string {
	switch s {
	case nodeconfig.SettingMasqueradeBit:
		return name("iptables.masqueradeBit", "iptables-masquerade-bit")
	case nodeconfig.SettingDetectLocalMode:
		return name("detectLocalMode", "detect-local-mode")
	case nodeconfig.SettingBridgeInterface:
		return name("detectLocal.bridgeInterface", "pod-bridge-interface")
	case nodeconfig.SettingInterfaceNamePrefix:
		return name("detectLocal.interfaceNamePrefix", "pod-interface-name-prefix")
	case nodeconfig.SettingClusterCIDRs:
		return name("clusterCIDR", "cluster-cidr")
	case nodeconfig.SettingMasqueradePodEgress:
		return "--masquerade-pod-egress"
	case nodeconfig.SettingRuleLayout:
		return name("svcproxy.ruleLayout", "rule-layout")
	}
	return fmt.Sprintf("setting %d", s)
}

// NodeName returns the name of this node: HostnameOverride if set, else the
// host name, trimmed and lower-cased (as kube-proxy). It returns an error
// only when the host name cannot be read or both are empty.
func (c *Config) NodeName() (string, error) {
	n := strings.ToLower(strings.TrimSpace(c.HostnameOverride))
	if n != "" {
		return n, nil
	}
	h, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("couldn't determine hostname: %w", err)
	}
	if n = strings.ToLower(strings.TrimSpace(h)); n == "" {
		return "", errors.New("empty hostname; set --hostname-override")
	}
	return n, nil
}

// checkHostPort accepts "IP:port" with a literal IP and a port in 1..65535.
func checkHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q must be IP:port", s)
	}
	if _, err := netip.ParseAddr(host); err != nil {
		return fmt.Errorf("%q: %q is not an IP address", s, host)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("%q: %q is not a valid port", s, port)
	}
	return nil
}

// appendPortIfNeeded turns a bare IP into IP:port, as kube-proxy does for the
// healthz and metrics addresses; anything else is returned unchanged (and
// left to Validate).
func appendPortIfNeeded(addr string, port int) string {
	if _, _, err := net.SplitHostPort(addr); err == nil {
		return addr
	}
	if ip, err := netip.ParseAddr(addr); err == nil {
		return net.JoinHostPort(ip.String(), strconv.Itoa(port))
	}
	return addr
}

// parsePrefix parses a CIDR, masking host bits ("10.244.1.0/16" is
// 10.244.0.0/16, as net.ParseCIDR and so kube-proxy read it).
func parsePrefix(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(strings.TrimSpace(s))
	if err != nil {
		return netip.Prefix{}, err
	}
	return p.Masked(), nil
}

// parsePrefixList parses a comma-separated CIDR list; empty items are
// skipped. what names the setting in the error.
func parsePrefixList(s, what string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	var errs []error
	for _, item := range strings.Split(s, ",") {
		if strings.TrimSpace(item) == "" {
			continue
		}
		p, err := parsePrefix(item)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %q: invalid CIDR", what, strings.TrimSpace(item)))
			continue
		}
		out = append(out, p)
	}
	return out, errors.Join(errs...)
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}
