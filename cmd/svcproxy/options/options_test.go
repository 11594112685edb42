package options

import (
	logsapi "k8s.io/component-base/logs/api/v1"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"github.com/svcproxy/svcproxy/proxier/nodeconfig"
)

// kubeadmConfig is the config.conf key of the kube-proxy ConfigMap kubeadm
// writes (v1.3x), verbatim.
const kubeadmConfig = `apiVersion: kubeproxy.config.k8s.io/v1alpha1
bindAddress: 0.0.0.0
bindAddressHardFail: false
clientConnection:
  acceptContentTypes: ""
  burst: 0
  contentType: ""
  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf
  qps: 0
clusterCIDR: 10.244.0.0/16
configSyncPeriod: 0s
conntrack:
  maxPerCore: null
  min: null
  tcpBeLiberal: false
  tcpCloseWaitTimeout: null
  tcpEstablishedTimeout: null
  udpStreamTimeout: 0s
  udpTimeout: 0s
detectLocal:
  bridgeInterface: ""
  interfaceNamePrefix: ""
detectLocalMode: ""
enableProfiling: false
healthzBindAddress: ""
hostnameOverride: ""
iptables:
  localhostNodePorts: null
  masqueradeAll: false
  masqueradeBit: null
  minSyncPeriod: 0s
  syncPeriod: 0s
ipvs:
  excludeCIDRs: null
  minSyncPeriod: 0s
  scheduler: ""
  strictARP: false
  syncPeriod: 0s
  tcpFinTimeout: 0s
  tcpTimeout: 0s
  udpTimeout: 0s
kind: KubeProxyConfiguration
logging:
  flushFrequency: 0
  options:
    json:
      infoBufferSize: "0"
    text:
      infoBufferSize: "0"
  verbosity: 0
metricsBindAddress: ""
mode: ""
nftables:
  masqueradeAll: false
  masqueradeBit: null
  minSyncPeriod: 0s
  syncPeriod: 0s
nodePortAddresses: null
oomScoreAdj: null
portRange: ""
showHiddenMetricsForVersion: ""
winkernel:
  enableDSR: false
  forwardHealthCheckVip: false
  networkName: ""
  rootHnsEndpointName: ""
  sourceVip: ""
`

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.conf")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// parse runs the command-line path: AddFlags, Parse, Complete. The logging
// flags only fill o.Logging (ApplyLogging, not called here, applies it), so
// tests do not change global log state.
func parse(t *testing.T, args ...string) (*Options, *pflag.FlagSet, error) {
	t.Helper()
	o := NewOptions()
	fs := pflag.NewFlagSet("svcproxy", pflag.ContinueOnError)
	fs.SetOutput(&strings.Builder{})
	o.AddFlags(fs)
	if err := fs.Parse(args); err != nil {
		return o, fs, err
	}
	return o, fs, o.Complete(fs)
}

func mustParse(t *testing.T, args ...string) (*Options, *pflag.FlagSet) {
	t.Helper()
	o, fs, err := parse(t, args...)
	if err != nil {
		t.Fatalf("parse %q: %v", args, err)
	}
	if err := o.Validate(); err != nil {
		t.Fatalf("Validate after %q: %v", args, err)
	}
	return o, fs
}

func prefixes(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range s {
		out = append(out, netip.MustParsePrefix(p))
	}
	return out
}

func TestDefaults(t *testing.T) {
	o, _ := mustParse(t)
	want := Config{
		ContentType:        "application/vnd.kubernetes.protobuf",
		QPS:                5,
		Burst:              10,
		BindAddress:        "0.0.0.0",
		HealthzBindAddress: "0.0.0.0:10256",
		MetricsBindAddress: "127.0.0.1:10249",
		Mode:               "iptables",
		IPTablesBackend:    "auto",
		MasqueradeBit:      14,
		LocalhostNodePorts: true,
		SyncPeriod:         30 * time.Second,
		MinSyncPeriod:      time.Second,
		ConfigSyncPeriod:   15 * time.Minute,
		DetectLocalMode:    "ClusterCIDR",
		OOMScoreAdj:        -999,
		Conntrack: Conntrack{
			MaxPerCore:            32768,
			Min:                   131072,
			TCPEstablishedTimeout: 24 * time.Hour,
			TCPCloseWaitTimeout:   time.Hour,
		},
		FeatureGates: map[string]bool{},
		RuleLayout:   "compact",
	}
	if !reflect.DeepEqual(o.Config, want) {
		t.Errorf("defaults:\n got %+v\nwant %+v", o.Config, want)
	}
	if len(o.Warnings) != 0 {
		t.Errorf("warnings with no flags: %q", o.Warnings)
	}
}

