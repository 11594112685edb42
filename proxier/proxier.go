package proxier

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/svcproxy/svcproxy/iptables"
	"github.com/svcproxy/svcproxy/proxier/async"
	"github.com/svcproxy/svcproxy/proxier/healthcheck"
	"github.com/svcproxy/svcproxy/proxier/metrics"
	"github.com/svcproxy/svcproxy/proxier/model"
	"github.com/svcproxy/svcproxy/proxier/rules"
)

// fullSyncPeriod forces a full sync now and then even without failures, as
// kube-proxy does, to repair any drift that partial syncs would not notice.
const fullSyncPeriod = time.Hour

// Config configures a Proxier.
type Config struct {
	IPTables iptables.Interface
	// rules.NodeConfig derives the rendering configuration from this node's Node
	// object (nil until the Node is seen). It is called on every Node change.
	NodeConfig func(node *v1.Node) *rules.NodeConfig
	// SyncPeriod is the longest time between syncs (and the canary check
	// interval); MinSyncPeriod the shortest.
	SyncPeriod, MinSyncPeriod time.Duration
	// Health, when set, is told about queued changes and finished syncs.
	Health *healthcheck.ProxyHealth
	// Sets, when set, is called before every apply to bring ipsets that the
	// rules reference up to date (a rule must never refer to a missing set).
	Sets func(ctx context.Context, cfg *rules.NodeConfig) error
	// ServiceHealth, when set, serves the health-check node ports of
	// externalTrafficPolicy Local load balancers; it is updated after every
	// successful sync.
	ServiceHealth ServiceHealthSyncer
	// Conntrack, when set, deletes UDP flows stuck on endpoints that are gone
	// after every successful sync that changed a service.
	Conntrack ConntrackCleaner
	// NFAcct, when set, holds kube-proxy's nfacct counters: each full sync
	// makes them, and the rules count into those that exist.
	NFAcct iptables.NFAcct
	// Problems, when set, receives objects that cannot be programmed (each
	// error names the object and field). Default: logged.
	Problems func(err error)
	Clock    clock.WithTickerAndDelayedExecution
}

// Validate reports every problem with c.
func (c *Config) Validate() error {
	var errs []error
	if c.IPTables == nil {
		errs = append(errs, errors.New("proxier: IPTables must be set"))
	}
	if c.NodeConfig == nil {
		errs = append(errs, errors.New("proxier: NodeConfig must be set"))
	}
	if c.SyncPeriod <= 0 {
		errs = append(errs, fmt.Errorf("proxier: SyncPeriod (%v) must be positive", c.SyncPeriod))
	}
	if c.MinSyncPeriod < 0 || c.MinSyncPeriod > c.SyncPeriod {
		errs = append(errs, fmt.Errorf("proxier: MinSyncPeriod (%v) must be in 0..SyncPeriod (%v)", c.MinSyncPeriod, c.SyncPeriod))
	}
	return errors.Join(errs...)
}

// Proxier keeps one node's service rules in step with the API. Informer
// handlers (On*) record changes and nudge; only the sync goroutine started by
// Run touches the kernel.
type Proxier struct {
	cfg     Config
	family  v1.IPFamily
	tracker *model.ChangeTracker
	runner  *async.BoundedFrequencyRunner
	clock   clock.WithTickerAndDelayedExecution
	// log carries ipFamily, so dual-stack logs tell the two proxiers apart.
	log klog.Logger

	servicesSynced, slicesSynced atomic.Bool
	// fullRequested is set by the canary watcher for the sync goroutine.
	fullRequested atomic.Bool

	nodeMu   sync.Mutex
	nodeConf *rules.NodeConfig

	// Owned by the sync goroutine.
	snapshot     *model.Snapshot
	needFullSync bool
	lastFullSync time.Time
	lastNodeConf *rules.NodeConfig
	// counters are the nfacct counters made at the last full sync.
	counters []string
	// prog writes the rules and remembers what it wrote.
	prog *Programmer
	// partial sums up partial syncs for the default-verbosity summary.
	partial partialSummary
	// waitLogged: the wait for the initial lists has been logged.
	waitLogged bool
}

