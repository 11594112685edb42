// Package lab builds a disposable multi-node "cluster network" out of Linux
// network namespaces, for testing svcproxy (and kube-proxy, for comparison)
// without touching the host's network configuration.
//
// This package is the single source of truth for the topology; hack/lab.sh and
// hack/controlplane.sh are thin wrappers around hack/lab/cmd/lab.
//
// Address plan (TEST-NET ranges and 2001:db8::/32 only, never routed outside
// the lab); the lab is dual-stack unless Options.IPv4Only (or the kernel has
// no IPv6):
//
//	192.0.2.0/24      2001:db8::/64      node network, bridge br0 inside namespace <prefix>-net
//	  192.0.2.1         2001:db8::1        <prefix>-sink: default gateway of nodes/client/cp, forwarding OFF
//	  192.0.2.10        2001:db8::10       <prefix>-cp: etcd on 127.0.0.1:2379, kube-apiserver on 192.0.2.10:6443
//	  192.0.2.1i        2001:db8::1i       <prefix>-node<i> (i = 1..4)
//	  192.0.2.100       2001:db8::100      <prefix>-client: an "outside" client
//	198.51.100.0/24   2001:db8:1::/48    pod network; node i owns 198.51.100.(64*(i-1))/26 and
//	                                     2001:db8:1:i::/64, its bridge cbr0 has the .1 / ::1,
//	                                     pods <prefix>-n<i>-p<j> get .2, .3, ... / ::2, ::3, ...
//	                                     (IPv6: ::(1+j) written in decimal digits)
//	203.0.113.0/25    2001:db8:5::/108   Service cluster IP ranges (203.0.113.1 = kubernetes;
//	                                     the API server is dual-stack, IPv4 first)
//	203.0.113.128/26                     reserved for external / load-balancer IPs
//
// No namespace of the lab has an interface into the root namespace, so nothing
// in the lab can reach the host or beyond.
package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Address plan constants.
const (
	NodeNetwork      = "192.0.2.0/24"
	PodNetwork       = "198.51.100.0/24"
	ServiceCIDR      = "203.0.113.0/25"
	KubernetesSvcIP  = "203.0.113.1"
	ExternalIPRange  = "203.0.113.128/26"
	SinkIP           = "192.0.2.1"
	ControlPlaneIP   = "192.0.2.10"
	ClientIP         = "192.0.2.100"
	APIServerPort    = 6443
	NodeNetworkBits  = 24
	PodCIDRBits      = 26
	MaxNodes         = 4
	MaxPodsPerNode   = 60
	DefaultPrefix    = "svp"
	DefaultNodes     = 2
	DefaultPodsPerNd = 2
)

// The IPv6 half of the address plan (all in 2001:db8::/32, the
// documentation prefix).
const (
	NodeNetwork6     = "2001:db8::/64"
	PodNetwork6      = "2001:db8:1::/48"
	ServiceCIDR6     = "2001:db8:5::/108" // 2^20 addresses: room for 10,000+ Services
	SinkIP6          = "2001:db8::1"
	ControlPlaneIP6  = "2001:db8::10"
	ClientIP6        = "2001:db8::100"
	NodeNetworkBits6 = 64
	PodCIDRBits6     = 64
)

// Options configures Up.
type Options struct {
	// Prefix of every namespace name (default "svp"). Must match [a-z][a-z0-9]{0,11}.
	Prefix string
	// Nodes is the number of node namespaces (default 2, max 4).
	Nodes int
	// PodsPerNode is the number of pod namespaces per node (default 2, max 60).
	// Use -1 for zero pods.
	PodsPerNode int
	// StateDir holds lab.json, control-plane files and logs
	// (default $SVCPROXY_STATE_DIR or /tmp/svcproxy-lab-<prefix>).
	StateDir string
	// IPv4Only leaves out the IPv6 addresses, routes and sysctls. By default
	// the lab is dual-stack when the kernel has IPv6 (Lab.IPv6 says).
	IPv4Only bool
	// Logf, if set, receives progress messages.
	Logf func(format string, args ...any) `json:"-"`
}

// Host is one namespace attached to the node network.
type Host struct {
	NS  string `json:"ns"`            // network namespace name (ip netns)
	IP  string `json:"ip"`            // address on the node network (192.0.2.0/24)
	IP6 string `json:"ip6,omitempty"` // IPv6 address on the node network (2001:db8::/64); "" if IPv4 only
}