func TestLoadKubeadmSample(t *testing.T) {
	p := writeFile(t, kubeadmConfig)
	cfg, warnings, err := LoadConfigFile(p)
	if err != nil {
		t.Fatalf("LoadConfigFile: %v", err)
	}
	if len(warnings) != 0 {
		t.Errorf("warnings: %q", warnings)
	}
	want := Defaults()
	want.Kubeconfig = "/var/lib/kube-proxy/kubeconfig.conf"
	want.ClusterCIDRs = prefixes("10.244.0.0/16")
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("kubeadm sample:\n got %+v\nwant %+v", cfg, want)
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func TestKubeadmInvocation(t *testing.T) {
	p := writeFile(t, kubeadmConfig)
	// The kube-proxy DaemonSet kubeadm deploys runs exactly this.
	o, _ := mustParse(t, "--config="+p, "--hostname-override=node1")
	if o.ConfigFile != p || o.Config.HostnameOverride != "node1" ||
		o.Config.Kubeconfig != "/var/lib/kube-proxy/kubeconfig.conf" ||
		!reflect.DeepEqual(o.Config.ClusterCIDRs, prefixes("10.244.0.0/16")) {
		t.Errorf("got %+v", o.Config)
	}
	if n, err := o.Config.NodeName(); err != nil || n != "node1" {
		t.Errorf("NodeName = %q, %v", n, err)
	}
	if len(o.Warnings) != 0 {
		t.Errorf("warnings: %q", o.Warnings)
	}
}

func TestFileValues(t *testing.T) {
	p := writeFile(t, `apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
bindAddress: "::"
clientConnection: {qps: 50, burst: 100, contentType: application/json}
clusterCIDR: "10.244.1.0/16, fd00:10::/56"
detectLocalMode: BridgeInterface
detectLocal: {bridgeInterface: cni0}
hostnameOverride: Node-A
iptables: {masqueradeBit: 0, masqueradeAll: true, localhostNodePorts: false, syncPeriod: 1m, minSyncPeriod: 5s}
metricsBindAddress: 0.0.0.0
nodePortAddresses: [primary]
oomScoreAdj: 0
conntrack: {maxPerCore: 0, tcpEstablishedTimeout: 0s}
featureGates: {SomeGate: true}
`)
	cfg, _, err := LoadConfigFile(p)
	if err != nil {
		t.Fatal(err)
	}
	want := Defaults()
	want.BindAddress = "::"
	want.HealthzBindAddress = "[::]:10256" // family follows bindAddress
	want.MetricsBindAddress = "0.0.0.0:10249"
	want.QPS, want.Burst, want.ContentType = 50, 100, "application/json"
	want.ClusterCIDRs = prefixes("10.244.0.0/16", "fd00:10::/56")
	want.DetectLocalMode = "BridgeInterface"
	want.DetectLocal.BridgeInterface = "cni0"
	want.HostnameOverride = "Node-A"
	want.MasqueradeBit = 0 // explicit 0 is a value, null is "default"
	want.MasqueradeAll = true
	want.LocalhostNodePorts = false
	want.SyncPeriod, want.MinSyncPeriod = time.Minute, 5*time.Second
	want.NodePortAddresses = []string{"primary"}
	want.OOMScoreAdj = 0
	want.Conntrack.MaxPerCore = 0
	want.Conntrack.TCPEstablishedTimeout = 0
	want.FeatureGates = map[string]bool{"SomeGate": true}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("\n got %+v\nwant %+v", cfg, want)
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
	if n, _ := cfg.NodeName(); n != "node-a" {
		t.Errorf("NodeName = %q, want node-a", n)
	}
}

func TestPrecedence(t *testing.T) {
	p := writeFile(t, `apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
hostnameOverride: from-file
clusterCIDR: 10.244.0.0/16
clientConnection: {kubeconfig: /file/kubeconfig}
iptables: {masqueradeAll: false, syncPeriod: 45s}
logging: {verbosity: 5, vmodule: [{filePattern: "proxier*", verbosity: 6}]}
`)
	for _, tc := range []struct {
		name     string
		args     []string
		check    func(t *testing.T, o *Options, fs *pflag.FlagSet)
		warnings []string
	}{
		{
			name: "flags alone apply",
			args: []string{"--masquerade-all", "--iptables-sync-period=10s", "--kubeconfig=/flag/kc", "--cluster-cidr=10.0.0.0/8,fd00::/48"},
			check: func(t *testing.T, o *Options, _ *pflag.FlagSet) {
				c := o.Config
				if !c.MasqueradeAll || c.SyncPeriod != 10*time.Second || c.Kubeconfig != "/flag/kc" ||
					!reflect.DeepEqual(c.ClusterCIDRs, prefixes("10.0.0.0/8", "fd00::/48")) {
					t.Errorf("got %+v", c)
				}
			},
		},
		{
			name: "file wins over file-backed flags, with a warning each",
			args: []string{"--config=" + p, "--masquerade-all=true", "--iptables-sync-period=10s", "--kubeconfig=/flag/kc"},
			check: func(t *testing.T, o *Options, _ *pflag.FlagSet) {
				c := o.Config
				if c.MasqueradeAll || c.SyncPeriod != 45*time.Second || c.Kubeconfig != "/file/kubeconfig" {
					t.Errorf("got %+v", c)
				}
			},
			warnings: []string{
				"flag --iptables-sync-period is ignored because --config is set",
				"flag --kubeconfig is ignored because --config is set",
				"flag --masquerade-all is ignored because --config is set",
			},
		},
		{
			name: "hostname-override beats the file, lower-cased",
			args: []string{"--config=" + p, "--hostname-override= Node1 "},
			check: func(t *testing.T, o *Options, _ *pflag.FlagSet) {
				if o.Config.HostnameOverride != "node1" {
					t.Errorf("HostnameOverride = %q", o.Config.HostnameOverride)
				}
			},
		},
		{
			name: "file hostname without the flag",
			args: []string{"--config=" + p},
			check: func(t *testing.T, o *Options, _ *pflag.FlagSet) {
				if o.Config.HostnameOverride != "from-file" {
					t.Errorf("HostnameOverride = %q", o.Config.HostnameOverride)
				}
			},
		},
		{
			name: "flag-only settings survive the file",
			args: []string{"--config=" + p, "--master=https://api:6443", "--iptables-backend=legacy", "--masquerade-pod-egress", "--no-masquerade-cidrs=192.168.0.0/16"},
			check: func(t *testing.T, o *Options, _ *pflag.FlagSet) {
				c := o.Config
				if c.Master != "https://api:6443" || c.IPTablesBackend != "legacy" || !c.MasqueradePodEgress ||
					!reflect.DeepEqual(c.NoMasqueradeCIDRs, prefixes("192.168.0.0/16")) {
					t.Errorf("got %+v", c)
				}
			},
		},
		{
			name: "file verbosity applies when -v is not given",
			args: []string{"--config=" + p},
			check: func(t *testing.T, o *Options, _ *pflag.FlagSet) {
				if v := o.Logging.Verbosity; v != 5 {
					t.Errorf("verbosity = %d, want 5 from the file", v)
				}
				if v := logsapi.VModuleConfigurationPflag(&o.Logging.VModule).String(); v != "proxier*=6" {
					t.Errorf("vmodule = %s", v)
				}
			},
		},
		{
			name: "-v beats the file",
			args: []string{"--config=" + p, "-v=2"},
			check: func(t *testing.T, o *Options, _ *pflag.FlagSet) {
				if v := o.Logging.Verbosity; v != 2 {
					t.Errorf("verbosity = %d, want 2 from the command line", v)
				}
			},
		},
		{
			name: "logging flags beat the file, --vmodule entries first",
			args: []string{"--config=" + p, "--logging-format=json", "--log-flush-frequency=7s", "--vmodule=sync*=3"},
			check: func(t *testing.T, o *Options, _ *pflag.FlagSet) {
				l := o.Logging
				if l.Format != "json" || l.FlushFrequency.Duration.Duration != 7*time.Second || l.Verbosity != 5 {
					t.Errorf("logging = %+v, want json, 7s and the file's verbosity 5", l)
				}
				if v := logsapi.VModuleConfigurationPflag(&l.VModule).String(); v != "sync*=3,proxier*=6" {
					t.Errorf("vmodule = %s", v)
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, fs := mustParse(t, tc.args...)
			tc.check(t, o, fs)
			if len(o.Warnings) != len(tc.warnings) {
				t.Fatalf("warnings %q, want %d matching %q", o.Warnings, len(tc.warnings), tc.warnings)
			}
			for i, w := range tc.warnings {
				if !strings.Contains(o.Warnings[i], w) {
					t.Errorf("warning %d = %q, want it to contain %q", i, o.Warnings[i], w)
				}
			}
		})
	}
}

func TestConfigFileErrors(t *testing.T) {
	const head = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n"
	for _, tc := range []struct {
		name, content string
		want          []string
	}{
		{"unknown field, with suggestion", head + "iptables:\n  masqueradeBitt: 3\n",
			[]string{`unknown field "iptables.masqueradeBitt" (did you mean "masqueradeBit"?)`}},
		{"wrong case", head + "ClusterCIDR: 10.0.0.0/8\n",
			[]string{`unknown field "ClusterCIDR" (did you mean "clusterCIDR"?)`}},
		{"all unknown fields reported", head + "foo: 1\nconntrack: {bar: 2}\nlogging: {options: {text: {baz: 3}}}\n",
			[]string{`unknown field "foo"`, `unknown field "conntrack.bar"`, `unknown field "logging.options.text.baz"`}},
		{"missing apiVersion", "kind: KubeProxyConfiguration\n", []string{"apiVersion is missing"}},
		{"wrong apiVersion", "apiVersion: kubeproxy.config.k8s.io/v1alpha2\nkind: KubeProxyConfiguration\n",
			[]string{`apiVersion "kubeproxy.config.k8s.io/v1alpha2" is not supported`}},
		{"wrong kind", "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeletConfiguration\n",
			[]string{`kind "KubeletConfiguration" is not supported`}},
		{"duplicate field", head + "mode: iptables\nmode: ipvs\n", []string{`"mode" already set`}},
		{"wrong type", head + "iptables: {masqueradeBit: lots}\n", []string{"masqueradeBit"}},
		{"bad clusterCIDR", head + "clusterCIDR: 10.0.0.0/33\n", []string{`clusterCIDR "10.0.0.0/33": invalid CIDR`}},
		{"bad duration", head + "iptables: {syncPeriod: soon}\n", []string{"soon"}},
		{"not YAML", "\t{{", nil},
		{"empty", "  \n", []string{"config file is empty"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := writeFile(t, tc.content)
			_, _, err := parse(t, "--config="+p)
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), p) {
				t.Errorf("error %q does not name the file", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}

	if _, _, err := parse(t, "--config=/nonexistent/config.conf"); err == nil || !strings.Contains(err.Error(), "/nonexistent/config.conf") {
		t.Errorf("missing file: %v", err)
	}
}

func TestRemovedFieldsTolerated(t *testing.T) {
	p := writeFile(t, strings.Replace(kubeadmConfig, "enableProfiling: false", "enableProfiling: true", 1)+"udpIdleTimeout: 250ms\nresourceContainer: /kube-proxy\n")
	p2 := writeFile(t, strings.Replace(kubeadmConfig, `portRange: ""`, `portRange: "30000-32767"`, 1))
	o, _ := mustParse(t, "--config="+p)
	want := []string{`field "resourceContainer" is ignored`, `field "udpIdleTimeout" is ignored`, "enableProfiling is accepted for kube-proxy compatibility and ignored"}
	if len(o.Warnings) != len(want) {
		t.Fatalf("warnings %q, want %q", o.Warnings, want)
	}
	for i, w := range want {
		if !strings.Contains(o.Warnings[i], w) || !strings.Contains(o.Warnings[i], p) {
			t.Errorf("warning %q should name %s and contain %q", o.Warnings[i], p, w)
		}
	}
	o, _ = mustParse(t, "--config="+p2)
	if len(o.Warnings) != 1 || !strings.Contains(o.Warnings[0], "portRange is ignored") {
		t.Errorf("portRange warnings: %q", o.Warnings)
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(c *Config)
		want   []string // empty: valid
	}{
		{"defaults", func(c *Config) {}, nil},
		{"masquerade bit too big", func(c *Config) { c.MasqueradeBit = 40 },
			[]string{"iptables.masqueradeBit (--iptables-masquerade-bit): 40 is out of range 0..31"}},
		{"masquerade bit negative", func(c *Config) { c.MasqueradeBit = -1 }, []string{"-1 is out of range 0..31"}},
		{"masquerade bit 0 and 31", func(c *Config) { c.MasqueradeBit = 31 }, nil},
		{"min above sync", func(c *Config) { c.MinSyncPeriod, c.SyncPeriod = 5*time.Second, time.Second },
			[]string{"iptables.minSyncPeriod (5s) must not exceed iptables.syncPeriod (1s)"}},
		{"zero min sync", func(c *Config) { c.MinSyncPeriod = 0 }, nil},
		{"zero sync", func(c *Config) { c.SyncPeriod = 0; c.MinSyncPeriod = 0 },
			[]string{"iptables.syncPeriod (--iptables-sync-period): 0s must be greater than 0"}},
		{"zero config sync", func(c *Config) { c.ConfigSyncPeriod = 0 }, []string{"configSyncPeriod (--config-sync-period)"}},
		{"ipvs", func(c *Config) { c.Mode = "ipvs" }, []string{`mode (--proxy-mode): "ipvs" is not supported by svcproxy (iptables mode only)`}},
		{"nftables", func(c *Config) { c.Mode = "nftables" }, []string{`"nftables" is not supported by svcproxy (iptables mode only)`}},
		{"bogus mode", func(c *Config) { c.Mode = "userspace" }, []string{`"userspace" is not a valid proxy mode`}},
		{"empty mode", func(c *Config) { c.Mode = "" }, nil},
		{"backend", func(c *Config) { c.IPTablesBackend = "xtables" }, []string{`--iptables-backend: "xtables" must be one of auto, nft, legacy`}},
		{"NodeCIDR", func(c *Config) { c.DetectLocalMode = nodeconfig.LocalModeNodeCIDR }, nil},
		{"BridgeInterface without name", func(c *Config) { c.DetectLocalMode = nodeconfig.LocalModeBridgeInterface },
			[]string{"BridgeInterface requires the bridge name: detectLocal.bridgeInterface (--pod-bridge-interface) must not be empty"}},
		{"BridgeInterface with name", func(c *Config) {
			c.DetectLocalMode = nodeconfig.LocalModeBridgeInterface
			c.DetectLocal.BridgeInterface = "cbr0"
		}, nil},
		{"InterfaceNamePrefix without prefix", func(c *Config) { c.DetectLocalMode = nodeconfig.LocalModeInterfaceNamePrefix },
			[]string{"detectLocal.interfaceNamePrefix (--pod-interface-name-prefix) must not be empty"}},
		{"bad local mode", func(c *Config) { c.DetectLocalMode = "PodCIDR" }, []string{`detectLocalMode (--detect-local-mode): "PodCIDR" must be one of`}},
		{"dual-stack cluster CIDRs", func(c *Config) { c.ClusterCIDRs = prefixes("10.0.0.0/8", "fd00::/48") }, nil},
		{"two IPv4 cluster CIDRs (svcproxy: matched through an ipset)", func(c *Config) { c.ClusterCIDRs = prefixes("10.0.0.0/8", "192.168.0.0/16") }, nil},
		{"three cluster CIDRs", func(c *Config) { c.ClusterCIDRs = prefixes("10.0.0.0/8", "fd00::/48", "192.168.0.0/16") }, nil},
		{"duplicate cluster CIDR", func(c *Config) { c.ClusterCIDRs = prefixes("10.0.0.0/8", "10.0.0.0/8") },
			[]string{"clusterCIDR (--cluster-cidr): 10.0.0.0/8 is listed twice"}},
		{"pod egress without cluster CIDR", func(c *Config) { c.MasqueradePodEgress = true },
			[]string{"--masquerade-pod-egress needs the pod network: clusterCIDR (--cluster-cidr) must list at least one CIDR"}},
		{"pod egress with cluster CIDRs", func(c *Config) {
			c.MasqueradePodEgress, c.ClusterCIDRs, c.NoMasqueradeCIDRs = true, prefixes("10.0.0.0/16", "10.1.0.0/16"), prefixes("192.168.0.0/16")
		}, nil},
		{"nodeport primary", func(c *Config) { c.NodePortAddresses = []string{"primary"} }, nil},
		{"nodeport CIDRs", func(c *Config) { c.NodePortAddresses = []string{"10.0.0.0/8", "fd00::/64"} }, nil},
		{"nodeport primary and CIDR", func(c *Config) { c.NodePortAddresses = []string{"primary", "10.0.0.0/8"} },
			[]string{`nodePortAddresses (--nodeport-addresses): can't use both "primary" and CIDRs`}},
		{"nodeport bad CIDR", func(c *Config) { c.NodePortAddresses = []string{"10.0.0.0/8", "10.1.2.3"} },
			[]string{`nodePortAddresses (--nodeport-addresses)[1]: "10.1.2.3": invalid CIDR`}},
		{"healthz disabled", func(c *Config) { c.HealthzBindAddress = ""; c.MetricsBindAddress = "" }, nil},
		{"healthz no port", func(c *Config) { c.HealthzBindAddress = "0.0.0.0" }, []string{`healthzBindAddress (--healthz-bind-address): "0.0.0.0" must be IP:port`}},
		{"metrics host name", func(c *Config) { c.MetricsBindAddress = "localhost:10249" }, []string{`"localhost" is not an IP address`}},
		{"metrics port", func(c *Config) { c.MetricsBindAddress = "127.0.0.1:0" }, []string{`"0" is not a valid port`}},
		{"bind address", func(c *Config) { c.BindAddress = "node1" }, []string{`bindAddress (--bind-address): "node1" is not an IP address`}},
		{"burst", func(c *Config) { c.Burst = -1 }, []string{"clientConnection.burst (--kube-api-burst): -1 must not be negative"}},
		{"hidden metrics version", func(c *Config) { c.ShowHiddenMetricsForVersion = "v1.35" }, []string{"must be of the form <major>.<minor>"}},
		{"oom", func(c *Config) { c.OOMScoreAdj = -1001 }, []string{"oomScoreAdj (--oom-score-adj): -1001 is out of range -1000..1000"}},
		{"conntrack", func(c *Config) { c.Conntrack.Min = -1; c.Conntrack.UDPTimeout = -time.Second },
			[]string{"conntrack.min (--conntrack-min): -1 must not be negative", "conntrack.udpTimeout (--conntrack-udp-timeout): -1s must not be negative"}},
		{"several at once", func(c *Config) { c.MasqueradeBit = 32; c.Mode = "ipvs" },
			[]string{"32 is out of range", `"ipvs" is not supported`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Defaults()
			tc.mutate(&c)
			err := c.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if got := len(strings.Split(err.Error(), "\n")); got != len(tc.want) {
				t.Errorf("%d errors, want %d: %v", got, len(tc.want), err)
			}
		})
	}
}

func TestFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--cluster-cidr=10.0.0.0/33"}, `clusterCIDR "10.0.0.0/33": invalid CIDR`},
		{[]string{"--no-masquerade-cidrs=10.0.0.0/8,bogus"}, `"bogus": invalid CIDR`},
		{[]string{"--no-such-flag"}, "no-such-flag"},
		{[]string{"--nftables-sync-period=1s"}, "nftables-sync-period"}, // not a kube-proxy flag either
		{[]string{"--iptables-masquerade-bit=x"}, "iptables-masquerade-bit"},
		{[]string{"--feature-gates=Foo"}, "missing bool value for Foo"},
		{[]string{"--hostname-override=  "}, "--hostname-override: empty value is invalid"},
	} {
		_, _, err := parse(t, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want one containing %q", tc.args, err, tc.want)
		}
	}

	o, _, err := parse(t, "--iptables-masquerade-bit=40", "--proxy-mode=ipvs")
	if err != nil {
		t.Fatal(err)
	}
	err = o.Validate()
	for _, w := range []string{"--iptables-masquerade-bit): 40 is out of range 0..31", `"ipvs" is not supported by svcproxy (iptables mode only)`} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("Validate = %v, want it to contain %q", err, w)
		}
	}
}