// partialSyncs at the default verbosity are summed up in one line at most
// this often (each one is logged at -v=2).
const partialSummaryInterval = 5 * time.Minute

type partialSummary struct {
	since      time.Time
	syncs      int
	changed    int
	maxElapsed time.Duration
}

func (s *partialSummary) add(changed int, took time.Duration) {
	s.syncs++
	s.changed += changed
	s.maxElapsed = max(s.maxElapsed, took)
}

// chainsIn counts the chain declarations in restore input.
func chainsIn(data []byte) int { return bytes.Count(data, []byte("\n:")) }

// retryInterval is when the runner retries after a failed sync (sooner on a
// change).
func (p *Proxier) retryInterval() time.Duration { return min(p.cfg.SyncPeriod, 30*time.Second) }

// New validates cfg and returns a Proxier. It starts nothing: call Run.
func New(cfg Config) (*Proxier, error) {
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.Problems == nil {
		cfg.Problems = func(err error) { klog.ErrorS(err, "Cannot program object") }
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	nodeConf := cfg.NodeConfig(nil)
	p := &Proxier{
		cfg:          cfg,
		family:       nodeConf.Family,
		log:          klog.Background().WithValues("ipFamily", nodeConf.Family),
		tracker:      model.NewChangeTracker(nodeConf.Family),
		clock:        cfg.Clock,
		nodeConf:     nodeConf,
		snapshot:     model.NewSnapshot(),
		needFullSync: true,
	}
	p.prog = NewProgrammer(cfg.IPTables, string(p.family), cfg.Clock, p.log)
	r, err := async.NewBoundedFrequencyRunner("sync-proxy-rules-"+string(p.family), p.syncProxyRules, cfg.MinSyncPeriod, p.retryInterval(), cfg.SyncPeriod, cfg.Clock)
	if err != nil {
		return nil, err
	}
	p.runner = r
	return p, nil
}

// Run syncs until ctx ends, then waits for the sync in flight (whose
// iptables-restore ctx ends: it applies all or nothing) and the canary
// watcher to return: when Run returns, no goroutine it started is left.
// The sync goroutine is the only one that writes iptables; the canary
// watcher only reads and asks it for a full sync. The rules stay in place
// afterwards: a restarting proxy must not cut established service traffic.
func (p *Proxier) Run(ctx context.Context) error {
	if p.cfg.Health != nil {
		p.cfg.Health.Updated(p.family)
	}
	// The runner returns when ctx ends (nil) or when it cannot start (an
	// error); either way the canary watcher stops with it.
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	var g errgroup.Group
	g.Go(func() error {
		p.watchCanary(ctx)
		return nil
	})
	g.Go(func() error {
		defer stop()
		return p.runner.Run(ctx)
	})
	return g.Wait()
}

// Sync asks for a sync soon (bounded by MinSyncPeriod).
func (p *Proxier) Sync() { p.runner.Sync() }

func (p *Proxier) queued() {
	if p.cfg.Health != nil {
		p.cfg.Health.QueueUpdated(p.family)
	}
	_, pending := p.tracker.Counts()
	metrics.ServiceChangesPending.Set(float64(pending.ServiceChanges))
	metrics.EndpointChangesPending.Set(float64(pending.EndpointChanges))
	metrics.SyncProxyRulesLastQueuedTimestamp.WithLabelValues(string(p.family)).SetToCurrentTime()
	p.syncIfListed()
}

// OnServiceAdd and the other On* methods are informer handlers.
func (p *Proxier) OnServiceAdd(svc *v1.Service) { p.OnServiceUpdate(nil, svc) }

func (p *Proxier) OnServiceUpdate(_, svc *v1.Service) {
	if p.tracker.ServiceChanged(keyOf(svc.Namespace, svc.Name), svc, p.clock.Now()) {
		metrics.ServiceChangesTotal.Inc()
		p.queued()
	}
}

func (p *Proxier) OnServiceDelete(svc *v1.Service) {
	if p.tracker.ServiceChanged(keyOf(svc.Namespace, svc.Name), nil, p.clock.Now()) {
		metrics.ServiceChangesTotal.Inc()
		p.queued()
	}
}

func (p *Proxier) OnServicesSynced() {
	p.servicesSynced.Store(true)
	p.syncIfListed()
}

func (p *Proxier) OnEndpointSliceAdd(s *discovery.EndpointSlice) { p.OnEndpointSliceUpdate(nil, s) }

func (p *Proxier) OnEndpointSliceUpdate(_, s *discovery.EndpointSlice) {
	if p.tracker.EndpointSliceChanged(s, false, p.clock.Now()) {
		metrics.EndpointChangesTotal.Inc()
		p.queued()
	}
}

func (p *Proxier) OnEndpointSliceDelete(s *discovery.EndpointSlice) {
	if p.tracker.EndpointSliceChanged(s, true, p.clock.Now()) {
		metrics.EndpointChangesTotal.Inc()
		p.queued()
	}
}

func (p *Proxier) OnEndpointSlicesSynced() {
	p.slicesSynced.Store(true)
	p.syncIfListed()
}

// syncIfListed asks for a sync once both initial lists are in (the *Synced
// calls ask for the first). A sync asked for earlier, by the initial adds,
// would return at once and hold the real first one back by a
// --iptables-min-sync-period.
func (p *Proxier) syncIfListed() {
	if p.servicesSynced.Load() && p.slicesSynced.Load() {
		p.Sync()
	}
}

// OnNodeChange takes this node's Node object (nil when deleted). A change in
// what the rules depend on (zone, addresses, pod CIDRs) forces a full sync.
func (p *Proxier) OnNodeChange(node *v1.Node) {
	if p.cfg.Health != nil {
		p.cfg.Health.SyncNode(node)
	}
	if node == nil {
		return // keep the last known configuration
	}
	next := p.cfg.NodeConfig(node)
	p.nodeMu.Lock()
	changed := !reflect.DeepEqual(next, p.nodeConf)
	if changed {
		p.nodeConf = next
	}
	p.nodeMu.Unlock()
	if changed {
		p.log.Info("Node configuration changed; resyncing all rules", "node", node.Name)
		p.queued()
	}
}

func (p *Proxier) currentNodeConfig() *rules.NodeConfig {
	p.nodeMu.Lock()
	defer p.nodeMu.Unlock()
	return p.nodeConf
}

func keyOf(ns, name string) types.NamespacedName {
	return types.NamespacedName{Namespace: ns, Name: name}
}

// syncProxyRules is the one place rules are written. Any failure makes the
// next sync a full one, because the change tracker has already been drained.
// ctx ends with the daemon: an iptables-restore in flight is then stopped,
// which changes nothing (it applies all or nothing).
func (p *Proxier) syncProxyRules(ctx context.Context) error {
	if !p.servicesSynced.Load() || !p.slicesSynced.Load() {
		if !p.waitLogged {
			p.log.Info("Not syncing until Services and EndpointSlices have been listed", "servicesListed", p.servicesSynced.Load(), "endpointSlicesListed", p.slicesSynced.Load())
			p.waitLogged = true
		}
		return nil
	}
	start := p.clock.Now()
	family := string(p.family)
	nodeConf := p.currentNodeConfig()
	full := p.fullRequested.Swap(false) || p.needFullSync || p.clock.Since(p.lastFullSync) > fullSyncPeriod || !reflect.DeepEqual(nodeConf, p.lastNodeConf)

	if full {
		p.ensureCounters()
	}

	changed, triggers, problems := p.tracker.Update(p.snapshot)
	if problems != nil {
		p.cfg.Problems(problems)
	}
	metrics.ServiceChangesPending.Set(0)
	metrics.EndpointChangesPending.Set(0)

	rendered, err := p.program(ctx, p.withCounters(nodeConf), full, changed)
	if rendered != nil {
		full = rendered.Full
	}
	elapsed := metrics.SinceInSeconds(start)
	metrics.SyncProxyRulesLatency.WithLabelValues(family).Observe(elapsed)
	if full {
		metrics.SyncFullProxyRulesLatency.WithLabelValues(family).Observe(elapsed)
	} else {
		metrics.SyncPartialProxyRulesLatency.WithLabelValues(family).Observe(elapsed)
	}
	if err != nil {
		p.needFullSync = true
		metrics.IPTablesRestoreFailuresTotal.WithLabelValues(family).Inc()
		if !full {
			metrics.IPTablesPartialRestoreFailuresTotal.WithLabelValues(family).Inc()
		}
		// One line per failure, at the default verbosity: what was being
		// written, how long it took, and when the (full) retry comes.
		p.log.Error(err, "Failed to sync proxy rules", "full", full, "servicePorts", len(p.snapshot.Services),
			"endpoints", p.snapshot.EndpointCount(), "elapsed", p.clock.Since(start), "retryIn", p.retryInterval())
		return err
	}
	p.needFullSync = false
	p.lastNodeConf = nodeConf
	if full {
		p.lastFullSync = start
	}
	for _, t := range triggers {
		metrics.NetworkProgrammingLatency.WithLabelValues(family).Observe(metrics.SinceInSeconds(t))
	}
	metrics.SyncProxyRulesLastTimestamp.WithLabelValues(family).SetToCurrentTime()
	if p.cfg.Health != nil {
		p.cfg.Health.Updated(p.family)
	}
	if p.cfg.Conntrack != nil && (full || model.ChangesUDP(p.snapshot, changed)) {
		p.cleanStaleUDPFlows()
	}
	if sh := p.cfg.ServiceHealth; sh != nil {
		if err := sh.SyncServices(model.HealthCheckNodePorts(p.snapshot)); err != nil {
			p.log.Error(err, "Failed to open service health checks")
		}
		sh.SyncEndpoints(model.LocalReadyEndpoints(p.snapshot, nodeConf.Topology.NodeName))
	}
	deleted, left := p.prog.DeleteStale(ctx)
	if left > 0 {
		p.Sync() // the next batch, after MinSyncPeriod
	}
	took := p.clock.Since(start)
	counts := []any{"servicePorts", len(p.snapshot.Services), "endpoints", p.snapshot.EndpointCount(),
		"chainsWritten", chainsIn(rendered.Data), "rulesWritten", rendered.NATRules + rendered.FilterRules}
	if full {
		// One line per full sync at the default verbosity, with what the
		// node now holds: "programmed" is told from "stuck" without -v.
		p.log.Info("Synced all proxy rules", slices.Concat(counts, []any{"layout", rendered.Index.Layout(), "natRules", rendered.NATRulesTotal,
			"filterRules", rendered.FilterRules, "restoreBytes", len(rendered.Data), "staleChainsDeleted", deleted, "staleChainsLeft", left, "elapsed", took},
			p.prog.Steps().LogValues())...)
	} else {
		p.log.V(2).Info("Synced proxy rules", slices.Concat(counts, []any{"changedServices", len(changed), "restoreBytes", len(rendered.Data), "staleChainsDeleted", deleted, "elapsed", took},
			p.prog.Steps().LogValues())...)
		p.partial.add(len(changed), took)
		if p.partial.since.IsZero() {
			p.partial.since = start
		} else if p.clock.Since(p.partial.since) >= partialSummaryInterval {
			p.log.Info("Partial syncs since the last summary", append(counts, "syncs", p.partial.syncs, "changedServices", p.partial.changed,
				"maxElapsed", p.partial.maxElapsed, "since", p.partial.since.Format(time.RFC3339))...)
			p.partial = partialSummary{since: p.clock.Now()}
		}
	}
	return nil
}

// ensureCounters makes kube-proxy's nfacct counters, as kube-proxy does on
// every full sync (a flushed node may have lost them), and keeps the names
// of those that exist: a rule naming a missing one would fail the restore.
func (p *Proxier) ensureCounters() {
	if p.cfg.NFAcct == nil {
		return
	}
	var have []string
	for _, name := range iptables.KubeProxyNFAcctCounters() {
		if err := p.cfg.NFAcct.Ensure(name); err != nil {
			p.log.Error(err, "Failed to create nfacct counter; its metric is not updated and the rules do not count into it", "counter", name)
			continue
		}
		have = append(have, name)
	}
	p.counters = have
}

// withCounters is nodeConf with the nfacct counters the rules may count into.
func (p *Proxier) withCounters(nodeConf *rules.NodeConfig) *rules.NodeConfig {
	if len(p.counters) == 0 {
		return nodeConf
	}
	c := *nodeConf
	c.NFAcct = p.counters
	return &c
}

// program brings the ipsets up to date, then the rules, and reports the
// rule counts.
func (p *Proxier) program(ctx context.Context, nodeConf *rules.NodeConfig, full bool, changed map[types.NamespacedName]bool) (*rules.Rendered, error) {
	family := string(p.family)
	if p.cfg.Sets != nil {
		if err := p.cfg.Sets(ctx, nodeConf); err != nil {
			p.log.Error(err, "Failed to sync ipsets; rules not written this time")
			return nil, fmt.Errorf("ipsets: %w", err)
		}
	}
	rendered, err := p.prog.Program(ctx, ProgramRequest{Snapshot: p.snapshot, Config: nodeConf, Full: full, Changed: changed})
	if err != nil {
		return rendered, err
	}
	metrics.IPTablesRulesTotal.WithLabelValues("filter", family).Set(float64(rendered.FilterRules))
	metrics.IPTablesRulesLastSync.WithLabelValues("filter", family).Set(float64(rendered.FilterRules))
	metrics.IPTablesRulesTotal.WithLabelValues("nat", family).Set(float64(rendered.NATRulesTotal))
	metrics.IPTablesRulesLastSync.WithLabelValues("nat", family).Set(float64(rendered.NATRules))
	metrics.SyncProxyRulesNoLocalEndpointsTotal.WithLabelValues("internal", family).Set(float64(rendered.NoLocalEndpointsInternal))
	metrics.SyncProxyRulesNoLocalEndpointsTotal.WithLabelValues("external", family).Set(float64(rendered.NoLocalEndpointsExternal))
	return rendered, nil
}

// cleanStaleUDPFlows deletes UDP conntrack entries that still point at
// endpoints the rules no longer use. Failures are logged: the next change
// tries again.
func (p *Proxier) cleanStaleUDPFlows() {
	start := p.clock.Now()
	family := string(p.family)
	flows, err := p.cfg.Conntrack.ListUDP()
	if err != nil {
		p.log.Error(err, "Failed to list conntrack entries; stale UDP flows stay")
		return
	}
	stale := model.StaleUDPFlows(p.snapshot, flows)
	deleted, err := p.cfg.Conntrack.Delete(stale)
	if err != nil {
		p.log.Error(err, "Failed to delete stale UDP conntrack entries", "deleted", deleted, "stale", len(stale))
	}
	metrics.ReconcileConntrackFlowsLatency.WithLabelValues(family).Observe(metrics.SinceInSeconds(start))
	metrics.ReconcileConntrackFlowsDeletedEntriesTotal.WithLabelValues(family).Add(float64(deleted))
	p.log.V(4).Info("Reconciled UDP conntrack entries", "listed", len(flows), "deleted", deleted)
}
