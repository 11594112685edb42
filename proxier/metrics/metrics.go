// Package metrics defines svcproxy's Prometheus metrics. Where a metric means
// what a kube-proxy (v1.36, iptables mode) metric means, it has kube-proxy's
// name, help text, labels and buckets, so existing dashboards and alerts keep
// working.
//
// The metrics are package-level collectors (the proxier updates them from
// wherever it is), registered into a dedicated registry rather than the
// global prometheus one. Call Register once at start-up (it is idempotent)
// and serve Registry with ServeMetrics or Handler.
package metrics

import (
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

const subsystem = "kubeproxy"

// Label names, as kube-proxy uses them.
const (
	// LabelIPFamily is "IPv4" or "IPv6" (the values of v1.IPFamily).
	LabelIPFamily = "ip_family"
	// LabelTable is an iptables table name: "filter", "nat", ...
	LabelTable = "table"
	// LabelTrafficPolicy is "internal" or "external".
	LabelTrafficPolicy = "traffic_policy"
	// LabelCode is an HTTP status code, e.g. "200".
	LabelCode = "code"
)

// kube-proxy's metrics are all ALPHA; component-base prefixes their help text
// with the stability level, and we keep the exposition identical.
func help(s string) string { return "[ALPHA] " + s }

// syncBuckets are kube-proxy's buckets for sync durations: 1ms doubling to ~16s.
var syncBuckets = prometheus.ExponentialBuckets(0.001, 2, 15)

// networkProgrammingBuckets are kube-proxy's buckets for network programming
// latency: 0.25s, 0.5s, 1..59s by 1s, 60..115s by 5s, 120..300s by 30s.
var networkProgrammingBuckets = func() []float64 {
	b := append([]float64{}, prometheus.LinearBuckets(0.25, 0.25, 2)...)
	b = append(b, prometheus.LinearBuckets(1, 1, 59)...)
	b = append(b, prometheus.LinearBuckets(60, 5, 12)...)
	b = append(b, prometheus.LinearBuckets(120, 30, 7)...)
	return b
}()

var (
	// SyncProxyRulesLatency is the duration of one sync of proxy rules, full
	// or partial.
	SyncProxyRulesLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Subsystem: subsystem,
		Name:      "sync_proxy_rules_duration_seconds",
		Help:      help("SyncProxyRules latency in seconds"),
		Buckets:   syncBuckets,
	}, []string{LabelIPFamily})

	// SyncFullProxyRulesLatency is the duration of one full sync.
	SyncFullProxyRulesLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Subsystem: subsystem,
		Name:      "sync_full_proxy_rules_duration_seconds",
		Help:      help("SyncProxyRules latency in seconds for full resyncs"),
		Buckets:   syncBuckets,
	}, []string{LabelIPFamily})

	// SyncPartialProxyRulesLatency is the duration of one partial sync.
	SyncPartialProxyRulesLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Subsystem: subsystem,
		Name:      "sync_partial_proxy_rules_duration_seconds",
		Help:      help("SyncProxyRules latency in seconds for partial resyncs"),
		Buckets:   syncBuckets,
	}, []string{LabelIPFamily})

	// SyncProxyRulesLastTimestamp is when proxy rules were last synced
	// successfully (unix seconds).
	SyncProxyRulesLastTimestamp = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Subsystem: subsystem,
		Name:      "sync_proxy_rules_last_timestamp_seconds",
		Help:      help("The last time proxy rules were successfully synced"),
	}, []string{LabelIPFamily})

	// SyncProxyRulesLastQueuedTimestamp is when a sync was last requested
	// (unix seconds). Much later than SyncProxyRulesLastTimestamp means hung.
	SyncProxyRulesLastQueuedTimestamp = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Subsystem: subsystem,
		Name:      "sync_proxy_rules_last_queued_timestamp_seconds",
		Help:      help("The last time a sync of proxy rules was queued"),
	}, []string{LabelIPFamily})

	// NetworkProgrammingLatency is the time from a Service or EndpointSlice
	// change (the EndpointSlice's last-change-trigger-time annotation) to the
	// sync that programmed it. Observed once per changed EndpointSlice.
	NetworkProgrammingLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Subsystem: subsystem,
		Name:      "network_programming_duration_seconds",
		Help:      help("In Cluster Network Programming Latency in seconds"),
		Buckets:   networkProgrammingBuckets,
	}, []string{LabelIPFamily})

	// EndpointChangesPending is the number of EndpointSlice changes not yet synced.
	EndpointChangesPending = prometheus.NewGauge(prometheus.GaugeOpts{
		Subsystem: subsystem,
		Name:      "sync_proxy_rules_endpoint_changes_pending",
		Help:      help("Pending proxy rules Endpoint changes"),
	})

	// EndpointChangesTotal counts EndpointSlice changes seen.
	EndpointChangesTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Subsystem: subsystem,
		Name:      "sync_proxy_rules_endpoint_changes_total",
		Help:      help("Cumulative proxy rules Endpoint changes"),
	})

	// ServiceChangesPending is the number of Service changes not yet synced.
	ServiceChangesPending = prometheus.NewGauge(prometheus.GaugeOpts{
		Subsystem: subsystem,
		Name:      "sync_proxy_rules_service_changes_pending",
		Help:      help("Pending proxy rules Service changes"),
	})

	// ServiceChangesTotal counts Service changes seen.
	ServiceChangesTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Subsystem: subsystem,
		Name:      "sync_proxy_rules_service_changes_total",
		Help:      help("Cumulative proxy rules Service changes"),
	})

	// IPTablesRestoreFailuresTotal counts failed iptables-restore runs.
	IPTablesRestoreFailuresTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Subsystem: subsystem,
		Name:      "sync_proxy_rules_iptables_restore_failures_total",
		Help:      help("Cumulative proxy iptables restore failures"),
	}, []string{LabelIPFamily})

	// IPTablesPartialRestoreFailuresTotal counts failed partial restores
	// (each one is followed by a full sync).
	IPTablesPartialRestoreFailuresTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Subsystem: subsystem,
		Name:      "sync_proxy_rules_iptables_partial_restore_failures_total",
		Help:      help("Cumulative proxy iptables partial restore failures"),
	}, []string{LabelIPFamily})

	// IPTablesRulesTotal is the number of rules svcproxy owns, per table.
	IPTablesRulesTotal = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Subsystem: subsystem,
		Name:      "sync_proxy_rules_iptables_total",
		Help:      help("Total number of iptables rules owned by kube-proxy"),
	}, []string{LabelTable, LabelIPFamily})

	// IPTablesRulesLastSync is the number of rules written in the last sync,
	// per table.
	IPTablesRulesLastSync = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Subsystem: subsystem,
		Name:      "sync_proxy_rules_iptables_last",
		Help:      help("Number of iptables rules written by kube-proxy in last sync"),
	}, []string{LabelTable, LabelIPFamily})

	// SyncProxyRulesNoLocalEndpointsTotal is the number of services with a
	// Local traffic policy ("internal" or "external") and no local endpoints.
	// It is a gauge despite the _total suffix, as in kube-proxy.
	SyncProxyRulesNoLocalEndpointsTotal = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Subsystem: subsystem,
		Name:      "sync_proxy_rules_no_local_endpoints_total",
		Help:      help("Number of services with a Local traffic policy and no endpoints"),
	}, []string{LabelTrafficPolicy, LabelIPFamily})

	// ProxyHealthzTotal counts /healthz responses of the healthz server by
	// status code.
	ProxyHealthzTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Subsystem: subsystem,
		Name:      "proxy_healthz_total",
		Help:      help("Cumulative proxy healthz HTTP status"),
	}, []string{LabelCode})

	// ProxyLivezTotal counts /livez responses of the healthz server by
	// status code.
	ProxyLivezTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Subsystem: subsystem,
		Name:      "proxy_livez_total",
		Help:      help("Cumulative proxy livez HTTP status"),
	}, []string{LabelCode})

	// ReconcileConntrackFlowsLatency is the duration of one conntrack cleanup
	// pass.
	ReconcileConntrackFlowsLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Subsystem: subsystem,
		Name:      "conntrack_reconciler_sync_duration_seconds",
		Help:      help("ReconcileConntrackFlowsLatency latency in seconds"),
		Buckets:   syncBuckets,
	}, []string{LabelIPFamily})

	// ReconcileConntrackFlowsDeletedEntriesTotal counts conntrack entries
	// deleted by the cleanup.
	ReconcileConntrackFlowsDeletedEntriesTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Subsystem: subsystem,
		Name:      "conntrack_reconciler_deleted_entries_total",
		Help:      help("Cumulative conntrack flows deleted by conntrack reconciler"),
	}, []string{LabelIPFamily})
)