func TestIgnoredFlags(t *testing.T) {
	o, _ := mustParse(t,
		"--ipvs-scheduler=rr", "--ipvs-strict-arp", "--ipvs-sync-period=5s", "--ipvs-exclude-cidrs=10.0.0.0/8",
		"--profiling", "--feature-gates=Foo=true,Bar=false",
	)
	want := []string{
		"flag --ipvs-sync-period is accepted for kube-proxy compatibility and ignored",
		"flag --ipvs-scheduler is accepted for kube-proxy compatibility and ignored",
		"flag --ipvs-exclude-cidrs is accepted for kube-proxy compatibility and ignored",
		"flag --ipvs-strict-arp is accepted for kube-proxy compatibility and ignored",
		"flag --profiling is accepted for kube-proxy compatibility and ignored",
		"feature gates are accepted for kube-proxy compatibility and ignored: Bar=false,Foo=true",
	}
	if !reflect.DeepEqual(o.Warnings, want) {
		t.Errorf("warnings:\n got %q\nwant %q", o.Warnings, want)
	}
}

// --init-only, --oom-score-adj and the logging flags are implemented, not
// ignored: they set Options and Config, with no warning.
func TestProcessFlags(t *testing.T) {
	o, _ := mustParse(t, "--init-only", "--oom-score-adj=-500", "--logging-format=json", "--log-flush-frequency=10s", "-v=3", "--vmodule=proxier*=5")
	if len(o.Warnings) != 0 {
		t.Errorf("warnings: %q", o.Warnings)
	}
	if !o.InitOnly || o.Config.OOMScoreAdj != -500 {
		t.Errorf("InitOnly %v, OOMScoreAdj %d; want true, -500", o.InitOnly, o.Config.OOMScoreAdj)
	}
	l := o.Logging
	if l.Format != "json" || l.FlushFrequency.Duration.Duration != 10*time.Second || l.Verbosity != 3 ||
		logsapi.VModuleConfigurationPflag(&l.VModule).String() != "proxier*=5" {
		t.Errorf("logging = %+v", l)
	}
	d, _ := mustParse(t)
	if d.InitOnly || d.Config.OOMScoreAdj != -999 || d.Logging.Format != "text" || d.Logging.FlushFrequency.Duration.Duration != 5*time.Second {
		t.Errorf("defaults: InitOnly %v, OOMScoreAdj %d, logging %+v; want false, -999 (kube-proxy's), text every 5s", d.InitOnly, d.Config.OOMScoreAdj, d.Logging)
	}
	if _, _, err := parse(t, "--oom-score-adj=lots"); err == nil || !strings.Contains(err.Error(), "oom-score-adj") {
		t.Errorf("--oom-score-adj=lots: %v, want an error naming the flag", err)
	}
	if o, _, err := parse(t, "--oom-score-adj=1001"); err != nil || o.Validate() == nil ||
		!strings.Contains(o.Validate().Error(), "oomScoreAdj (--oom-score-adj): 1001 is out of range") {
		t.Errorf("--oom-score-adj=1001: want Validate to name the field and flag")
	}
}