// Node is a node namespace with its pod bridge and pods.
type Node struct {
	Host
	Index    int    `json:"index"`    // 1-based
	Name     string `json:"name"`     // Kubernetes node name, "node<i>"
	PodCIDR  string `json:"podCIDR"`  // e.g. 198.51.100.0/26
	BridgeIP string `json:"bridgeIP"` // cbr0 address = pods' gateway, e.g. 198.51.100.1
	// PodCIDR6 and BridgeIP6 are the IPv6 ones ("" if IPv4 only), e.g.
	// 2001:db8:1:1::/64 and 2001:db8:1:1::1.
	PodCIDR6  string `json:"podCIDR6,omitempty"`
	BridgeIP6 string `json:"bridgeIP6,omitempty"`
	Pods      []Pod  `json:"pods"`
}

// Pod is a pod namespace attached to its node's cbr0.
type Pod struct {
	NS       string `json:"ns"`            // e.g. svp-n1-p1
	Name     string `json:"name"`          // Kubernetes-ish name, e.g. n1-p1
	IP       string `json:"ip"`            // e.g. 198.51.100.2
	IP6      string `json:"ip6,omitempty"` // e.g. 2001:db8:1:1::2 ("" if IPv4 only)
	Node     string `json:"node"`          // node name, e.g. node1
	NodeNS   string `json:"nodeNS"`        // node namespace, e.g. svp-node1
	Index    int    `json:"index"`         // 1-based within the node
	HostVeth string `json:"hostVeth"`      // veth name on the node side (in cbr0)
}

// Lab is a running topology.
type Lab struct {
	Prefix   string `json:"prefix"`
	StateDir string `json:"stateDir"`
	NetNS    string `json:"netNS"` // namespace holding br0 (pure L2 switch, no IP)
	Sink     Host   `json:"sink"`
	CP       Host   `json:"controlPlane"`
	Client   Host   `json:"client"`
	Nodes    []Node `json:"nodes"`
	// BridgeNetfilter reports whether net.bridge.bridge-nf-call-iptables=1
	// could be set inside the node namespaces.
	BridgeNetfilter bool `json:"bridgeNetfilter"`
	// IPv6 reports whether the lab has its IPv6 addresses (dual-stack).
	IPv6 bool `json:"ipv6"`
	// BridgeNetfilter6 reports whether net.bridge.bridge-nf-call-ip6tables=1
	// could be set inside the node namespaces (false if IPv4 only).
	BridgeNetfilter6 bool `json:"bridgeNetfilter6"`

	logf func(format string, args ...any)
}

var prefixRE = regexp.MustCompile(`^[a-z][a-z0-9]{0,11}$`)

func (o *Options) setDefaults() error {
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if !prefixRE.MatchString(o.Prefix) {
		return fmt.Errorf("lab: bad prefix %q (want [a-z][a-z0-9]{0,11})", o.Prefix)
	}
	if o.Nodes == 0 {
		o.Nodes = DefaultNodes
	}
	if o.Nodes < 1 || o.Nodes > MaxNodes {
		return fmt.Errorf("lab: nodes must be 1..%d, got %d", MaxNodes, o.Nodes)
	}
	switch {
	case o.PodsPerNode == 0:
		o.PodsPerNode = DefaultPodsPerNd
	case o.PodsPerNode < 0:
		o.PodsPerNode = 0
	case o.PodsPerNode > MaxPodsPerNode:
		return fmt.Errorf("lab: pods per node must be <= %d, got %d", MaxPodsPerNode, o.PodsPerNode)
	}
	if o.StateDir == "" {
		o.StateDir = DefaultStateDir(o.Prefix)
	}
	return nil
}

// DefaultStateDir is $SVCPROXY_STATE_DIR, else /tmp/svcproxy-lab-<prefix>.
func DefaultStateDir(prefix string) string {
	if d := os.Getenv("SVCPROXY_STATE_DIR"); d != "" {
		return d
	}
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return filepath.Join(os.TempDir(), "svcproxy-lab-"+prefix)
}

