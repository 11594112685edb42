package app

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/events"
	"k8s.io/klog/v2"

	"github.com/svcproxy/svcproxy/cmd/svcproxy/options"
	"github.com/svcproxy/svcproxy/ipset"
	"github.com/svcproxy/svcproxy/iptables"
	"github.com/svcproxy/svcproxy/proxier"
	"github.com/svcproxy/svcproxy/proxier/conntrack"
	"github.com/svcproxy/svcproxy/proxier/healthcheck"
	"github.com/svcproxy/svcproxy/proxier/host"
	"github.com/svcproxy/svcproxy/proxier/metrics"
	"github.com/svcproxy/svcproxy/proxier/nodeconfig"
	"github.com/svcproxy/svcproxy/proxier/rules"
)

// addDaemonFlags gives cmd kube-proxy's flags and makes it run the daemon.
// Both the root command (kubeadm's invocation, no subcommand) and "run" use it.
func addDaemonFlags(cmd *cobra.Command) {
	o := options.NewOptions()
	fs := cmd.Flags()
	o.AddFlags(fs) // with kube-proxy's logging flags (component-base)
	ver := addVersionFlag(fs)
	fs.SetNormalizeFunc(options.WordSepNormalize)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		// As kube-proxy: --version first, then Complete, logging, Validate.
		if ver.print(cmd.OutOrStdout()) {
			return nil
		}
		if len(args) > 0 {
			return badInput(fmt.Errorf("unknown command %q (see svcproxy --help)", args[0]))
		}
		if err := o.Complete(cmd.Flags()); err != nil {
			return badInput(err)
		}
		if err := o.ApplyLogging(); err != nil {
			return badInput(err)
		}
		if err := o.Validate(); err != nil {
			return badInput(err)
		}
		if o.WriteConfigFile != "" {
			return o.WriteConfigTo(o.WriteConfigFile)
		}
		ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, os.Interrupt)
		defer stop()
		if o.CleanupAndExit {
			return runCleanup(ctx, o.Config.IPTablesBackend)
		}
		return runDaemon(ctx, o.Config, daemonHost{sys: host.ProcSys{}, initOnly: o.InitOnly})
	}
}

func newRunCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the proxy daemon (the default when no subcommand is given)",
	}
	addDaemonFlags(cmd)
	return cmd
}

func newCleanupCommand() *cobra.Command {
	var backend iptables.Backend
	cmd := &cobra.Command{
		Use:   "cleanup",
		Short: "Remove every chain, rule and ipset svcproxy or kube-proxy (iptables mode) created",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runCleanup(cmd.Context(), backend)
		},
	}
	cmd.Flags().StringVar((*string)(&backend), "iptables-backend", string(iptables.BackendAuto), "auto, nft or legacy")
	return cmd
}

// runCleanup removes what svcproxy and kube-proxy created, in every family
// whose iptables works here. A family whose iptables cannot be used is
// skipped with a note (there can be nothing of ours in it); the ipsets go
// last, once no rule of either family uses them.
func runCleanup(ctx context.Context, backend iptables.Backend) error {
	ipts, unusable := nodeconfig.FamilyDetector{Open: nodeconfig.OpenIPTables(iptables.OSExecutor{})}.Detect(ctx, backend)
	if len(ipts) == 0 {
		return fmt.Errorf("iptables is not available on this host: %w", unusable[v1.IPv4Protocol])
	}
	var errs []error
	for _, family := range nodeconfig.AllFamilies {
		ipt := ipts[family]
		if ipt == nil {
			fmt.Fprintf(os.Stderr, "svcproxy: %s skipped: its iptables cannot be used here: %v\n", family, unusable[family])
			continue
		}
		if err := proxier.Cleanup(ctx, ipt, nil); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", family, err))
			continue
		}
		fmt.Fprintf(os.Stderr, "svcproxy: removed kube-proxy/svcproxy %s chains (%s backend)\n", family, ipt.Backend())
	}
	if err := ipset.Cleanup(ipset.New(), ipset.Prefix); err != nil {
		return errors.Join(append(errs, fmt.Errorf("ipsets: %w", err))...)
	}
	fmt.Fprintln(os.Stderr, "svcproxy: removed svcproxy ipsets")
	return errors.Join(errs...)
}