// --write-config-to writes the logging settings too; --config reads them
// back.
func TestLoggingRoundTrip(t *testing.T) {
	o, _ := mustParse(t, "--logging-format=json", "-v=3", "--log-flush-frequency=2s")
	p := filepath.Join(t.TempDir(), "config.yaml")
	if err := o.WriteConfigTo(p); err != nil {
		t.Fatal(err)
	}
	back, _ := mustParse(t, "--config="+p)
	if l := back.Logging; l.Format != "json" || l.Verbosity != 3 || l.FlushFrequency.Duration.Duration != 2*time.Second {
		data, _ := os.ReadFile(p)
		t.Errorf("logging read back %+v; file:\n%s", l, data)
	}
}

// A bad logging setting is refused by ApplyLogging (before anything is
// applied), naming the file field and the flag.
func TestApplyLoggingErrorsNameTheFlag(t *testing.T) {
	o, _, err := parse(t, "--logging-format=xml")
	if err != nil {
		t.Fatal(err)
	}
	err = o.ApplyLogging()
	if err == nil || !strings.Contains(err.Error(), "logging.format (--logging-format)") || !strings.Contains(err.Error(), `"xml"`) {
		t.Errorf("ApplyLogging = %v, want an error naming logging.format and --logging-format", err)
	}
}