// svcproxy's own metrics, for what kube-proxy has no metric of the same
// meaning; they are named svcproxy_*.
const ownSubsystem = "svcproxy"

// LabelRead names what a failed read was reading.
const LabelRead = "read"

var (
	// IPTablesReadFailuresTotal counts failed reads of the kernel's rules
	// (listing a table's chains, saving one chain).
	IPTablesReadFailuresTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Subsystem: ownSubsystem,
		Name:      "iptables_read_failures_total",
		Help:      "Cumulative failures to read rules back from the kernel, by what was read",
	}, []string{LabelIPFamily, LabelRead})

	// StaleChainsPending is how many chains of ours no rule uses and are
	// still to be deleted (a batch per sync).
	StaleChainsPending = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Subsystem: ownSubsystem,
		Name:      "stale_chains_pending",
		Help:      "Chains no rule uses any more that are waiting to be deleted",
	}, []string{LabelIPFamily})

	// StaleChainsDeletedTotal counts stale chains deleted.
	StaleChainsDeletedTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Subsystem: ownSubsystem,
		Name:      "stale_chains_deleted_total",
		Help:      "Cumulative stale chains deleted",
	}, []string{LabelIPFamily})

	// StaleChainDeletionFailuresTotal counts failed deletions of a batch of
	// stale chains.
	StaleChainDeletionFailuresTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Subsystem: ownSubsystem,
		Name:      "stale_chain_deletion_failures_total",
		Help:      "Cumulative failures to delete a batch of stale chains",
	}, []string{LabelIPFamily})
)

