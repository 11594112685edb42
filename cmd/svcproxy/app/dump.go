package app

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	v1 "k8s.io/api/core/v1"

	"github.com/svcproxy/svcproxy/iptables"
	"github.com/svcproxy/svcproxy/proxier/model"
	"github.com/svcproxy/svcproxy/proxier/nodeconfig"
	"github.com/svcproxy/svcproxy/proxier/objfile"
	"github.com/svcproxy/svcproxy/proxier/rules"
)

type dumpOptions struct {
	files              []string
	nodeName           string
	nodeIPs            []string
	clusterCIDRs       []string
	masqueradeAll      bool
	masqueradeBit      int
	ipFamily           string
	jumps              bool
	randomFully        bool
	localhostNodePorts bool
	nodePortAddresses  []string
	detectLocalMode    string
	bridgeInterface    string
	ifacePrefix        string
	podEgress          bool
	noMasqCIDRs        []string
	ruleLayout         string
	sorted             bool
	nfacct             bool
}

func newDumpCommand() *cobra.Command {
	o := &dumpOptions{}
	cmd := &cobra.Command{
		Use:   "dump -f PATH",
		Short: "Print the iptables-restore input a node would get for the given manifests",
		Long: `Reads Services, EndpointSlices and Nodes (YAML or JSON; single objects, Lists or
multi-document files; a file, a directory or - for stdin) and prints the
iptables-restore text svcproxy would apply on the node named by --node-name.
Nothing is applied. Malformed input is reported naming file, object and field,
with exit code 2 and nothing on stdout.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out, err := o.run(cmd)
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(out)
			return err
		},
	}
	f := cmd.Flags()
	f.StringArrayVarP(&o.files, "filename", "f", nil, "manifest file, directory or - (repeatable)")
	f.BoolVar(&o.jumps, "jumps", false, "also print the jumps from built-in chains (for applying to an empty ruleset)")
	f.BoolVar(&o.sorted, "sorted", false, "print the chains sorted by name, declarations first, for reading (the same rules; the compact layout's own order restores faster on iptables-nft)")
	o.addNodeFlags(f)
	_ = cmd.MarkFlagRequired("filename")
	return cmd
}

// addNodeFlags registers the flags that describe the node rendered for
// (shared by dump and explain).
func (o *dumpOptions) addNodeFlags(f *pflag.FlagSet) {
	f.StringVar(&o.nodeName, "node-name", "", "the node to render for (its Node object, if given, supplies IPs, pod CIDRs and zone)")
	f.StringSliceVar(&o.nodeIPs, "node-ip", nil, "the node's IP addresses (default: the Node object's InternalIPs)")
	f.StringSliceVar(&o.clusterCIDRs, "cluster-cidr", nil, "pod network CIDRs; traffic from outside them to a cluster IP is masqueraded")
	f.BoolVar(&o.masqueradeAll, "masquerade-all", false, "masquerade all traffic to cluster IPs")
	f.IntVar(&o.masqueradeBit, "masquerade-bit", 14, "fwmark bit used to mark packets for masquerade (0-31)")
	f.StringVar(&o.ipFamily, "ip-family", "ipv4", "ipv4 or ipv6")
	f.BoolVar(&o.randomFully, "random-fully", true, "use MASQUERADE --random-fully")
	f.BoolVar(&o.localhostNodePorts, "localhost-nodeports", true, "allow NodePorts on 127.0.0.1 (IPv4)")
	f.BoolVar(&o.nfacct, "nfacct", false, "render for a node that has kube-proxy's nfacct counters (svcproxy run makes them when the kernel has nfnetlink_acct): the rules then count INVALID drops and 127.0.0.1 NodePort packets; applying such text needs the counters")
	f.StringSliceVar(&o.nodePortAddresses, "nodeport-addresses", nil, "node IPs that accept NodePorts (default: all local addresses)")
	f.StringVar(&o.detectLocalMode, "detect-local-mode", nodeconfig.LocalModeClusterCIDR, "how pod traffic is recognised: ClusterCIDR, NodeCIDR (the Node object's pod CIDR), BridgeInterface or InterfaceNamePrefix")
	f.StringVar(&o.bridgeInterface, "pod-bridge-interface", "", "the pod bridge, for --detect-local-mode=BridgeInterface")
	f.StringVar(&o.ifacePrefix, "pod-interface-name-prefix", "", "the pod interface name prefix, for --detect-local-mode=InterfaceNamePrefix")
	f.BoolVar(&o.podEgress, "masquerade-pod-egress", false, "masquerade pod traffic to destinations outside --cluster-cidr and --no-masquerade-cidrs")
	f.StringSliceVar(&o.noMasqCIDRs, "no-masquerade-cidrs", nil, "destinations --masquerade-pod-egress never masquerades")
	f.StringVar(&o.ruleLayout, "rule-layout", "compact", "compact or kube-proxy (kube-proxy's exact chains); see svcproxy --help")
}

func (o *dumpOptions) run(cmd *cobra.Command) ([]byte, error) {
	cfg, rendered, err := o.render(cmd)
	if err != nil {
		return nil, err
	}
	if o.jumps {
		rendered = rules.WithJumps(rendered, rules.JumpsFor(cfg))
	}
	if o.sorted {
		rendered = rules.Sorted(rendered)
	}
	return rendered, nil
}

// render loads the manifests and renders the full restore text (without
// the jumps from built-in chains) for the node the flags describe.
func (o *dumpOptions) render(cmd *cobra.Command) (*rules.NodeConfig, []byte, error) {
	objs := &objfile.Objects{}
	for _, f := range o.files {
		got, err := objfile.Load(f, cmd.InOrStdin())
		if err != nil {
			return nil, nil, badInput(err)
		}
		objs.Services = append(objs.Services, got.Services...)
		objs.EndpointSlices = append(objs.EndpointSlices, got.EndpointSlices...)
		objs.Nodes = append(objs.Nodes, got.Nodes...)
	}
	cfg, err := o.nodeConfig(objs.Nodes)
	if err != nil {
		return nil, nil, badInput(err)
	}
	snap, err := model.BuildSnapshot(objs.Services, objs.EndpointSlices, cfg.Family)
	if err != nil {
		return nil, nil, badInput(err)
	}
	return cfg, rules.Render(snap, cfg, rules.RenderOptions{Full: true}).Data, nil
}

// dumpFlag spells a node setting as dump's flag.
func dumpFlag(s nodeconfig.Setting) string {
	switch s {
	case nodeconfig.SettingMasqueradeBit:
		return "--masquerade-bit"
	case nodeconfig.SettingDetectLocalMode:
		return "--detect-local-mode"
	case nodeconfig.SettingBridgeInterface:
		return "--pod-bridge-interface"
	case nodeconfig.SettingInterfaceNamePrefix:
		return "--pod-interface-name-prefix"
	case nodeconfig.SettingClusterCIDRs:
		return "--cluster-cidr"
	case nodeconfig.SettingMasqueradePodEgress:
		return "--masquerade-pod-egress"
	case nodeconfig.SettingRuleLayout:
		return "--rule-layout"
	}
	return fmt.Sprintf("setting %d", s)
}

// nodeConfig builds the node configuration the flags (and the Node object
// named by --node-name, if among the manifests) describe, with the
// daemon's builder, so a dump shows exactly what a node would get.
func (o *dumpOptions) nodeConfig(nodes []*v1.Node) (*rules.NodeConfig, error) {
	var errs []error
	family := v1.IPv4Protocol
	switch o.ipFamily {
	case "ipv4", "IPv4":
	case "ipv6", "IPv6":
		family = v1.IPv6Protocol
	default:
		errs = append(errs, fmt.Errorf("--ip-family: %q is not ipv4 or ipv6", o.ipFamily))
	}
	node := findNode(nodes, o.nodeName)
	nodeIPs, err := parseAddrs("--node-ip", o.nodeIPs)
	errs = append(errs, err)
	cidrs, err := parsePrefixes("--cluster-cidr", o.clusterCIDRs)
	errs = append(errs, err)
	noMasq, err := parsePrefixes("--no-masquerade-cidrs", o.noMasqCIDRs)
	errs = append(errs, err)
	npa, err := parseAddrs("--nodeport-addresses", o.nodePortAddresses)
	errs = append(errs, err)
	settings := nodeconfig.Settings{
		MasqueradeAll:       o.masqueradeAll,
		MasqueradeBit:       int32(o.masqueradeBit),
		LocalhostNodePorts:  o.localhostNodePorts,
		DetectLocalMode:     o.detectLocalMode,
		BridgeInterface:     o.bridgeInterface,
		InterfaceNamePrefix: o.ifacePrefix,
		ClusterCIDRs:        cidrs,
		MasqueradePodEgress: o.podEgress,
		NoMasqueradeCIDRs:   noMasq,
		RuleLayout:          o.ruleLayout,
	}
	if err := settings.Validate(dumpFlag); err != nil {
		errs = append(errs, err)
	} else if o.podEgress && len(nodeconfig.PrefixesOf(cidrs, family)) == 0 {
		errs = append(errs, errors.New("--masquerade-pod-egress needs --cluster-cidr (of the --ip-family)"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	b := &nodeconfig.Builder{Settings: settings, Family: family, NodeName: o.nodeName, RandomFully: o.randomFully}
	cfg := b.Build(node)
	if len(nodeIPs) > 0 {
		cfg.NodeIPs = nodeconfig.OfFamily(nodeIPs, family)
	}
	if o.nfacct {
		cfg.NFAcct = iptables.KubeProxyNFAcctCounters()
	}
	// dump's --nodeport-addresses lists the addresses themselves (there is
	// no host to match CIDRs against). As kube-proxy, each family takes its
	// own; none of the family means every local address.
	if own := nodeconfig.OfFamily(npa, family); len(own) > 0 {
		cfg.NodePortAddresses = own
	} else {
		cfg.NodePortAddresses = nil
	}
	return cfg, nil
}

func findNode(nodes []*v1.Node, name string) *v1.Node {
	for _, n := range nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

func parseAddrs(flag string, raw []string) ([]netip.Addr, error) {
	var out []netip.Addr
	var errs []error
	for _, s := range raw {
		a, err := netip.ParseAddr(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %q is not an IP address", flag, s))
			continue
		}
		out = append(out, a)
	}
	return out, errors.Join(errs...)
}

func parsePrefixes(flag string, raw []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	var errs []error
	for _, s := range raw {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %q is not a CIDR", flag, s))
			continue
		}
		out = append(out, p.Masked())
	}
	return out, errors.Join(errs...)
}