func TestFlagForms(t *testing.T) {
	o, _ := mustParse(t, "--hostname_override=n1", "--cleanup", "--write-config-to=/tmp/x", "--nodeport-addresses=10.0.0.0/8,192.168.0.0/16",
		"--detect-local-mode=InterfaceNamePrefix", "--pod-interface-name-prefix=veth", "--iptables-localhost-nodeports=false", "--iptables-min-sync-period=0")
	c := o.Config
	if c.HostnameOverride != "n1" || !o.CleanupAndExit || o.WriteConfigFile != "/tmp/x" ||
		!reflect.DeepEqual(c.NodePortAddresses, []string{"10.0.0.0/8", "192.168.0.0/16"}) ||
		c.DetectLocal.InterfaceNamePrefix != "veth" || c.LocalhostNodePorts || c.MinSyncPeriod != 0 {
		t.Errorf("got %+v", o)
	}
}

func TestDeprecatedPortFlags(t *testing.T) {
	for _, tc := range []struct {
		args             []string
		healthz, metrics string
	}{
		{nil, "0.0.0.0:10256", "127.0.0.1:10249"},
		{[]string{"--healthz-port=0", "--metrics-port=0"}, "", ""},
		{[]string{"--healthz-bind-address=10.0.0.1", "--healthz-port=1234"}, "10.0.0.1:1234", "127.0.0.1:10249"},
		{[]string{"--metrics-bind-address=::1"}, "0.0.0.0:10256", "[::1]:10249"},
		{[]string{"--healthz-bind-address=", "--metrics-bind-address="}, "", ""},
		{[]string{"--healthz-bind-address=10.0.0.1:9999", "--healthz-port=1234"}, "10.0.0.1:9999", "127.0.0.1:10249"},
	} {
		o, _ := mustParse(t, tc.args...)
		if o.Config.HealthzBindAddress != tc.healthz || o.Config.MetricsBindAddress != tc.metrics {
			t.Errorf("%q: healthz %q metrics %q, want %q %q", tc.args, o.Config.HealthzBindAddress, o.Config.MetricsBindAddress, tc.healthz, tc.metrics)
		}
	}
}

