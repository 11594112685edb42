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
	from     string
	fromNode bool
	to       string
	port     int
	proto    string
	srcPort  int
	inIface  string
	output   string
}

// exitCode makes Main return code without printing an error: explain has
// already said why.
type exitCode int

func (e exitCode) Error() string { return "exit status " + strconv.Itoa(int(e)) }

func newExplainCommand() *cobra.Command {
	o := &explainOptions{}
	cmd := &cobra.Command{
		Use:   "explain (--from IP | --from-node) --to IP:PORT [-f PATH]",
		Short: "Trace a packet through a node's service rules and say where it goes, or why it fails",
		Long: `Traces the first packet of a connection through the nat and filter rules and
prints every possible outcome (endpoint or DROP/REJECT, masquerade yes/no) with
the rules it took, then one verdict line naming the cause when traffic fails.

With -f, the rules are rendered from manifests for the node the dump flags
describe (--node-name, --node-ip, --cluster-cidr, ...). Without -f, the live
rules of this node are read (iptables-save of nat and filter, the ipsets they
use, local addresses), and routes and sysctls are checked through netlink and
/proc/sys (run as root, in the node's network namespace).

--from IP sends from another host or a pod (the packet arrives on an
interface); --from-node, or a --from that is one of the node's addresses,
sends from a process on the node.

Exit codes: 0 the packet reaches an endpoint (or is accepted by the node
itself), 1 it is dropped or rejected, matches no service, or a blocking
problem was found; 2 bad input.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd)
		},
	}
	f := cmd.Flags()
	f.StringArrayVarP(&o.files, "filename", "f", nil, "render the rules from these manifests (file, directory or -) instead of reading the live node")
	f.StringVar(&o.from, "from", "", "source IP (a pod or another host)")
	f.BoolVar(&o.fromNode, "from-node", false, "the packet comes from a process on the node")
	f.StringVar(&o.to, "to", "", "destination IP:PORT (or IP with --port)")
	f.IntVar(&o.port, "port", 0, "destination port, when --to is an IP")
	f.StringVar(&o.proto, "proto", "tcp", "tcp, udp or sctp")
	f.IntVar(&o.srcPort, "source-port", 40000, "source port (only rules testing --sport care)")
	f.StringVar(&o.inIface, "in-iface", "", "interface an incoming packet arrives on (live mode: the route back to --from)")
	f.StringVarP(&o.output, "output", "o", "text", "text or json")
	o.addNodeFlags(f)
	return cmd
}

// packet validates the packet flags into the packet to trace. A
// --from-node packet gets its source later, from the node's configuration
// (offline) or its routes (live).
func (o *explainOptions) packet() (trace.Packet, error) {
	var errs []error
	p := trace.Packet{Protocol: strings.ToLower(o.proto), SrcPort: o.srcPort, InIface: o.inIface, Origin: trace.Incoming}
	switch p.Protocol {
	case "tcp", "udp", "sctp":
	default:
		errs = append(errs, fmt.Errorf("--proto: %q is not tcp, udp or sctp", o.proto))
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
	switch {
	case o.to == "":
		errs = append(errs, errors.New("--to: required (IP:PORT, or IP with --port)"))
	default:
		if ap, err := netip.ParseAddrPort(o.to); err == nil {
			if o.port != 0 && int(ap.Port()) != o.port {
				errs = append(errs, fmt.Errorf("--port %d contradicts the port in --to %s", o.port, o.to))
			}
			p.Dst, p.DstPort = ap.Addr().Unmap(), int(ap.Port())
		} else if a, err := netip.ParseAddr(o.to); err == nil {
			p.Dst, p.DstPort = a.Unmap(), o.port
		} else {
			errs = append(errs, fmt.Errorf("--to: %q is not IP:PORT or IP", o.to))
		}
		if p.DstPort <= 0 || p.DstPort > 65535 {
			if p.Dst.IsValid() {
				errs = append(errs, fmt.Errorf("--port: a destination port 1-65535 is required (in --to IP:PORT or --port N)"))
			}
		}
	}
	if o.srcPort <= 0 || o.srcPort > 65535 {
		errs = append(errs, fmt.Errorf("--source-port: %d is out of range 1..65535", o.srcPort))
	}
	switch o.output {
	case "text", "json":
	default:
		errs = append(errs, fmt.Errorf("--output: %q is not text or json", o.output))
	}
	if p.Src.IsValid() && p.Dst.IsValid() && p.Src.Is4() != p.Dst.Is4() {
		errs = append(errs, fmt.Errorf("--from %s and --to %s are of different IP families", p.Src, p.Dst))
	}
	return p, errors.Join(errs...)
}

func (o *explainOptions) run(cmd *cobra.Command) error {
	p, err := o.packet()
	if err != nil {
		return badInput(err)
	}
	var rep *explain.Report
	if len(o.files) > 0 {
		rep, err = o.offline(cmd, p)
	} else {
		rep, err = explain.Live(cmd.Context(), p, explain.ForThisNode())
	}
	if err != nil {
		return traceErr(err)
	}
	return o.print(cmd, rep)
}

func (o *explainOptions) print(cmd *cobra.Command, rep *explain.Report) error {
	w := cmd.OutOrStdout()
	if o.output == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
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
func (o *explainOptions) offline(cmd *cobra.Command, p trace.Packet) (*explain.Report, error) {
	cfg, rendered, err := o.render(cmd)
	if err != nil {
		return nil, err
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
	return explain.Offline(rendered, cfg, p)
}

// traceErr adds the flag that supplies what the tracer could not decide
// without.
func traceErr(err error) error {
	switch {
	case errors.Is(err, trace.ErrNeedInIface):
		return fmt.Errorf("%w (give the incoming interface with --in-iface)", err)
	case errors.Is(err, trace.ErrNeedSrcPort):
		return fmt.Errorf("%w (give the source port with --source-port)", err)
	}
	return err
}