// Plan computes the topology for the options without creating anything.
func Plan(o Options) (*Lab, error) {
	if err := o.setDefaults(); err != nil {
		return nil, err
	}
	p := o.Prefix
	v6 := !o.IPv4Only
	// ip6 formats an IPv6 address of the plan ("" in an IPv4-only lab).
	ip6 := func(format string, args ...any) string {
		if !v6 {
			return ""
		}
		return fmt.Sprintf(format, args...)
	}
	l := &Lab{
		Prefix:   p,
		StateDir: o.StateDir,
		NetNS:    p + "-net",
		Sink:     Host{NS: p + "-sink", IP: SinkIP, IP6: ip6(SinkIP6)},
		CP:       Host{NS: p + "-cp", IP: ControlPlaneIP, IP6: ip6(ControlPlaneIP6)},
		Client:   Host{NS: p + "-client", IP: ClientIP, IP6: ip6(ClientIP6)},
		IPv6:     v6,
		logf:     o.Logf,
	}
	for i := 1; i <= o.Nodes; i++ {
		base := 64 * (i - 1)
		n := Node{
			Host:      Host{NS: fmt.Sprintf("%s-node%d", p, i), IP: fmt.Sprintf("192.0.2.%d", 10+i), IP6: ip6("2001:db8::1%d", i)},
			Index:     i,
			Name:      fmt.Sprintf("node%d", i),
			PodCIDR:   fmt.Sprintf("198.51.100.%d/%d", base, PodCIDRBits),
			BridgeIP:  fmt.Sprintf("198.51.100.%d", base+1),
			PodCIDR6:  ip6("2001:db8:1:%d::/%d", i, PodCIDRBits6),
			BridgeIP6: ip6("2001:db8:1:%d::1", i),
		}
		for j := 1; j <= o.PodsPerNode; j++ {
			n.Pods = append(n.Pods, Pod{
				NS:       fmt.Sprintf("%s-n%d-p%d", p, i, j),
				Name:     fmt.Sprintf("n%d-p%d", i, j),
				IP:       fmt.Sprintf("198.51.100.%d", base+1+j),
				IP6:      ip6("2001:db8:1:%d::%d", i, 1+j),
				Node:     n.Name,
				NodeNS:   n.NS,
				Index:    j,
				HostVeth: fmt.Sprintf("vp%d", j),
			})
		}
		l.Nodes = append(l.Nodes, n)
	}
	return l, nil
}

// kernelHasIPv6 reports whether the kernel has IPv6 (not booted with
// ipv6.disable=1, module present).
func kernelHasIPv6() bool {
	_, err := os.Stat("/proc/sys/net/ipv6")
	return err == nil
}

func (l *Lab) log(format string, args ...any) {
	if l.logf != nil {
		l.logf(format, args...)
	}
}

// SetLogf sets the progress logger (e.g. t.Logf).
func (l *Lab) SetLogf(f func(format string, args ...any)) { l.logf = f }

// ServiceCIDRs is the API server's --service-cluster-ip-range: ServiceCIDR,
// and ServiceCIDR6 after it in a dual-stack lab (so IPv4 stays the primary
// family: Services without ipFamilies get an IPv4 cluster IP, as before).
func (l *Lab) ServiceCIDRs() string {
	if l.IPv6 {
		return ServiceCIDR + "," + ServiceCIDR6
	}
	return ServiceCIDR
}

// Namespaces returns every namespace of the lab, infrastructure first.
func (l *Lab) Namespaces() []string {
	ns := []string{l.NetNS, l.Sink.NS, l.CP.NS, l.Client.NS}
	for _, n := range l.Nodes {
		ns = append(ns, n.NS)
	}
	for _, n := range l.Nodes {
		for _, p := range n.Pods {
			ns = append(ns, p.NS)
		}
	}
	return ns
}

// Pods returns all pods of all nodes.
func (l *Lab) Pods() []Pod {
	var out []Pod
	for _, n := range l.Nodes {
		out = append(out, n.Pods...)
	}
	return out
}

// Node returns node i (1-based).
func (l *Lab) Node(i int) *Node {
	if i < 1 || i > len(l.Nodes) {
		return nil
	}
	return &l.Nodes[i-1]
}

// Pod returns pod j (1-based) of node i (1-based).
func (l *Lab) Pod(i, j int) *Pod {
	n := l.Node(i)
	if n == nil || j < 1 || j > len(n.Pods) {
		return nil
	}
	return &n.Pods[j-1]
}