func TestWriteConfigRoundTrip(t *testing.T) {
	o, _ := mustParse(t, "--cluster-cidr=10.244.0.0/16,fd00:10::/56", "--masquerade-all", "--iptables-masquerade-bit=0",
		"--iptables-sync-period=1m", "--iptables-min-sync-period=0", "--nodeport-addresses=primary", "--hostname-override=n1",
		"--kubeconfig=/k", "--iptables-localhost-nodeports=false", "--masquerade-pod-egress", "--iptables-backend=nft")
	p := filepath.Join(t.TempDir(), "out.yaml")
	if err := o.WriteConfigTo(p); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(p)
	if !strings.HasPrefix(string(data), "# svcproxy flags not expressible in this file") ||
		!strings.Contains(string(data), "--iptables-backend=nft --masquerade-pod-egress=true") {
		t.Errorf("missing flag-only comment:\n%s", data)
	}

	got, warnings, err := LoadConfigFile(p)
	if err != nil {
		t.Fatalf("reloading written config: %v\n%s", err, data)
	}
	if len(warnings) != 0 {
		t.Errorf("warnings: %q", warnings)
	}
	want := o.Config
	want.IPTablesBackend, want.MasqueradePodEgress = "auto", false // flag-only
	// MinSyncPeriod 0 does not survive a file: kube-proxy's file format reads
	// 0 as "default" (1s). Same for the masquerade bit? No: it is a pointer.
	want.MinSyncPeriod = time.Second
	if !reflect.DeepEqual(got, want) {
		t.Errorf("round trip:\n got %+v\nwant %+v\nfile:\n%s", got, want, data)
	}

	// Defaults write without the comment and reload to the defaults.
	d := NewOptions()
	if err := d.WriteConfigTo(p); err != nil {
		t.Fatal(err)
	}
	data, _ = os.ReadFile(p)
	if strings.HasPrefix(string(data), "#") {
		t.Errorf("unexpected comment for defaults:\n%s", data)
	}
	if got, _, err := LoadConfigFile(p); err != nil || !reflect.DeepEqual(got, Defaults()) {
		t.Errorf("defaults round trip: %v\n got %+v", err, got)
	}
}