// all lists every svcproxy collector, in registration order.
var all = []prometheus.Collector{
	SyncProxyRulesLatency,
	SyncFullProxyRulesLatency,
	SyncPartialProxyRulesLatency,
	SyncProxyRulesLastTimestamp,
	SyncProxyRulesLastQueuedTimestamp,
	NetworkProgrammingLatency,
	EndpointChangesPending,
	EndpointChangesTotal,
	ServiceChangesPending,
	ServiceChangesTotal,
	IPTablesRestoreFailuresTotal,
	IPTablesPartialRestoreFailuresTotal,
	IPTablesRulesTotal,
	IPTablesRulesLastSync,
	SyncProxyRulesNoLocalEndpointsTotal,
	ProxyHealthzTotal,
	ProxyLivezTotal,
	ReconcileConntrackFlowsLatency,
	ReconcileConntrackFlowsDeletedEntriesTotal,
	IPTablesReadFailuresTotal,
	StaleChainsPending,
	StaleChainsDeletedTotal,
	StaleChainDeletionFailuresTotal,
}

var (
	registry     = prometheus.NewRegistry()
	registerOnce sync.Once
)

// Register registers svcproxy's metrics, plus the standard Go runtime and
// process collectors (as kube-proxy's registry has), into Registry. It is
// idempotent and safe to call from several goroutines. Metrics can be
// updated before Register is called; they are simply not exported until then.
func Register() {
	registerOnce.Do(func() {
		registry.MustRegister(collectors.NewGoCollector())
		registry.MustRegister(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		registry.MustRegister(all...)
	})
}

// Registry returns svcproxy's dedicated registry. It holds nothing until
// Register is called.
func Registry() *prometheus.Registry { return registry }

// Handler returns an http.Handler serving Registry in the Prometheus
// exposition format. It does not call Register.
func Handler() http.Handler {
	return promhttp.HandlerFor(registry, promhttp.HandlerOpts{})
}

// SinceInSeconds returns the time since start in seconds, for observing
// durations.
func SinceInSeconds(start time.Time) float64 {
	return time.Since(start).Seconds()
}
