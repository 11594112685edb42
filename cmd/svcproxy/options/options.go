package options

import (
	"errors"
	goflag "flag"
	"fmt"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/pflag"
	"github.com/svcproxy/svcproxy/proxier/nodeconfig"
	"k8s.io/apimachinery/pkg/util/validation/field"
	logsapi "k8s.io/component-base/logs/api/v1"
	_ "k8s.io/component-base/logs/json/register" // --logging-format=json, as kube-proxy
	"k8s.io/klog/v2"
)

// Options is the command line of the svcproxy daemon: the resolved Config
// plus the settings that only make sense as flags.
type Options struct {
	// ConfigFile is --config: a KubeProxyConfiguration file.
	ConfigFile string
	// WriteConfigFile is --write-config-to: write the resolved
	// configuration there (see WriteConfigTo) and exit.
	WriteConfigFile string
	// CleanupAndExit is --cleanup: remove svcproxy's (kube-proxy's) rules
	// and exit.
	CleanupAndExit bool
	// InitOnly is --init-only: do the set-up that needs full root
	// privileges (the sysctls), then exit, as kube-proxy's init-only mode.
	InitOnly bool

	// Logging is kube-proxy's logging configuration: the file's logging
	// section, overridden by the component-base logging flags
	// (--logging-format, -v, --vmodule, --log-flush-frequency, ...).
	// ApplyLogging validates and applies it.
	Logging *logsapi.LoggingConfiguration

	// Config is the resolved configuration. NewOptions sets it to
	// Defaults(); AddFlags binds flags into it; Complete applies --config.
	Config Config

	// Warnings lists, after Complete, every setting accepted for kube-proxy
	// compatibility but ignored. ApplyLogging logs them (once the logging
	// configuration is in force).
	Warnings []string

	// Flag targets that are not Config fields.
	hostnameOverride string
	healthzPort      int32
	metricsPort      int32
	ignored          map[string]*ignoredValue
	// fileFlags are the flags whose setting lives in the config file; with
	// --config they are ignored (see Complete).
	fileFlags []string
}

// NewOptions returns Options holding the defaults.
func NewOptions() *Options {
	return &Options{
		Config:      Defaults(),
		Logging:     logsapi.NewLoggingConfiguration(),
		healthzPort: DefaultHealthzPort,
		metricsPort: DefaultMetricsPort,
		ignored:     map[string]*ignoredValue{},
	}
}

// ignoredFlags are kube-proxy v1.36 (Linux) flags svcproxy accepts so that
// kube-proxy command lines keep working, but does not implement. Setting one
// logs "flag --X is accepted for kube-proxy compatibility and ignored".
// (kube-proxy has no --nftables-* flags; its nftables settings are file-only.)
var ignoredFlags = []struct {
	name, typ string
	isBool    bool
}{
	{"ipvs-sync-period", "duration", false},
	{"ipvs-min-sync-period", "duration", false},
	{"ipvs-scheduler", "string", false},
	{"ipvs-exclude-cidrs", "strings", false},
	{"ipvs-strict-arp", "bool", true},
	{"ipvs-tcp-timeout", "duration", false},
	{"ipvs-tcpfin-timeout", "duration", false},
	{"ipvs-udp-timeout", "duration", false},
	{"profiling", "bool", true},
}