func TestAddKlogFlags(t *testing.T) {
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	AddKlogFlags(fs)
	AddKlogFlags(fs) // idempotent
	v := fs.Lookup("v")
	if v == nil || v.Shorthand != "v" || fs.Lookup("vmodule") == nil {
		t.Fatalf("klog flags not registered: v=%+v", v)
	}
	if fs.Lookup("logtostderr") != nil {
		t.Errorf("klog flags kube-proxy no longer has were registered")
	}
	old := v.Value.String()
	t.Cleanup(func() { _ = v.Value.Set(old) })
	if err := fs.Parse([]string{"-v=4"}); err != nil || v.Value.String() != "4" {
		t.Errorf("-v=4: %v, value %s", err, v.Value.String())
	}
}

// The rule layout is --rule-layout, or the file's svcproxy.ruleLayout (the
// file wins, as for kube-proxy's own fields); a bad value names both.
func TestRuleLayout(t *testing.T) {
	o, _ := mustParse(t, "--rule-layout=kube-proxy")
	if o.Config.RuleLayout != "kube-proxy" {
		t.Errorf("--rule-layout: %q", o.Config.RuleLayout)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "config.conf")
	if err := os.WriteFile(file, []byte("apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nsvcproxy:\n  ruleLayout: kube-proxy\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	o, _ = mustParse(t, "--config="+file, "--rule-layout=compact")
	if o.Config.RuleLayout != "kube-proxy" {
		t.Errorf("file svcproxy.ruleLayout: %q", o.Config.RuleLayout)
	}
	// Written back, it round-trips.
	out := filepath.Join(dir, "out.yaml")
	if err := o.WriteConfigTo(out); err != nil {
		t.Fatal(err)
	}
	if cfg, _, err := LoadConfigFile(out); err != nil || cfg.RuleLayout != "kube-proxy" {
		t.Errorf("round trip: %q, %v", cfg.RuleLayout, err)
	}
	if err := os.WriteFile(file, []byte("apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nsvcproxy:\n  ruleLayot: kube-proxy\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadConfigFile(file); err == nil || !strings.Contains(err.Error(), "svcproxy") {
		t.Errorf("unknown svcproxy field: %v", err)
	}
	o, _, err := parse(t, "--rule-layout=tiny")
	if err == nil {
		err = o.Validate()
	}
	if err == nil || !strings.Contains(err.Error(), `svcproxy.ruleLayout (--rule-layout): "tiny" is not a rule layout`) {
		t.Errorf("bad layout: %v", err)
	}
}
