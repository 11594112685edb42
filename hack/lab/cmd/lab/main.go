// Command lab drives the svcproxy network lab (package hack/lab) from the
// shell. hack/lab.sh and hack/controlplane.sh are thin wrappers around it.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/svcproxy/svcproxy/hack/lab"
)

const usage = `Usage: lab <command> [flags]

Network lab:
  up      [--prefix P] [--nodes N] [--pods M] [--state-dir D] [--ipv4-only]
                                                                create the lab (re-creates if present; dual-stack)
  down    [--prefix P] [--state-dir D]                          stop control plane, kill processes, delete namespaces
  down    --stale STEM                                          remove test labs <STEM><pid> whose process is gone
  status  [--prefix P] [--state-dir D] [--json]                 show the lab and its control plane

Control plane (inside <prefix>-cp; needs a lab):
  controlplane up|down|status|restart-apiserver|stop-apiserver|start-apiserver
               [--prefix P] [--state-dir D] [-- extra kube-apiserver flags (up only)]

Helpers:
  probe --ns NS [--proto tcp|udp] --addr IP --port N [--timeout 2s]   query an echo server
  echo  --ns NS --name NAME --port N                                  start a detached echo server
  apply -f FILE|DIR [-f ...] [--dry-run] [--timeout 1m]               server-side apply manifests to the lab's
                                                                      API server (creates missing namespaces)

Defaults: prefix svp, 2 nodes, 2 pods per node, state dir /tmp/svcproxy-lab-<prefix>
(or $SVCPROXY_STATE_DIR).
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "up":
		err = cmdUp(ctx, args)
	case "down":
		err = cmdDown(args)
	case "status":
		err = cmdStatus(ctx, args)
	case "controlplane", "cp":
		err = cmdControlPlane(ctx, args)
	case "probe":
		err = cmdProbe(args)
	case "echo":
		err = cmdEcho(args)
	case "apply":
		err = cmdApply(ctx, args)
	case "-h", "--help", "help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "lab: unknown command %q\n\n%s", cmd, usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "lab:", err)
		os.Exit(1)
	}
}

type common struct {
	prefix, stateDir string
}

func newFlags(name string, c *common) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ExitOnError)
	fs.SetOutput(os.Stderr)
	fs.Usage = func() { fmt.Fprint(os.Stderr, usage) }
	fs.StringVar(&c.prefix, "prefix", lab.DefaultPrefix, "namespace name prefix")
	fs.StringVar(&c.stateDir, "state-dir", "", "state dir (default $SVCPROXY_STATE_DIR or /tmp/svcproxy-lab-<prefix>)")
	return fs
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%s] %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

func cmdUp(ctx context.Context, args []string) error {
	var c common
	fs := newFlags("up", &c)
	nodes := fs.Int("nodes", lab.DefaultNodes, "number of nodes (1-4)")
	pods := fs.Int("pods", lab.DefaultPodsPerNd, "pods per node (0-60)")
	v4only := fs.Bool("ipv4-only", false, "no IPv6 addresses (default: dual-stack where the kernel has IPv6)")
	_ = fs.Parse(args)
	if *pods == 0 {
		*pods = -1
	}
	l, err := lab.Up(ctx, lab.Options{Prefix: c.prefix, Nodes: *nodes, PodsPerNode: *pods, StateDir: c.stateDir, IPv4Only: *v4only, Logf: logf})
	if err != nil {
		return err
	}
	printLab(os.Stdout, l)
	return nil
}

func cmdDown(args []string) error {
	var c common
	fs := newFlags("down", &c)
	stale := fs.String("stale", "", "remove the labs of test runs of this stem whose process is gone (lab.DownStale)")
	_ = fs.Parse(args)
	if *stale != "" {
		if err := lab.DownStale(*stale); err != nil {
			return err
		}
		logf("stale labs of stem %s down", *stale)
		return nil
	}
	if l, err := lab.Load(c.prefix, c.stateDir); err == nil {
		if err := l.Down(); err != nil {
			return err
		}
	} else if err := lab.DownPrefix(c.prefix); err != nil {
		return err
	}
	left, err := lab.ListNamespaces(c.prefix)
	if err != nil {
		return err
	}
	if len(left) > 0 {
		return fmt.Errorf("namespaces left: %s", strings.Join(left, " "))
	}
	logf("lab %s down", c.prefix)
	return nil
}

func cmdStatus(ctx context.Context, args []string) error {
	var c common
	fs := newFlags("status", &c)
	asJSON := fs.Bool("json", false, "print lab.json")
	_ = fs.Parse(args)
	nss, err := lab.ListNamespaces(c.prefix)
	if err != nil {
		return err
	}
	l, lerr := lab.Load(c.prefix, c.stateDir)
	if *asJSON {
		if lerr != nil {
			return lerr
		}
		return json.NewEncoder(os.Stdout).Encode(l)
	}
	fmt.Printf("namespaces (%d): %s\n", len(nss), strings.Join(nss, " "))
	if lerr != nil {
		fmt.Println("lab: not up (no state)")
		if len(nss) > 0 {
			return errors.New("stale namespaces without state; run down")
		}
		return nil
	}
	want := l.Namespaces()
	var missing []string
	have := map[string]bool{}
	for _, ns := range nss {
		have[ns] = true
	}
	for _, ns := range want {
		if !have[ns] {
			missing = append(missing, ns)
		}
	}
	printLab(os.Stdout, l)
	if len(missing) > 0 {
		fmt.Printf("MISSING namespaces: %s\n", strings.Join(missing, " "))
	}
	if cp, err := lab.LoadControlPlane(l); err == nil {
		etcd, api := cp.Running()
		ready := "not ready"
		if api > 0 {
			if err := cp.Ready(ctx); err == nil {
				ready = "ready"
			} else {
				ready = "not ready: " + err.Error()
			}
		}
		fmt.Printf("control plane: etcd pid %d, kube-apiserver pid %d (%s)\n  kubeconfig %s\n  logs %s %s\n",
			etcd, api, ready, cp.Kubeconfig(), cp.EtcdLog(), cp.APIServerLog())
	} else {
		fmt.Println("control plane: not started")
	}
	if len(missing) > 0 {
		return errors.New("lab incomplete")
	}
	return nil
}

func printLab(w io.Writer, l *lab.Lab) {
	// and6 is " / <IPv6 address>" in a dual-stack lab.
	and6 := func(ip6 string) string {
		if ip6 == "" {
			return ""
		}
		return " / " + ip6
	}
	fmt.Fprintf(w, "lab %s (state %s)\n", l.Prefix, l.StateDir)
	if l.IPv6 {
		fmt.Fprintf(w, "  %-14s br0 (L2 switch for %s and %s)\n", l.NetNS, lab.NodeNetwork, lab.NodeNetwork6)
	} else {
		fmt.Fprintf(w, "  %-14s br0 (L2 switch for %s; IPv4 only)\n", l.NetNS, lab.NodeNetwork)
	}
	fmt.Fprintf(w, "  %-14s %s%s (sink/gateway, forwarding off)\n", l.Sink.NS, l.Sink.IP, and6(l.Sink.IP6))
	fmt.Fprintf(w, "  %-14s %s%s (control plane)\n", l.CP.NS, l.CP.IP, and6(l.CP.IP6))
	fmt.Fprintf(w, "  %-14s %s%s (outside client)\n", l.Client.NS, l.Client.IP, and6(l.Client.IP6))
	for _, n := range l.Nodes {
		fmt.Fprintf(w, "  %-14s %s%s %s podCIDR %s%s cbr0 %s%s\n", n.NS, n.IP, and6(n.IP6), n.Name, n.PodCIDR, and6(n.PodCIDR6), n.BridgeIP, and6(n.BridgeIP6))
		for _, p := range n.Pods {
			fmt.Fprintf(w, "    %-14s %s%s\n", p.NS, p.IP, and6(p.IP6))
		}
	}
	fmt.Fprintf(w, "  bridge-nf-call-iptables in nodes: %v", l.BridgeNetfilter)
	if l.IPv6 {
		fmt.Fprintf(w, ", bridge-nf-call-ip6tables: %v", l.BridgeNetfilter6)
	}
	fmt.Fprintln(w)
}

func cmdControlPlane(ctx context.Context, args []string) error {
	if len(args) < 1 {
		return errors.New("controlplane: need up|down|status|restart-apiserver|stop-apiserver|start-apiserver")
	}
	sub := args[0]
	var c common
	fs := newFlags("controlplane", &c)
	_ = fs.Parse(args[1:])
	l, err := lab.Load(c.prefix, c.stateDir)
	if err != nil {
		return err
	}
	l.SetLogf(logf)
	switch sub {
	case "up":
		cp, err := l.StartControlPlane(ctx, fs.Args()...)
		if err != nil {
			return err
		}
		fmt.Printf("kubeconfig: %s\nserver: %s\nlogs: %s %s\n", cp.Kubeconfig(), cp.Server, cp.EtcdLog(), cp.APIServerLog())
		return nil
	case "down":
		lab.StopControlPlane(l)
		logf("control plane %s stopped", l.CP.NS)
		return nil
	}
	cp, err := lab.LoadControlPlane(l)
	if err != nil {
		return err
	}
	switch sub {
	case "status":
		etcd, api := cp.Running()
		fmt.Printf("etcd pid %d, kube-apiserver pid %d\n", etcd, api)
		if err := cp.Ready(ctx); err != nil {
			return fmt.Errorf("not ready: %w", err)
		}
		fmt.Println("ready")
		return nil
	case "restart-apiserver":
		return cp.RestartAPIServer(ctx)
	case "stop-apiserver":
		return cp.StopAPIServer()
	case "start-apiserver":
		return cp.StartAPIServer(ctx)
	}
	return fmt.Errorf("controlplane: unknown subcommand %q", sub)
}

func cmdProbe(args []string) error {
	fs := flag.NewFlagSet("probe", flag.ExitOnError)
	ns := fs.String("ns", "", "namespace to probe from")
	proto := fs.String("proto", "tcp", "tcp or udp")
	addr := fs.String("addr", "", "destination IP")
	port := fs.Int("port", 0, "destination port")
	src := fs.String("source", "", "source IP to bind (optional)")
	timeout := fs.Duration("timeout", 2*time.Second, "timeout")
	_ = fs.Parse(args)
	if *addr == "" || *port == 0 {
		return errors.New("probe: --addr and --port are required")
	}
	r, err := lab.ProbeWith(lab.ProbeSpec{NS: *ns, Proto: *proto, Addr: *addr, Port: *port, Timeout: *timeout, SourceIP: *src})
	if err != nil {
		kind := lab.ProbeErrorKind(err)
		if kind == "" {
			kind = "error"
		}
		fmt.Println(kind)
		return err
	}
	fmt.Printf("%s %s (local %s)\n", r.Backend, r.ClientAddr, r.LocalAddr)
	return nil
}

func cmdEcho(args []string) error {
	var c common
	fs := newFlags("echo", &c)
	ns := fs.String("ns", "", "namespace")
	name := fs.String("name", "", "echo server name")
	port := fs.Int("port", 8080, "port")
	_ = fs.Parse(args)
	if *ns == "" || *name == "" {
		return errors.New("echo: --ns and --name are required")
	}
	l, err := lab.Load(c.prefix, c.stateDir)
	if err != nil {
		return err
	}
	p, err := l.StartEcho(*ns, *name, *port)
	if err != nil {
		return err
	}
	fmt.Printf("echoserver %s in %s port %d pid %d (log %s)\n", *name, *ns, *port, p.Pid(), p.Log)
	return nil
}