// Up creates the lab. Any previous lab with the same prefix is torn down first,
// so Up is safe to call repeatedly. On failure everything created is removed.
func Up(ctx context.Context, o Options) (*Lab, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	if !o.IPv4Only && !kernelHasIPv6() {
		o.IPv4Only = true
		if o.Logf != nil {
			o.Logf("note: the kernel has no IPv6 (/proc/sys/net/ipv6 missing): the lab is IPv4 only")
		}
	}
	l, err := Plan(o)
	if err != nil {
		return nil, err
	}
	StopControlPlane(l)
	if err := DownPrefix(l.Prefix); err != nil {
		return nil, fmt.Errorf("lab: cleaning previous lab: %w", err)
	}
	if err := os.MkdirAll(l.StateDir, 0o755); err != nil {
		return nil, err
	}
	start := time.Now()
	if err := l.create(ctx); err != nil {
		_ = l.Down()
		return nil, err
	}
	if err := l.save(); err != nil {
		_ = l.Down()
		return nil, err
	}
	l.log("lab %s up in %s: %d nodes, %d pods, IPv6 %v (bridge-nf-call-iptables in nodes: %v, -ip6tables: %v)",
		l.Prefix, time.Since(start).Round(time.Millisecond), len(l.Nodes), len(l.Pods()), l.IPv6, l.BridgeNetfilter, l.BridgeNetfilter6)
	return l, nil
}

// stateFile is the JSON description of a running lab.
func (l *Lab) stateFile() string { return filepath.Join(l.StateDir, "lab.json") }

func (l *Lab) save() error {
	b, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return err
	}
	tmp := l.stateFile() + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, l.stateFile())
}

// Load reads the description of a lab created by Up (e.g. by hack/lab.sh).
// stateDir "" means DefaultStateDir(prefix).
func Load(prefix, stateDir string) (*Lab, error) {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if stateDir == "" {
		stateDir = DefaultStateDir(prefix)
	}
	b, err := os.ReadFile(filepath.Join(stateDir, "lab.json"))
	if err != nil {
		return nil, fmt.Errorf("lab: no lab state for prefix %q (run hack/lab.sh up): %w", prefix, err)
	}
	var l Lab
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, fmt.Errorf("lab: parsing %s/lab.json: %w", stateDir, err)
	}
	if l.Prefix != prefix {
		return nil, fmt.Errorf("lab: %s/lab.json is for prefix %q, not %q", stateDir, l.Prefix, prefix)
	}
	return &l, nil
}