// AddFlags registers kube-proxy's flags (same names, same defaults) and
// svcproxy's extras on fs, bound to o. It also makes fs treat '_' in flag
// names as '-', as kube-proxy's command does. Flags kube-proxy has but
// svcproxy does not implement are accepted, hidden from help, and reported
// by Complete. Flags neither knows make pflag fail, naming the flag.
// The logging flags are component-base's, as kube-proxy's (logsapi.AddFlags):
// they set o.Logging, which ApplyLogging applies.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	c := &o.Config
	fs.SetNormalizeFunc(WordSepNormalize)

	// Flags outside the config file.
	fs.StringVar(&o.ConfigFile, "config", o.ConfigFile, "The path to the configuration file (a kubeproxy.config.k8s.io/v1alpha1 KubeProxyConfiguration). When set, other flags that have a field in the file are ignored, except --hostname-override, as with kube-proxy.")
	fs.StringVar(&o.WriteConfigFile, "write-config-to", o.WriteConfigFile, "If set, write the configuration values to this file and exit.")
	fs.BoolVar(&o.CleanupAndExit, "cleanup", o.CleanupAndExit, "If true cleanup iptables rules and exit.")
	fs.BoolVar(&o.InitOnly, "init-only", o.InitOnly, "If true, perform any initialization steps that must be done with full root privileges, and then exit. After doing this, you can run svcproxy again with only the CAP_NET_ADMIN capability.")
	fs.StringVar(&c.Master, "master", c.Master, "The address of the Kubernetes API server (overrides any value in kubeconfig)")
	fs.StringVar(&o.hostnameOverride, "hostname-override", o.hostnameOverride, "If non-empty, will be used as the name of the Node that svcproxy is running on. If unset, the node name is assumed to be the same as the node's hostname. Overrides the config file.")

	// svcproxy extras: not in the file, so always taken from the flags.
	fs.StringVar((*string)(&c.IPTablesBackend), "iptables-backend", string(c.IPTablesBackend), "Which iptables to drive: 'auto' (detect which backend holds the system's rules), 'nft' (iptables-nft) or 'legacy' (iptables-legacy).")
	fs.StringVar(&c.RuleLayout, "rule-layout", c.RuleLayout, "Shape of the rules: 'compact' (a KUBE-SEP chain only for endpoints that may be the client itself, the rest DNATed from the service chain; KUBE-SERVICES dispatched by destination above 256 service ports) or 'kube-proxy' (kube-proxy's exact layout). Chain names and comments are kube-proxy's in both. Also svcproxy.ruleLayout in the config file.")
	fs.BoolVar(&c.MasqueradePodEgress, "masquerade-pod-egress", c.MasqueradePodEgress, "Masquerade traffic from pods to destinations outside the cluster CIDRs and --no-masquerade-cidrs.")
	fs.Var(&prefixListValue{p: &c.NoMasqueradeCIDRs}, "no-masquerade-cidrs", "Comma-separated CIDRs that --masquerade-pod-egress never masquerades traffic to.")

	// Flags with a config-file field: ignored when --config is set.
	file := func(name string) { o.fileFlags = append(o.fileFlags, name) }

	fs.StringVar(&c.Kubeconfig, "kubeconfig", c.Kubeconfig, "Path to kubeconfig file with authorization information (the master location can be overridden by the master flag).")
	file("kubeconfig")
	fs.StringVar(&c.ContentType, "kube-api-content-type", c.ContentType, "Content type of requests sent to apiserver.")
	file("kube-api-content-type")
	fs.Int32Var(&c.Burst, "kube-api-burst", c.Burst, "Burst to use while talking with kubernetes apiserver")
	file("kube-api-burst")
	fs.Float32Var(&c.QPS, "kube-api-qps", c.QPS, "QPS to use while talking with kubernetes apiserver")
	file("kube-api-qps")

	fs.StringVar(&c.BindAddress, "bind-address", c.BindAddress, "Overrides svcproxy's idea of what its node's primary IP is. Note that the name is a historical artifact, and svcproxy does not actually bind any sockets to this IP.")
	file("bind-address")
	fs.StringVar(&c.HealthzBindAddress, "healthz-bind-address", c.HealthzBindAddress, "The IP address and port for the health check server to serve on, defaulting to \"0.0.0.0:10256\". Set empty to disable.")
	file("healthz-bind-address")
	fs.StringVar(&c.MetricsBindAddress, "metrics-bind-address", c.MetricsBindAddress, "The IP address and port for the metrics server to serve on, defaulting to \"127.0.0.1:10249\". (Set to \"0.0.0.0:10249\" / \"[::]:10249\" to bind on all interfaces.) Set empty to disable.")
	file("metrics-bind-address")
	fs.BoolVar(&c.BindAddressHardFail, "bind-address-hard-fail", c.BindAddressHardFail, "If true svcproxy will treat failure to bind to a port as fatal and exit")
	file("bind-address-hard-fail")
	fs.StringVar(&c.ShowHiddenMetricsForVersion, "show-hidden-metrics-for-version", c.ShowHiddenMetricsForVersion, "The previous version for which you want to show hidden metrics, as <major>.<minor>. svcproxy hides no metrics.")
	file("show-hidden-metrics-for-version")
	fs.StringVar(&c.Mode, "proxy-mode", c.Mode, "Which proxy mode to use. svcproxy supports only 'iptables'.")
	file("proxy-mode")
	fs.Var(featureGatesValue(c.FeatureGates), "feature-gates", "A set of key=value pairs for kube-proxy feature gates. Accepted for compatibility and ignored.")
	file("feature-gates")

	fs.Int32Var(&c.MasqueradeBit, "iptables-masquerade-bit", c.MasqueradeBit, "The bit of the fwmark space to mark packets requiring SNAT with. Must be within the range [0, 31].")
	file("iptables-masquerade-bit")
	fs.BoolVar(&c.MasqueradeAll, "masquerade-all", c.MasqueradeAll, "SNAT all traffic sent via Service cluster IPs. This may be required with some CNI plugins.")
	file("masquerade-all")
	fs.BoolVar(&c.LocalhostNodePorts, "iptables-localhost-nodeports", c.LocalhostNodePorts, "If false, disable the legacy behavior of allowing NodePort services to be accessed via localhost. (IPv4 only.)")
	file("iptables-localhost-nodeports")
	fs.DurationVar(&c.SyncPeriod, "iptables-sync-period", c.SyncPeriod, "An interval (e.g. '5s', '1m', '2h22m') indicating how frequently various re-synchronizing and cleanup operations are performed. Must be greater than 0.")
	file("iptables-sync-period")
	fs.DurationVar(&c.MinSyncPeriod, "iptables-min-sync-period", c.MinSyncPeriod, "The minimum period between iptables rule resyncs (e.g. '5s', '1m', '2h22m'). A value of 0 means every Service or EndpointSlice change will result in an immediate iptables resync.")
	file("iptables-min-sync-period")

	fs.StringVar(&c.DetectLocalMode, "detect-local-mode", c.DetectLocalMode, "Mode to use to detect local traffic: ClusterCIDR, NodeCIDR, BridgeInterface or InterfaceNamePrefix.")
	file("detect-local-mode")
	fs.StringVar(&c.DetectLocal.BridgeInterface, "pod-bridge-interface", c.DetectLocal.BridgeInterface, "A bridge interface name. When --detect-local-mode is set to BridgeInterface, svcproxy will consider traffic to be local if it originates from this bridge.")
	file("pod-bridge-interface")
	fs.StringVar(&c.DetectLocal.InterfaceNamePrefix, "pod-interface-name-prefix", c.DetectLocal.InterfaceNamePrefix, "An interface name prefix. When --detect-local-mode is set to InterfaceNamePrefix, svcproxy will consider traffic to be local if it originates from any interface whose name begins with this prefix.")
	file("pod-interface-name-prefix")
	fs.Var(&prefixListValue{p: &c.ClusterCIDRs, what: "clusterCIDR"}, "cluster-cidr", "The CIDR ranges of the pods in the cluster, comma-separated: one, a dual-stack pair, or (unlike kube-proxy) any number per IP family, matched through the SVCPROXY-POD-CIDRS ipset when a family has several. When --detect-local-mode is set to ClusterCIDR, svcproxy will consider traffic to be local if its source IP is in these ranges; --masquerade-pod-egress uses them as the pod network.")
	file("cluster-cidr")
	fs.StringSliceVar(&c.NodePortAddresses, "nodeport-addresses", c.NodePortAddresses, "A list of CIDR ranges that contain valid node IPs, or alternatively, the single string 'primary'. If unset, NodePort connections will be accepted on all local IPs.")
	file("nodeport-addresses")

	fs.Int32Var(&c.Conntrack.MaxPerCore, "conntrack-max-per-core", c.Conntrack.MaxPerCore, "Maximum number of NAT connections to track per CPU core (0 to leave the limit as-is and ignore conntrack-min).")
	file("conntrack-max-per-core")
	fs.Int32Var(&c.Conntrack.Min, "conntrack-min", c.Conntrack.Min, "Minimum number of conntrack entries to allocate, regardless of conntrack-max-per-core (set conntrack-max-per-core=0 to leave the limit as-is).")
	file("conntrack-min")
	fs.DurationVar(&c.Conntrack.TCPEstablishedTimeout, "conntrack-tcp-timeout-established", c.Conntrack.TCPEstablishedTimeout, "Idle timeout for established TCP connections (0 to leave as-is)")
	file("conntrack-tcp-timeout-established")
	fs.DurationVar(&c.Conntrack.TCPCloseWaitTimeout, "conntrack-tcp-timeout-close-wait", c.Conntrack.TCPCloseWaitTimeout, "NAT timeout for TCP connections in the CLOSE_WAIT state")
	file("conntrack-tcp-timeout-close-wait")
	fs.BoolVar(&c.Conntrack.TCPBeLiberal, "conntrack-tcp-be-liberal", c.Conntrack.TCPBeLiberal, "Enable liberal mode for tracking TCP packets by setting nf_conntrack_tcp_be_liberal to 1")
	file("conntrack-tcp-be-liberal")
	fs.DurationVar(&c.Conntrack.UDPTimeout, "conntrack-udp-timeout", c.Conntrack.UDPTimeout, "Idle timeout for UNREPLIED UDP connections (0 to leave as-is)")
	file("conntrack-udp-timeout")
	fs.DurationVar(&c.Conntrack.UDPStreamTimeout, "conntrack-udp-timeout-stream", c.Conntrack.UDPStreamTimeout, "Idle timeout for ASSURED UDP connections (0 to leave as-is)")
	file("conntrack-udp-timeout-stream")
	fs.DurationVar(&c.ConfigSyncPeriod, "config-sync-period", c.ConfigSyncPeriod, "How often configuration from the apiserver is refreshed. Must be greater than 0.")
	file("config-sync-period")

	fs.Int32Var(&o.healthzPort, "healthz-port", o.healthzPort, "The port to bind the health check server. Use 0 to disable.")
	_ = fs.MarkDeprecated("healthz-port", "This flag is deprecated and will be removed in a future release. Please use --healthz-bind-address instead.")
	file("healthz-port")
	fs.Int32Var(&o.metricsPort, "metrics-port", o.metricsPort, "The port to bind the metrics server. Use 0 to disable.")
	_ = fs.MarkDeprecated("metrics-port", "This flag is deprecated and will be removed in a future release. Please use --metrics-bind-address instead.")
	file("metrics-port")

	for _, f := range ignoredFlags {
		v := &ignoredValue{typ: f.typ}
		o.ignored[f.name] = v
		fl := fs.VarPF(v, f.name, "", "Accepted for kube-proxy compatibility and ignored.")
		if f.isBool {
			fl.NoOptDefVal = "true"
		}
		_ = fs.MarkHidden(f.name)
	}

	fs.Int32Var(&c.OOMScoreAdj, "oom-score-adj", c.OOMScoreAdj, "The oom-score-adj value for the svcproxy process. Values must be within the range [-1000, 1000]. This parameter is ignored if a config file is specified by --config.")
	file("oom-score-adj")

	// kube-proxy's logging flags. With --config they override the file's
	// logging section (see Complete), as in kube-proxy.
	logsapi.AddFlags(o.Logging, fs)
}