// runDaemon runs until ctx ends (SIGTERM). The rules are left in place on
// the way out, so restarting svcproxy never interrupts service traffic.
//
// One Proxier runs per IP family (see families.go for how they are
// chosen), each with its own iptables, ipsets, conntrack cleaner, service
// health-check servers and canary watch; one set of informers feeds them
// all through proxier.MultiHandlers. Healthz (keyed by family) and metrics
// (labelled by family) are shared.
//
// With h.initOnly (--init-only) it stops after the set-up that needs full
// root privileges (the sysctls: setConntrack and setFamilies), as
// kube-proxy's init-only mode does, and returns nil so that an init
// container completes.
func runDaemon(ctx context.Context, cfg options.Config, h daemonHost) error {
	nodeName, err := cfg.NodeName()
	if err != nil {
		return badInput(err)
	}
	if err := h.setConntrack(ctx, cfg); err != nil {
		return err
	}
	client, err := newClient(cfg)
	if err != nil {
		return err
	}
	planFamilies := nodeconfig.PlanFamilies
	if h.planFamilies != nil {
		planFamilies = h.planFamilies
	}
	plan, err := planFamilies(ctx, cfg.IPTablesBackend, cfg.BindAddress, nodeName, func(ctx context.Context) (*v1.Node, error) {
		return client.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
	})
	if ctx.Err() != nil {
		return nil // SIGTERM while starting up
	}
	if err != nil {
		return err
	}
	if err := h.setFamilies(cfg, nodeName, plan); err != nil {
		return err
	}
	if h.initOnly {
		klog.InfoS("System initialized and --init-only specified", "ipFamilies", plan.Families)
		return nil
	}
	// As kube-proxy: a failure is logged (kube-proxy at -v=2), not fatal.
	if err := h.sys.ApplyOOMScoreAdj(int(cfg.OOMScoreAdj)); err != nil {
		klog.V(2).InfoS("Failed to apply OOMScore", "err", err)
	}

	health, err := healthcheck.NewProxyHealth(healthcheck.ProxyHealthConfig{BindAddress: cfg.HealthzBindAddress, HealthTimeout: 2 * cfg.SyncPeriod})
	if cfg.HealthzBindAddress == "" {
		health, err = nil, nil
	}
	if err != nil {
		return badInput(err)
	}
	// Events as kube-proxy sends them (events.k8s.io/v1, reporting
	// controller "kube-proxy", so that what watches kube-proxy's Events
	// keeps working): Starting on the Node, and Warnings when a server
	// cannot start. The broadcaster's goroutines end with ctx and Shutdown.
	broadcaster := events.NewBroadcaster(&events.EventSinkImpl{Interface: client.EventsV1()})
	broadcaster.StartRecordingToSink(ctx.Done())
	defer broadcaster.Shutdown()
	recorder := broadcaster.NewRecorder(scheme.Scheme, "kube-proxy")
	nodeRef := &v1.ObjectReference{APIVersion: "v1", Kind: "Node", Name: nodeName}

	// kube-proxy's nfacct counters, behind its two
	// kubeproxy_iptables_*_packets_total metrics; both families' rules
	// count into the same ones. A kernel without nfnetlink_acct counts
	// nothing, as with kube-proxy.
	acct, err := iptables.NewNFAcct("")
	if err != nil {
		klog.ErrorS(err, "nfacct counters unavailable: the rules count nothing and the nfacct metrics are not served")
		acct = nil
	}
	handlers := proxier.MultiHandlers{}
	var proxiers []*proxier.Proxier
	for _, family := range plan.Families {
		p, closeFn, err := newFamilyProxier(cfg, nodeName, plan.Node, family, plan.IPTables[family], health, acct, recorder)
		if err != nil {
			return fmt.Errorf("%s proxier: %w", family, err)
		}
		defer closeFn()
		handlers[family] = p
		proxiers = append(proxiers, p)
	}
	first := plan.IPTables[plan.Families[0]]
	klog.InfoS("Starting svcproxy", "node", nodeName, "ipFamilies", plan.Families, "iptablesBackend", first.Backend(), "randomFully", first.HasRandomFully())

	metrics.Register()
	if acct != nil {
		if err := metrics.RegisterNFAcct(acct); err != nil {
			klog.ErrorS(err, "Failed to register the nfacct metrics")
		}
	}
	// Every goroutine of the daemon is in g, and runDaemon returns only
	// once all have: on SIGTERM the servers shut down, the informers stop,
	// and each Proxier's sync in flight is cancelled (an iptables-restore
	// killed mid-way applies nothing) and waited for. A goroutine's error
	// (a server's only with --bind-address-hard-fail) ends them all.
	g, gctx := errgroup.WithContext(ctx)
	serve := func(what string, run func(context.Context) error) {
		g.Go(func() error {
			err := run(gctx)
			if err == nil || errors.Is(err, context.Canceled) {
				return nil
			}
			klog.ErrorS(err, "Server failed", "server", what)
			if reason := serverFailureReason[what]; reason != "" {
				recorder.Eventf(nodeRef, nil, v1.EventTypeWarning, reason, "StartKubeProxy", err.Error())
			}
			if cfg.BindAddressHardFail {
				return fmt.Errorf("%s: %w", what, err)
			}
			return nil
		})
	}
	if health != nil {
		serve("healthz", health.Run)
	}
	if cfg.MetricsBindAddress != "" {
		serve("metrics", func(ctx context.Context) error {
			return metrics.ServeMetrics(ctx, cfg.MetricsBindAddress, metrics.Registry())
		})
	}
	recorder.Eventf(nodeRef, nil, v1.EventTypeNormal, "Starting", "StartKubeProxy", "")
	g.Go(func() error { return proxier.StartInformers(gctx, client, nodeName, cfg.ConfigSyncPeriod, handlers) })
	for _, p := range proxiers {
		g.Go(func() error { return p.Run(gctx) })
	}
	g.Go(func() error {
		<-gctx.Done()
		if ctx.Err() != nil {
			klog.InfoS("Shutting down; rules stay in place")
		}
		return nil
	})
	err = g.Wait()
	if ctx.Err() != nil {
		klog.InfoS("Shut down: every goroutine has returned")
		return nil
	}
	if err == nil {
		// Nothing returns before ctx ends without an error; be explicit.
		err = errors.New("svcproxy stopped unexpectedly")
	}
	return err
}