func (l *Lab) create(ctx context.Context) error {
	for _, ns := range l.Namespaces() {
		if _, err := run(ctx, nil, "ip", "netns", "add", ns); err != nil {
			return err
		}
	}

	// The L2 switch: br0 inside <prefix>-net, one veth per attached host.
	// Multicast snooping is off on the lab's bridges: IPv6 neighbour
	// discovery must never depend on which MLD reports a bridge has seen.
	attached := []Host{l.Sink, l.CP, l.Client}
	for _, n := range l.Nodes {
		attached = append(attached, n.Host)
	}
	var b batch
	b.add("link set lo up")
	b.add("link add br0 type bridge mcast_snooping 0")
	b.add("link set br0 up")
	for _, h := range attached {
		v := "v-" + strings.TrimPrefix(h.NS, l.Prefix+"-")
		b.add("link add %s type veth peer name eth0 netns %s", v, h.NS)
		b.add("link set %s master br0", v)
		b.add("link set %s up", v)
	}
	if err := b.run(ctx, l.NetNS); err != nil {
		return err
	}
	// br0 is a dumb switch: no filtering, no forwarding at L3.
	l.sysctls(ctx, l.NetNS, false, "net.bridge.bridge-nf-call-iptables=0", "net.bridge.bridge-nf-call-ip6tables=0", "net.ipv4.ip_forward=0")

	// Sink: the default gateway that does not forward anything.
	b = batch{}
	b.add("link set lo up")
	b.addrs("eth0", l.Sink.IP, NodeNetworkBits, l.Sink.IP6, NodeNetworkBits6)
	b.add("link set eth0 up")
	if err := b.run(ctx, l.Sink.NS); err != nil {
		return err
	}
	if err := l.sysctls(ctx, l.Sink.NS, true, l.forwarding(false)...); err != nil {
		return err
	}

	// Control plane and client: plain hosts with a default route to the sink.
	for _, h := range []Host{l.CP, l.Client} {
		b = batch{}
		b.add("link set lo up")
		b.addrs("eth0", h.IP, NodeNetworkBits, h.IP6, NodeNetworkBits6)
		b.add("link set eth0 up")
		b.defaultRoutes(SinkIP, l.Sink.IP6)
		if err := b.run(ctx, h.NS); err != nil {
			return err
		}
	}

	// Nodes with their pod bridge, pods and routes to the other nodes' pods.
	bnf, bnf6 := true, l.IPv6
	for _, n := range l.Nodes {
		b = batch{}
		b.add("link set lo up")
		b.addrs("eth0", n.IP, NodeNetworkBits, n.IP6, NodeNetworkBits6)
		b.add("link set eth0 up")
		b.defaultRoutes(SinkIP, l.Sink.IP6)
		b.add("link add cbr0 type bridge mcast_snooping 0")
		b.addrs("cbr0", n.BridgeIP, PodCIDRBits, n.BridgeIP6, PodCIDRBits6)
		b.add("link set cbr0 up")
		for _, p := range n.Pods {
			b.add("link add %s type veth peer name eth0 netns %s", p.HostVeth, p.NS)
			b.add("link set %s master cbr0", p.HostVeth)
			b.add("link set %s up", p.HostVeth)
			b.add("link set %s type bridge_slave hairpin on", p.HostVeth)
		}
		for _, o := range l.Nodes {
			if o.Index != n.Index {
				b.add("route add %s via %s dev eth0", o.PodCIDR, o.IP)
				if l.IPv6 {
					b.add("route add %s via %s dev eth0", o.PodCIDR6, o.IP6)
				}
			}
		}
		if err := b.run(ctx, n.NS); err != nil {
			return err
		}
		if err := l.sysctls(ctx, n.NS, true, l.forwarding(true)...); err != nil {
			return err
		}
		if err := l.sysctls(ctx, n.NS, false, "net.bridge.bridge-nf-call-iptables=1"); err != nil {
			bnf = false
			l.log("note: net.bridge.bridge-nf-call-iptables=1 not settable in %s: %v", n.NS, err)
		}
		if l.IPv6 {
			if err := l.sysctls(ctx, n.NS, false, "net.bridge.bridge-nf-call-ip6tables=1"); err != nil {
				bnf6 = false
				l.log("note: net.bridge.bridge-nf-call-ip6tables=1 not settable in %s: %v", n.NS, err)
			}
		}
		for _, p := range n.Pods {
			pb := batch{}
			pb.add("link set lo up")
			pb.addrs("eth0", p.IP, PodCIDRBits, p.IP6, PodCIDRBits6)
			pb.add("link set eth0 up")
			pb.defaultRoutes(n.BridgeIP, n.BridgeIP6)
			if err := pb.run(ctx, p.NS); err != nil {
				return err
			}
		}
	}
	l.BridgeNetfilter = bnf && len(l.Nodes) > 0
	l.BridgeNetfilter6 = bnf6 && len(l.Nodes) > 0
	return nil
}

// addrs adds ip/bits (and ip6/bits6 unless ip6 is "") to dev. IPv6
// addresses skip duplicate address detection, which would leave them
// unusable for a second or two after Up; the plan has no duplicates.
func (b *batch) addrs(dev, ip string, bits int, ip6 string, bits6 int) {
	b.add("addr add %s/%d dev %s", ip, bits, dev)
	if ip6 != "" {
		b.add("addr add %s/%d dev %s nodad", ip6, bits6, dev)
	}
}

// defaultRoutes routes everything to gw (and gw6 unless it is "") on eth0.
func (b *batch) defaultRoutes(gw, gw6 string) {
	b.add("route add default via %s dev eth0", gw)
	if gw6 != "" {
		b.add("route add default via %s dev eth0", gw6)
	}
}

// forwarding returns the sysctls that turn forwarding on or off (IPv6 too
// in a dual-stack lab).
func (l *Lab) forwarding(on bool) []string {
	v := "0"
	if on {
		v = "1"
	}
	kv := []string{"net.ipv4.ip_forward=" + v}
	if l.IPv6 {
		kv = append(kv, "net.ipv6.conf.all.forwarding="+v)
	}
	return kv
}

// sysctls sets sysctls inside ns. If mustSucceed is false, a failure is
// returned but nothing is logged.
func (l *Lab) sysctls(ctx context.Context, ns string, mustSucceed bool, kv ...string) error {
	argv := append([]string{"ip", "netns", "exec", ns, "sysctl", "-q", "-w"}, kv...)
	_, err := run(ctx, nil, argv...)
	if err != nil && mustSucceed {
		return err
	}
	return err
}