// AddKlogFlags registers klog's -v/--v (log verbosity) and --vmodule
// directly on klog, for commands without AddFlags (which registers them,
// with kube-proxy's other logging flags, through component-base). Flags
// already on fs are left alone.
func AddKlogFlags(fs *pflag.FlagSet) {
	gfs := goflag.NewFlagSet("klog", goflag.ContinueOnError)
	klog.InitFlags(gfs)
	for _, n := range []string{"v", "vmodule"} {
		if fs.Lookup(n) == nil {
			fs.AddGoFlag(gfs.Lookup(n))
		}
	}
}

// Complete resolves the parsed flags in fs (the set AddFlags was given) and
// the --config file into o.Config, and records and logs warnings.
//
// Precedence mirrors kube-proxy v1.36 (cmd/kube-proxy/app/options.go,
// Options.Complete): when --config is given, the file replaces the
// configuration built from flags. Flags that have a field in the file are
// then ignored even when set explicitly (svcproxy warns about each; kube-proxy
// is silent). Still applied on top of the file: --hostname-override (which
// kube-proxy lets override the file), the logging flags (each one given
// wins over the file's logging section; --vmodule entries go before the
// file's), and settings the file cannot express (--master, --init-only,
// --cleanup, --write-config-to and svcproxy's --iptables-backend,
// --masquerade-pod-egress, --no-masquerade-cidrs). Within the file, empty,
// zero and null values take the defaults.
//
// Without --config, a bare IP in --healthz-bind-address or
// --metrics-bind-address gets the port from the deprecated --healthz-port /
// --metrics-port (default 10256 / 10249), and a zero port disables that
// server, as in kube-proxy.
//
// Errors: the config file cannot be loaded (see LoadConfigFile), or
// --hostname-override is set to blanks. Invalid values are left to Validate.
func (o *Options) Complete(fs *pflag.FlagSet) error {
	var warnings []string
	for _, f := range ignoredFlags {
		if fs.Changed(f.name) {
			warnings = append(warnings, fmt.Sprintf("flag --%s is accepted for kube-proxy compatibility and ignored", f.name))
		}
	}

	if o.ConfigFile != "" {
		kp, ext, w, err := decodeConfigFile(o.ConfigFile)
		if err != nil {
			return err
		}
		warnings = append(warnings, w...)
		cfg, w, err := fromV1Alpha1(kp, o.ConfigFile)
		if err != nil {
			return err
		}
		warnings = append(warnings, w...)

		var overridden []string
		for _, n := range o.fileFlags {
			if fs.Changed(n) {
				overridden = append(overridden, "--"+n)
			}
		}
		sort.Strings(overridden)
		for _, n := range overridden {
			if _, ign := o.ignored[strings.TrimPrefix(n, "--")]; ign {
				continue // already reported as ignored
			}
			warnings = append(warnings, fmt.Sprintf("flag %s is ignored because --config is set: as with kube-proxy, the config file takes precedence (set it in %s)", n, o.ConfigFile))
		}

		cfg.Master = o.Config.Master
		cfg.IPTablesBackend = o.Config.IPTablesBackend
		cfg.MasqueradePodEgress = o.Config.MasqueradePodEgress
		cfg.NoMasqueradeCIDRs = o.Config.NoMasqueradeCIDRs
		cfg.RuleLayout = o.Config.RuleLayout
		if ext.RuleLayout != "" {
			cfg.RuleLayout = ext.RuleLayout // the file wins, as for kube-proxy's own fields
		}
		o.Config = cfg

		// As kube-proxy: the file's logging section, with the logging
		// flags given on the command line on top.
		logging := kp.Logging.DeepCopy()
		logsapi.SetRecommendedLoggingConfiguration(logging)
		if err := copyLogsFromFlags(fs, logging); err != nil {
			return fmt.Errorf("%s: logging: %w", o.ConfigFile, err)
		}
		*o.Logging = *logging
	} else {
		o.Config.HealthzBindAddress = addressFromPortFlag(o.Config.HealthzBindAddress, o.healthzPort)
		o.Config.MetricsBindAddress = addressFromPortFlag(o.Config.MetricsBindAddress, o.metricsPort)
	}

	if fs.Changed("hostname-override") {
		h := strings.TrimSpace(o.hostnameOverride)
		if h == "" {
			return fmt.Errorf("--hostname-override: empty value is invalid")
		}
		o.Config.HostnameOverride = strings.ToLower(h)
	}

	// kube-proxy's platform defaults for values left empty.
	if o.Config.Mode == "" {
		o.Config.Mode = ModeIPTables
	}
	if o.Config.DetectLocalMode == "" {
		o.Config.DetectLocalMode = nodeconfig.LocalModeClusterCIDR
	}
	if len(o.Config.FeatureGates) > 0 {
		var gates []string
		for k, v := range o.Config.FeatureGates {
			gates = append(gates, fmt.Sprintf("%s=%t", k, v))
		}
		sort.Strings(gates)
		warnings = append(warnings, fmt.Sprintf("feature gates are accepted for kube-proxy compatibility and ignored: %s", strings.Join(gates, ",")))
	}

	o.Warnings = warnings
	return nil
}