// serverFailureReason is the reason of kube-proxy's Warning on the Node
// when one of its servers fails.
var serverFailureReason = map[string]string{
	"healthz": "FailedToStartProxierHealthcheck",
	"metrics": "FailedToStartMetricServer",
}

// newFamilyProxier builds the Proxier of one IP family, with that family's
// own ipsets, conntrack cleaner and service health-check server. Health-check
// node ports listen where the family's NodePorts do (kube-proxy does the
// same): every address of the family, or its --nodeport-addresses. node is
// the Node as seen at startup (nil if unknown), used only for those
// addresses; the informers deliver it to the Proxier. The returned function
// closes the health-check server. acct, when not nil, holds the nfacct
// counters; recorder gets the health-check ports that cannot be opened.
func newFamilyProxier(cfg options.Config, nodeName string, node *v1.Node, family v1.IPFamily, ipt iptables.Interface, health *healthcheck.ProxyHealth,
	acct iptables.NFAcct, recorder events.EventRecorder) (*proxier.Proxier, func(), error) {
	builder := nodeconfig.ForHost(cfg.NodeSettings(), family, nodeName, ipt.HasRandomFully())
	initial := builder.Build(node)
	proxyHealthy := func() bool { return health == nil || health.IsHealthy() }
	serviceHealth := healthcheck.NewServiceHealthServer(nodeconfig.HealthCheckAddrs(initial), proxyHealthy, nil)
	serviceHealth.ReportTo(recorder, nodeName)
	sets := ipset.New()
	p, err := proxier.New(proxier.Config{
		ServiceHealth: serviceHealth,
		Conntrack:     conntrack.Netlink{Family: family},
		IPTables:      ipt,
		NodeConfig:    builder.Build,
		SyncPeriod:    cfg.SyncPeriod,
		MinSyncPeriod: cfg.MinSyncPeriod,
		Health:        health,
		NFAcct:        acct,
		Sets: func(_ context.Context, nc *rules.NodeConfig) error {
			return proxier.SyncIPSets(sets, nc)
		},
	})
	if err != nil {
		serviceHealth.Close()
		return nil, nil, err
	}
	return p, serviceHealth.Close, nil
}

