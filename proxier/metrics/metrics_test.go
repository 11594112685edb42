package metrics

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
)

func TestRegisteredNamesAndLabels(t *testing.T) {
	Register()
	Register() // idempotent: must not panic with AlreadyRegisteredError

	// Vectors export nothing until a child exists; touch each one.
	SyncProxyRulesLatency.WithLabelValues("IPv4").Observe(0.01)
	SyncFullProxyRulesLatency.WithLabelValues("IPv4").Observe(0.01)
	SyncPartialProxyRulesLatency.WithLabelValues("IPv4").Observe(0.01)
	SyncProxyRulesLastTimestamp.WithLabelValues("IPv4").SetToCurrentTime()
	SyncProxyRulesLastQueuedTimestamp.WithLabelValues("IPv4").SetToCurrentTime()
	NetworkProgrammingLatency.WithLabelValues("IPv4").Observe(1)
	EndpointChangesPending.Set(1)
	EndpointChangesTotal.Inc()
	ServiceChangesPending.Set(1)
	ServiceChangesTotal.Inc()
	IPTablesRestoreFailuresTotal.WithLabelValues("IPv4").Inc()
	IPTablesPartialRestoreFailuresTotal.WithLabelValues("IPv4").Inc()
	IPTablesRulesTotal.WithLabelValues("nat", "IPv4").Set(10)
	IPTablesRulesLastSync.WithLabelValues("nat", "IPv4").Set(3)
	SyncProxyRulesNoLocalEndpointsTotal.WithLabelValues("internal", "IPv4").Set(0)
	ProxyHealthzTotal.WithLabelValues("200").Inc()
	ProxyLivezTotal.WithLabelValues("200").Inc()
	ReconcileConntrackFlowsLatency.WithLabelValues("IPv4").Observe(0.01)
	ReconcileConntrackFlowsDeletedEntriesTotal.WithLabelValues("IPv4").Inc()

	fams, err := Registry().Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	byName := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		byName[f.GetName()] = f
	}

	for _, tc := range []struct {
		name   string
		typ    dto.MetricType
		labels []string
	}{
		{"kubeproxy_sync_proxy_rules_duration_seconds", dto.MetricType_HISTOGRAM, []string{"ip_family"}},
		{"kubeproxy_sync_full_proxy_rules_duration_seconds", dto.MetricType_HISTOGRAM, []string{"ip_family"}},
		{"kubeproxy_sync_partial_proxy_rules_duration_seconds", dto.MetricType_HISTOGRAM, []string{"ip_family"}},
		{"kubeproxy_sync_proxy_rules_last_timestamp_seconds", dto.MetricType_GAUGE, []string{"ip_family"}},
		{"kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds", dto.MetricType_GAUGE, []string{"ip_family"}},
		{"kubeproxy_network_programming_duration_seconds", dto.MetricType_HISTOGRAM, []string{"ip_family"}},
		{"kubeproxy_sync_proxy_rules_endpoint_changes_pending", dto.MetricType_GAUGE, nil},
		{"kubeproxy_sync_proxy_rules_endpoint_changes_total", dto.MetricType_COUNTER, nil},
		{"kubeproxy_sync_proxy_rules_service_changes_pending", dto.MetricType_GAUGE, nil},
		{"kubeproxy_sync_proxy_rules_service_changes_total", dto.MetricType_COUNTER, nil},
		{"kubeproxy_sync_proxy_rules_iptables_restore_failures_total", dto.MetricType_COUNTER, []string{"ip_family"}},
		{"kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total", dto.MetricType_COUNTER, []string{"ip_family"}},
		{"kubeproxy_sync_proxy_rules_iptables_total", dto.MetricType_GAUGE, []string{"ip_family", "table"}},
		{"kubeproxy_sync_proxy_rules_iptables_last", dto.MetricType_GAUGE, []string{"ip_family", "table"}},
		{"kubeproxy_sync_proxy_rules_no_local_endpoints_total", dto.MetricType_GAUGE, []string{"ip_family", "traffic_policy"}},
		{"kubeproxy_proxy_healthz_total", dto.MetricType_COUNTER, []string{"code"}},
		{"kubeproxy_proxy_livez_total", dto.MetricType_COUNTER, []string{"code"}},
		{"kubeproxy_conntrack_reconciler_sync_duration_seconds", dto.MetricType_HISTOGRAM, []string{"ip_family"}},
		{"kubeproxy_conntrack_reconciler_deleted_entries_total", dto.MetricType_COUNTER, []string{"ip_family"}},
		{"go_goroutines", dto.MetricType_GAUGE, nil},
	} {
		f, ok := byName[tc.name]
		if !ok {
			t.Errorf("metric %s not gathered", tc.name)
			continue
		}
		if f.GetType() != tc.typ {
			t.Errorf("%s: type %v, want %v", tc.name, f.GetType(), tc.typ)
		}
		if strings.HasPrefix(tc.name, "kubeproxy_") && !strings.HasPrefix(f.GetHelp(), "[ALPHA] ") {
			t.Errorf("%s: help %q lacks kube-proxy's [ALPHA] prefix", tc.name, f.GetHelp())
		}
		var got []string
		for _, lp := range f.GetMetric()[0].GetLabel() {
			got = append(got, lp.GetName())
		}
		if !slices.Equal(got, tc.labels) { // the registry sorts label names
			t.Errorf("%s: labels %v, want %v", tc.name, got, tc.labels)
		}
	}

	// kube-proxy's buckets.
	sync := byName["kubeproxy_sync_proxy_rules_duration_seconds"].GetMetric()[0].GetHistogram().GetBucket()
	if len(sync) != 15 || sync[0].GetUpperBound() != 0.001 || sync[14].GetUpperBound() != 16.384 {
		t.Errorf("sync buckets: %d buckets from %v to %v, want 15 from 0.001 to 16.384",
			len(sync), sync[0].GetUpperBound(), sync[len(sync)-1].GetUpperBound())
	}
	np := byName["kubeproxy_network_programming_duration_seconds"].GetMetric()[0].GetHistogram().GetBucket()
	var bounds []float64
	for _, b := range np {
		bounds = append(bounds, b.GetUpperBound())
	}
	if len(bounds) != 80 || bounds[0] != 0.25 || bounds[1] != 0.5 || bounds[2] != 1 || bounds[61] != 60 || bounds[73] != 120 || bounds[79] != 300 {
		t.Errorf("network programming buckets = %v", bounds)
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading %s: %v", url, err)
	}
	return resp.StatusCode, string(body)
}