// ApplyLogging validates o.Logging and applies it to the process's logging
// (klog), as kube-proxy does right after Complete, then logs the warnings
// Complete found. Errors name the file field and the flag.
func (o *Options) ApplyLogging() error {
	if errs := logsapi.Validate(o.Logging, nil, field.NewPath("logging")); len(errs) > 0 {
		var msgs []error
		for _, e := range errs {
			if fl, ok := loggingFlagOf[e.Field]; ok {
				msgs = append(msgs, fmt.Errorf("%s (%s): %s", e.Field, fl, e.ErrorBody()))
			} else {
				msgs = append(msgs, e)
			}
		}
		return errors.Join(msgs...)
	}
	if err := logsapi.ValidateAndApply(o.Logging, nil); err != nil {
		return fmt.Errorf("logging: %w", err)
	}
	for _, w := range o.Warnings {
		klog.Warning(w)
	}
	return nil
}

// loggingFlagOf names the flag of each logging field.
var loggingFlagOf = map[string]string{
	"logging.format":                      "--logging-format",
	"logging.flushFrequency":              "--log-flush-frequency",
	"logging.verbosity":                   "-v",
	"logging.vmodule":                     "--vmodule",
	"logging.options.text.splitStream":    "--log-text-split-stream",
	"logging.options.text.infoBufferSize": "--log-text-info-buffer-size",
	"logging.options.json.splitStream":    "--log-json-split-stream",
	"logging.options.json.infoBufferSize": "--log-json-info-buffer-size",
}

