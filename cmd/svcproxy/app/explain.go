package app

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	v1 "k8s.io/api/core/v1"

	"github.com/svcproxy/svcproxy/iptables/trace"
	"github.com/svcproxy/svcproxy/proxier/explain"
)

type explainOptions struct {
	dumpOptions
	from       string
	fromNode   bool
	to         string
	port       int
	proto      string
	srcPort    int
	inIface    string
	output     string
	rules      string
	routes     string
	addrs      string
	kubeconfig string
}

// exitCode makes Main return code without printing an error: explain has
// already said why.
type exitCode int

func (e exitCode) Error() string { return "exit status " + strconv.Itoa(int(e)) }

func newExplainCommand() *cobra.Command {
	o := &explainOptions{}
	cmd := &cobra.Command{
		Use:   "explain (--from IP | --from-node) --to IP:PORT|NAMESPACE/NAME[:PORT] [-f PATH | --rules FILE]",
		Short: "Trace a packet through a node's service rules and say where it goes, or why it fails",
		Long: `Traces the first packet of a connection through the raw, mangle, nat and filter
rules and prints every possible outcome (endpoint or DROP/REJECT, masquerade
yes/no) with the rules it took, then one verdict line naming the cause when
traffic fails.

Where the rules come from:
  -f PATH       rendered from manifests for the node the dump flags describe
                (--node-name, --node-ip, --cluster-cidr, ...);
  --rules FILE  an iptables-save (or ip6tables-save) text, as pasted into bug
                reports (- for stdin); --routes FILE ("ip route" output) and
                --addrs FILE ("ip -o addr") add the node's routes and
                addresses, without which the checks needing them are skipped;
  otherwise     this node's live rules, read chain by chain as the packet
                reaches them (as root, in the node's network namespace); then
                routes, sysctls and the way back of the reply are checked.

--from IP sends from another host or a pod (the packet arrives on an
interface); --from-node, or a --from that is one of the node's addresses,
sends from a process on the node. --to takes an address and port, or a
Service port by name (NAMESPACE/NAME[:PORT]), resolved through the manifests
(-f), the API server (--kubeconfig) or the rules' comments.

Rules of other software (CNI plugins, Docker, firewalls) are traced too;
where a test cannot be decided (a rate limit, an unknown set) both ways are
followed, and the outcomes that depend on it say so.

Exit codes: 0 the packet reaches an endpoint (or is accepted by the node
itself); 1 it is dropped or rejected, matches no service, a blocking problem
was found, or the answer is uncertain; 2 bad input.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd)
		},
	}
	f := cmd.Flags()
	f.StringArrayVarP(&o.files, "filename", "f", nil, "render the rules from these manifests (file, directory or -) instead of reading the live node")
	f.StringVar(&o.rules, "rules", "", "trace this saved iptables-save / ip6tables-save file (- for stdin) instead of the live node")
	f.StringVar(&o.routes, "routes", "", "with --rules: the node's \"ip route\" output")
	f.StringVar(&o.addrs, "addrs", "", "with --rules: the node's \"ip -o addr\" output")
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "resolve --to NAMESPACE/NAME through this cluster's API server")
	f.StringVar(&o.from, "from", "", "source IP (a pod or another host)")
	f.BoolVar(&o.fromNode, "from-node", false, "the packet comes from a process on the node")
	f.StringVar(&o.to, "to", "", "destination IP:PORT, IP with --port, or a Service port NAMESPACE/NAME[:PORT]")
	f.IntVar(&o.port, "port", 0, "destination port, when --to is an IP")
	f.StringVar(&o.proto, "proto", "tcp", "tcp, udp or sctp (for --to NAMESPACE/NAME: the Service port's, unless given)")
	f.IntVar(&o.srcPort, "source-port", 40000, "source port (only rules testing --sport care)")
	f.StringVar(&o.inIface, "in-iface", "", "interface an incoming packet arrives on (default: where the route back to --from leaves)")
	f.StringVarP(&o.output, "output", "o", "text", "text or json")
	o.addNodeFlags(f)
	return cmd
}

// destination is where --to points: an address and port, or a Service
// port to resolve.
type destination struct {
	addr netip.Addr
	port int
	ref  *explain.ServiceRef
}

// packet validates the packet flags into the packet to trace and its
// destination. A --from-node packet gets its source later, from the node's
// configuration (offline) or its routes (live); a Service name gets its
// address when resolved.
func (o *explainOptions) packet(protoGiven bool) (trace.Packet, destination, error) {
	var errs []error
	p := trace.Packet{Protocol: strings.ToLower(o.proto), SrcPort: o.srcPort, InIface: o.inIface, Origin: trace.Incoming}
	switch p.Protocol {
	case "tcp", "udp", "sctp":
	default:
		errs = append(errs, fmt.Errorf("--proto: %q is not tcp, udp or sctp", o.proto))
	}
	if !protoGiven {
		p.Protocol = "" // a Service port's own, or tcp (see resolve)
	}
	switch {
	case o.from != "" && o.fromNode:
		errs = append(errs, errors.New("--from and --from-node: give one of them"))
	case o.from == "" && !o.fromNode:
		errs = append(errs, errors.New("--from: required (a source IP), or --from-node"))
	case o.fromNode:
		p.Origin = trace.Local
	default:
		a, err := netip.ParseAddr(o.from)
		if err != nil {
			errs = append(errs, fmt.Errorf("--from: %q is not an IP address", o.from))
		}
		p.Src = a.Unmap()
	}
	dst, err := o.destination()
	errs = append(errs, err)
	if o.srcPort <= 0 || o.srcPort > 65535 {
		errs = append(errs, fmt.Errorf("--source-port: %d is out of range 1..65535", o.srcPort))
	}
	switch o.output {
	case "text", "json":
	default:
		errs = append(errs, fmt.Errorf("--output: %q is not text or json", o.output))
	}
	if p.Src.IsValid() && dst.addr.IsValid() && p.Src.Is4() != dst.addr.Is4() {
		errs = append(errs, fmt.Errorf("--from %s and --to %s are of different IP families", p.Src, dst.addr))
	}
	errs = append(errs, o.sourceFlags())
	return p, dst, errors.Join(errs...)
}

// destination reads --to (and --port).
func (o *explainOptions) destination() (destination, error) {
	if o.to == "" {
		return destination{}, errors.New("--to: required (IP:PORT, IP with --port, or NAMESPACE/NAME[:PORT])")
	}
	if ref, ok := explain.ParseServiceRef(o.to); ok {
		if o.port != 0 {
			return destination{}, fmt.Errorf("--port goes with --to IP; name the Service port in --to %s:PORT", o.to)
		}
		return destination{ref: &ref}, nil
	}
	var d destination
	if ap, err := netip.ParseAddrPort(o.to); err == nil {
		if o.port != 0 && int(ap.Port()) != o.port {
			return d, fmt.Errorf("--port %d contradicts the port in --to %s", o.port, o.to)
		}
		d.addr, d.port = ap.Addr().Unmap(), int(ap.Port())
	} else if a, err := netip.ParseAddr(o.to); err == nil {
		d.addr, d.port = a.Unmap(), o.port
	} else {
		return d, fmt.Errorf("--to: %q is not IP:PORT, IP or NAMESPACE/NAME[:PORT]", o.to)
	}
	if d.port <= 0 || d.port > 65535 {
		return d, fmt.Errorf("--port: a destination port 1-65535 is required (in --to IP:PORT or --port N)")
	}
	return d, nil
}

// sourceFlags checks that the flags choosing where the rules come from go
// together.
func (o *explainOptions) sourceFlags() error {
	var errs []error
	if len(o.files) > 0 && o.rules != "" {
		errs = append(errs, errors.New("-f and --rules: give one of them (rendered or saved rules)"))
	}
	if o.rules == "" {
		for flag, v := range map[string]string{"--routes": o.routes, "--addrs": o.addrs} {
			if v != "" {
				errs = append(errs, fmt.Errorf("%s goes with --rules (a live node's routes and addresses are read from it)", flag))
			}
		}
	}
	if o.routes == "-" || o.addrs == "-" {
		errs = append(errs, errors.New("--routes and --addrs take files; only --rules reads stdin"))
	}
	return errors.Join(errs...)
}

func (o *explainOptions) run(cmd *cobra.Command) error {
	p, dst, err := o.packet(cmd.Flags().Changed("proto"))
	if err != nil {
		return badInput(err)
	}
	var rep *explain.Report
	switch {
	case len(o.files) > 0:
		rep, err = o.offline(cmd, p, dst)
	case o.rules != "":
		rep, err = o.saved(cmd, p, dst)
	default:
		rep, err = o.live(cmd, p, dst)
	}
	var inErr *explain.InputError
	if errors.As(err, &inErr) {
		return badInput(err)
	}
	if err != nil {
		return err
	}
	return o.print(cmd, rep)
}

// withDst completes p with a destination: the address given, or the
// Service port resolved (whose protocol it takes unless --proto was given).
func withDst(p trace.Packet, dst destination, sp *explain.ServicePort) trace.Packet {
	if sp != nil {
		p.Dst, p.DstPort = sp.IP, sp.Port
		if p.Protocol == "" {
			p.Protocol = sp.Protocol
		}
		return p
	}
	p.Dst, p.DstPort = dst.addr, dst.port
	if p.Protocol == "" {
		p.Protocol = "tcp"
	}
	return p
}

func (o *explainOptions) print(cmd *cobra.Command, rep *explain.Report) error {
	w := cmd.OutOrStdout()
	if o.output == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false) // rule comments hold "->"
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else if _, err := fmt.Fprint(w, rep.Text()); err != nil {
		return err
	}
	if rep.Status != explain.StatusOK {
		return exitCode(exitFailure)
	}
	return nil
}

// offline renders the manifests for the node the flags describe and traces
// through them.
func (o *explainOptions) offline(cmd *cobra.Command, p trace.Packet, dst destination) (*explain.Report, error) {
	services, err := o.bufferedServices(cmd, dst)
	if err != nil {
		return nil, err
	}
	cfg, rendered, err := o.render(cmd)
	if err != nil {
		return nil, err
	}
	var resolved *explain.Resolved
	if dst.ref != nil {
		sp, err := explain.ResolveService(*dst.ref, services, cfg.Family, p.Protocol)
		if err != nil {
			return nil, badInput(fmt.Errorf("--to %s: %w", dst.ref, err))
		}
		resolved = explain.NewResolved(*dst.ref, sp, "manifests")
		p = withDst(p, dst, &sp)
	} else {
		p = withDst(p, dst, nil)
	}
	if p.Dst.Is4() != (cfg.Family == v1.IPv4Protocol) {
		return nil, badInput(fmt.Errorf("--to %s is not of --ip-family %s", p.Dst, o.ipFamily))
	}
	if p.Origin == trace.Local && !p.Src.IsValid() {
		if p.Dst.IsLoopback() {
			p.Src = p.Dst
		} else if len(cfg.NodeIPs) > 0 {
			p.Src = cfg.NodeIPs[0]
		} else {
			return nil, badInput(errors.New("--from-node: the node's address is unknown; give --node-ip or a Node object (--node-name)"))
		}
	}
	rep, err := explain.Offline(rendered, cfg, p)
	if rep != nil {
		rep.Resolved = resolved
	}
	return rep, err
}