func TestMux(t *testing.T) {
	Register()
	ServiceChangesTotal.Inc()
	srv := httptest.NewServer(NewMux(Registry()))
	defer srv.Close()

	if code, body := get(t, srv.URL+"/proxyMode"); code != 200 || body != "iptables" {
		t.Errorf("/proxyMode = %d %q, want 200 \"iptables\"", code, body)
	}
	for _, p := range []string{"/healthz", "/healthz/ping"} {
		if code, body := get(t, srv.URL+p); code != 200 || body != "ok" {
			t.Errorf("%s = %d %q, want 200 \"ok\"", p, code, body)
		}
	}
	code, body := get(t, srv.URL+"/metrics")
	if code != 200 || !strings.Contains(body, "kubeproxy_sync_proxy_rules_service_changes_total ") {
		t.Errorf("/metrics = %d, body lacks kubeproxy_sync_proxy_rules_service_changes_total:\n%s", code, body)
	}
	if code, _ := get(t, srv.URL+"/nope"); code != 404 {
		t.Errorf("/nope = %d, want 404", code)
	}
}

func TestServeStopsOnCancel(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Skipf("cannot listen on loopback: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, ln, NewMux(Registry())) }()

	if code, body := get(t, "http://"+ln.Addr().String()+"/proxyMode"); code != 200 || body != "iptables" {
		t.Errorf("/proxyMode = %d %q", code, body)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve returned %v after cancel, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not return after cancel")
	}
}

func TestServeMetricsBadAddress(t *testing.T) {
	err := ServeMetrics(context.Background(), "not-an-address", Registry())
	if err == nil || !strings.Contains(err.Error(), "not-an-address") {
		t.Fatalf("ServeMetrics(bad address) = %v, want an error naming the address", err)
	}
}