// daemonHost is where the daemon does its privileged set-up: the sysctls
// under sys (the real /proc/sys unless sys.Root is set, for tests).
type daemonHost struct {
	sys host.ProcSys
	// initOnly is --init-only: stop after the set-up.
	initOnly bool
	// planFamilies replaces nodeconfig.PlanFamilies (tests).
	planFamilies func(ctx context.Context, backend iptables.Backend, bindAddress, nodeName string, getNode func(context.Context) (*v1.Node, error)) (*nodeconfig.Plan, error)
}

// setConntrack sets the conntrack sysctls. As kube-proxy: they are set
// before anything else, and failing to set them is fatal (see
// conntrack.SetSysctls).
func (h daemonHost) setConntrack(ctx context.Context, cfg options.Config) error {
	if err := conntrack.SetSysctls(ctx, h.sys, conntrackSettings(cfg.Conntrack), runtime.NumCPU()); err != nil {
		return fmt.Errorf("could not set conntrack parameters from the configuration: %w", err)
	}
	return nil
}

// setFamilies sets what each family's rules need from the kernel: as
// kube-proxy, 127.0.0.1 NodePorts need route_localnet=1 (the kernel then
// routes loopback sources off the host; KUBE-FIREWALL closes that to the
// outside), and failing to set it is fatal.
func (h daemonHost) setFamilies(cfg options.Config, nodeName string, plan *nodeconfig.Plan) error {
	for _, family := range plan.Families {
		nc := nodeconfig.ForHost(cfg.NodeSettings(), family, nodeName, plan.IPTables[family].HasRandomFully()).Build(plan.Node)
		if !nc.LocalhostNodePortsPossible() {
			continue
		}
		klog.InfoS("Setting route_localnet=1 to allow node-ports on localhost; to change this either disable iptables.localhostNodePorts (--iptables-localhost-nodeports) or set nodePortAddresses (--nodeport-addresses) to filter loopback addresses")
		if err := host.EnsureSysctl(klog.Background(), h.sys, "net/ipv4/conf/all/route_localnet", 1); err != nil {
			return err
		}
	}
	return nil
}

func conntrackSettings(c options.Conntrack) conntrack.Settings {
	return conntrack.Settings{
		MaxPerCore: int(c.MaxPerCore), Min: int(c.Min),
		TCPEstablishedTimeout: c.TCPEstablishedTimeout, TCPCloseWaitTimeout: c.TCPCloseWaitTimeout,
		TCPBeLiberal: c.TCPBeLiberal, UDPTimeout: c.UDPTimeout, UDPStreamTimeout: c.UDPStreamTimeout,
	}
}

func newClient(cfg options.Config) (kubernetes.Interface, error) {
	var rc *rest.Config
	var err error
	if cfg.Kubeconfig == "" && cfg.Master == "" {
		rc, err = rest.InClusterConfig()
	} else {
		rc, err = clientcmd.BuildConfigFromFlags(cfg.Master, cfg.Kubeconfig)
	}
	if err != nil {
		return nil, fmt.Errorf("API client configuration: %w", err)
	}
	rc.QPS = cfg.QPS
	rc.Burst = int(cfg.Burst)
	if cfg.ContentType != "" {
		rc.ContentType = cfg.ContentType
	}
	if cfg.AcceptContentTypes != "" {
		rc.AcceptContentTypes = cfg.AcceptContentTypes
	}
	rc.UserAgent = "svcproxy"
	rc.Timeout = 60 * time.Second
	return kubernetes.NewForConfig(rc)
}