// batch accumulates `ip -batch` commands for one namespace.
type batch struct{ buf bytes.Buffer }

func (b *batch) add(format string, args ...any) {
	fmt.Fprintf(&b.buf, format, args...)
	b.buf.WriteByte('\n')
}

func (b *batch) run(ctx context.Context, ns string) error {
	_, err := run(ctx, b.buf.Bytes(), "ip", "-n", ns, "-batch", "-")
	if err != nil {
		return fmt.Errorf("in %s: %w\ncommands:\n%s", ns, err, b.buf.String())
	}
	return nil
}

// run executes argv with an optional stdin, bounded by a 30s timeout.
func run(ctx context.Context, stdin []byte, argv ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	if err != nil {
		return out.Bytes(), fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(out.String()))
	}
	return out.Bytes(), nil
}

// Exec runs argv inside namespace ns (any namespace; need not belong to the
// lab) and returns its combined output. It is bounded by a 60s timeout.
func (l *Lab) Exec(ns string, argv ...string) ([]byte, error) {
	return l.ExecContext(context.Background(), ns, argv...)
}

// ExecContext is Exec with a context (still bounded by 60s).
func (l *Lab) ExecContext(ctx context.Context, ns string, argv ...string) ([]byte, error) {
	return Exec(ctx, ns, argv...)
}

// Exec runs argv inside network namespace ns ("" = current namespace) and
// returns its combined output; bounded by ctx and 60s.
func Exec(ctx context.Context, ns string, argv ...string) ([]byte, error) {
	if len(argv) == 0 {
		return nil, errors.New("lab: Exec: empty argv")
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	full := argv
	if ns != "" {
		full = append([]string{"ip", "netns", "exec", ns}, argv...)
	}
	cmd := exec.CommandContext(ctx, full[0], full[1:]...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s: %w: %s", strings.Join(full, " "), err, strings.TrimSpace(string(out)))
	}
	return out, nil
}

// Down removes the lab: kills every process left in its namespaces and
// deletes the namespaces. It is idempotent. lab.json is removed; logs stay.
func (l *Lab) Down() error {
	StopControlPlane(l)
	err := DownPrefix(l.Prefix)
	if err == nil {
		_ = os.Remove(l.stateFile())
	}
	return err
}

// nsNameRE matches the namespace names the lab creates, given a prefix.
func nsNameRE(prefix string) *regexp.Regexp {
	return regexp.MustCompile(`^` + regexp.QuoteMeta(prefix) + `-(net|sink|cp|client|node[0-9]+|n[0-9]+-p[0-9]+)$`)
}

// ListNamespaces returns the existing namespaces created by a lab with prefix.
func ListNamespaces(prefix string) ([]string, error) {
	entries, err := os.ReadDir("/run/netns")
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	re := nsNameRE(prefix)
	var out []string
	for _, e := range entries {
		if re.MatchString(e.Name()) {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out, nil
}

// DownPrefix removes every lab namespace with the given prefix, killing the
// processes inside them first (they can only be processes a lab user
// started). Idempotent; bounded in time.
func DownPrefix(prefix string) error {
	if !prefixRE.MatchString(prefix) {
		return fmt.Errorf("lab: bad prefix %q", prefix)
	}
	nss, err := ListNamespaces(prefix)
	if err != nil {
		return err
	}
	if len(nss) == 0 {
		return nil
	}
	ctx := context.Background()
	// Kill processes first (pods before nodes does not matter).
	var pids []int
	for _, ns := range nss {
		pids = append(pids, nsPids(ctx, ns)...)
	}
	killPids(pids, 5*time.Second)
	var errs []error
	for _, ns := range nss {
		// Deleting the netns drops its interfaces once the last reference
		// goes away; veth peers in other namespaces vanish with them.
		if _, err := run(ctx, nil, "ip", "netns", "del", ns); err != nil {
			if _, statErr := os.Stat(filepath.Join("/run/netns", ns)); statErr == nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// nsPids lists the pids running in namespace ns.
func nsPids(ctx context.Context, ns string) []int {
	out, err := run(ctx, nil, "ip", "netns", "pids", ns)
	if err != nil {
		return nil
	}
	var pids []int
	self := os.Getpid()
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 1 && pid != self {
			pids = append(pids, pid)
		}
	}
	return pids
}