// copyLogsFromFlags is kube-proxy's (cmd/kube-proxy/app/options.go): the
// logging flags set on the command line override the file's values;
// --vmodule entries come before the file's.
func copyLogsFromFlags(from *pflag.FlagSet, to *logsapi.LoggingConfiguration) error {
	var cloneFS pflag.FlagSet
	logsapi.AddFlags(to, &cloneFS)
	vmodule := to.VModule
	to.VModule = nil
	var err error
	cloneFS.VisitAll(func(f *pflag.Flag) {
		if err != nil {
			return
		}
		fsFlag := from.Lookup(f.Name)
		if fsFlag == nil {
			err = fmt.Errorf("logging flag %s not found in flag set", f.Name)
			return
		}
		if !fsFlag.Changed {
			return
		}
		if setErr := f.Value.Set(fsFlag.Value.String()); setErr != nil {
			err = fmt.Errorf("copying flag %s value: %w", f.Name, setErr)
			return
		}
	})
	to.VModule = append(to.VModule, vmodule...)
	return err
}

// Validate checks the resolved configuration; see Config.Validate.
func (o *Options) Validate() error {
	return o.Config.Validate()
}

// WriteConfigTo writes o.Config to path as a KubeProxyConfiguration YAML file
// (what --write-config-to asks for), with o.Logging as its logging section,
// creating or truncating it. Flag-only settings that differ from their
// defaults are listed in a comment at the top. It returns an error if the
// file cannot be written.
func (o *Options) WriteConfigTo(path string) error {
	data, err := marshalConfig(&o.Config, o.Logging)
	if err != nil {
		return fmt.Errorf("encoding configuration: %w", err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return fmt.Errorf("writing configuration: %w", err)
	}
	klog.InfoS("Wrote configuration", "file", path)
	return nil
}

func addressFromPortFlag(addr string, port int32) string {
	if port == 0 {
		return ""
	}
	return appendPortIfNeeded(addr, int(port))
}

// WordSepNormalize makes "--hostname_override" mean "--hostname-override",
// as kube-proxy's command line (component-base cli.Run) does.
func WordSepNormalize(_ *pflag.FlagSet, name string) pflag.NormalizedName {
	return pflag.NormalizedName(strings.ReplaceAll(name, "_", "-"))
}

// prefixListValue is a comma-separated CIDR list flag. Each Set replaces the
// list; bad items are an error naming them.
type prefixListValue struct {
	p    *[]netip.Prefix
	what string
}

func (v *prefixListValue) String() string {
	if v.p == nil {
		return ""
	}
	return joinPrefixes(*v.p)
}

func (v *prefixListValue) Set(s string) error {
	what := v.what
	if what == "" {
		what = "CIDR"
	}
	ps, err := parsePrefixList(s, what)
	if err != nil {
		return err
	}
	*v.p = ps
	return nil
}

func (v *prefixListValue) Type() string { return "cidrs" }

// featureGatesValue is a "Name=bool,Name=bool" map flag, as kube-proxy's
// --feature-gates.
type featureGatesValue map[string]bool

func (v featureGatesValue) String() string {
	var s []string
	for k, b := range v {
		s = append(s, fmt.Sprintf("%s=%t", k, b))
	}
	sort.Strings(s)
	return strings.Join(s, ",")
}

func (v featureGatesValue) Set(s string) error {
	for _, kv := range strings.Split(s, ",") {
		kv = strings.TrimSpace(kv)
		if kv == "" {
			continue
		}
		k, val, ok := strings.Cut(kv, "=")
		if !ok {
			return fmt.Errorf("missing bool value for %s", kv)
		}
		b, err := strconv.ParseBool(strings.TrimSpace(val))
		if err != nil {
			return fmt.Errorf("invalid value of %s=%s, err: %v", k, val, err)
		}
		v[strings.TrimSpace(k)] = b
	}
	return nil
}

func (v featureGatesValue) Type() string { return "mapStringBool" }

// ignoredValue takes any value for an accepted-and-ignored flag.
type ignoredValue struct {
	typ   string
	val   string
	onSet func(string) error
}

func (v *ignoredValue) String() string { return v.val }
func (v *ignoredValue) Type() string   { return v.typ }
func (v *ignoredValue) Set(s string) error {
	if v.onSet != nil {
		if err := v.onSet(s); err != nil {
			return err
		}
	}
	v.val = s
	return nil
}
