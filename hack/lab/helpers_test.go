package lab

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestPoll(t *testing.T) {
	ctx := context.Background()
	calls := 0
	if err := Poll(ctx, time.Minute, time.Millisecond, func() error { // returns on success: the minute is only a bound
		if calls++; calls < 3 {
			return errors.New("not yet")
		}
		return nil
	}); err != nil || calls != 3 {
		t.Errorf("success on the third call: err %v after %d calls", err, calls)
	}

	calls = 0
	stop := fmt.Errorf("%w: process exited", ErrStop)
	if err := Poll(ctx, time.Minute, time.Millisecond, func() error { calls++; return stop }); err != stop || calls != 1 {
		t.Errorf("ErrStop: got %v after %d calls, want the stopping error at once", err, calls)
	}

	calls = 0
	last := errors.New("still not")
	err := Poll(ctx, 50*time.Millisecond, 20*time.Millisecond, func() error { calls++; return last })
	if !errors.Is(err, last) || !strings.Contains(err.Error(), "after 50ms") {
		t.Errorf("limit: got %v, want it to name the limit and wrap the last error", err)
	}
	if calls < 1 || calls > 50/20+2 {
		t.Errorf("limit 50ms every 20ms: %d calls, want at most %d", calls, 50/20+2)
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	err = Poll(cctx, time.Minute, time.Second, func() error { return last })
	if !errors.Is(err, context.Canceled) || !errors.Is(err, last) {
		t.Errorf("cancelled: got %v, want both ctx's error and the last one", err)
	}
}

// echoOnLoopback serves the echo server's protocol on 127.0.0.1 in this
// namespace, answering as name; it returns the port.
func echoOnLoopback(t *testing.T, name string) int {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "%s %s\n", name, c.RemoteAddr())
			c.Close()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

func TestHits(t *testing.T) {
	port := echoOnLoopback(t, "be-1")
	s := ProbeSpec{Proto: "tcp", Addr: "127.0.0.1", Port: port, Timeout: 2 * time.Second}
	by, clients, err := Hits(s, 5)
	if err != nil || by["be-1"] != 5 || len(by) != 1 || !clients["127.0.0.1"] || len(clients) != 1 {
		t.Errorf("Hits = %v, %v, %v; want 5 answers from be-1 seeing 127.0.0.1", by, clients, err)
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	s.Port = closed
	if _, _, err := Hits(s, 3); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "request 1/3") {
		t.Errorf("Hits to a closed port = %v, want ErrRefused naming request 1/3", err)
	}
}

const exposition = `# HELP kubeproxy_sync_proxy_rules_last_timestamp_seconds The last time proxy rules were successfully synced.
# TYPE kubeproxy_sync_proxy_rules_last_timestamp_seconds gauge
kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family="IPv4"} 1.7e+09
kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family="IPv6"} 1.8e+09
# HELP kubeproxy_sync_proxy_rules_iptables_total Total rules.
# TYPE kubeproxy_sync_proxy_rules_iptables_total gauge
kubeproxy_sync_proxy_rules_iptables_total{ip_family="IPv4",table="filter"} 7
kubeproxy_sync_proxy_rules_iptables_total{ip_family="IPv4",table="nat"} 30
kubeproxy_sync_proxy_rules_iptables_total{ip_family="IPv6",table="nat"} 4
# HELP kubeproxy_sync_proxy_rules_duration_seconds Sync latency.
# TYPE kubeproxy_sync_proxy_rules_duration_seconds histogram
kubeproxy_sync_proxy_rules_duration_seconds_bucket{ip_family="IPv4",le="1"} 2
kubeproxy_sync_proxy_rules_duration_seconds_bucket{ip_family="IPv4",le="+Inf"} 3
kubeproxy_sync_proxy_rules_duration_seconds_sum{ip_family="IPv4"} 2.5
kubeproxy_sync_proxy_rules_duration_seconds_count{ip_family="IPv4"} 3
kubeproxy_sync_proxy_rules_duration_seconds_bucket{ip_family="IPv6",le="1"} 9
kubeproxy_sync_proxy_rules_duration_seconds_bucket{ip_family="IPv6",le="+Inf"} 9
kubeproxy_sync_proxy_rules_duration_seconds_sum{ip_family="IPv6"} 0.5
kubeproxy_sync_proxy_rules_duration_seconds_count{ip_family="IPv6"} 9
# HELP process_resident_memory_bytes Resident memory size in bytes.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 4.2e+07
# HELP kubeproxy_sync_proxy_rules_restore_failures_total Failures.
# TYPE kubeproxy_sync_proxy_rules_restore_failures_total counter
kubeproxy_sync_proxy_rules_restore_failures_total 1
`

func TestScrapeMetricsFlat(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		fmt.Fprint(w, exposition)
	}))
	defer srv.Close()
	m, err := ScrapeMetrics(context.Background(), "", srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	want := map[Family]map[string]float64{
		IPv4: {
			"kubeproxy_sync_proxy_rules_last_timestamp_seconds":         1.7e9,
			"kubeproxy_sync_proxy_rules_iptables_total":                 37,
			`kubeproxy_sync_proxy_rules_iptables_total{table="filter"}`: 7,
			`kubeproxy_sync_proxy_rules_iptables_total{table="nat"}`:    30,
			"kubeproxy_sync_proxy_rules_duration_seconds_sum":           2.5,
			"kubeproxy_sync_proxy_rules_duration_seconds_count":         3,
			"process_resident_memory_bytes":                             4.2e7,
			"kubeproxy_sync_proxy_rules_restore_failures_total":         1,
		},
		IPv6: {
			"kubeproxy_sync_proxy_rules_last_timestamp_seconds":      1.8e9,
			"kubeproxy_sync_proxy_rules_iptables_total":              4,
			`kubeproxy_sync_proxy_rules_iptables_total{table="nat"}`: 4,
			"kubeproxy_sync_proxy_rules_duration_seconds_sum":        0.5,
			"kubeproxy_sync_proxy_rules_duration_seconds_count":      9,
			"process_resident_memory_bytes":                          4.2e7,
			"kubeproxy_sync_proxy_rules_restore_failures_total":      1,
		},
	}
	for fam, w := range want {
		if got := m.Flat(fam); !maps.Equal(got, w) {
			keys := slices.Sorted(maps.Keys(got))
			t.Errorf("Flat(%v):\n got %v\n(keys %q)\nwant %v", fam, got, keys, w)
		}
	}

	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "not metrics {{{\n")
	}))
	defer bad.Close()
	if _, err := ScrapeMetrics(context.Background(), "", bad.URL); err == nil {
		t.Error("garbage parsed as metrics")
	}
}

// deadPid returns the pid of a process that has exited.
func deadPid(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Skipf("cannot run true: %v", err)
	}
	if pidAlive(cmd.Process.Pid) {
		t.Skipf("pid %d reused at once", cmd.Process.Pid)
	}
	return cmd.Process.Pid
}

func TestRunPrefixNames(t *testing.T) {
	for _, bad := range []string{"", "svpe2", "Svp", "svp-x", "toolong", "1svp"} {
		if _, err := RunPrefix(bad); err == nil {
			t.Errorf("RunPrefix(%q) accepted", bad)
		}
	}
	p, err := RunPrefix("svpzz")
	if err != nil {
		t.Logf("DownStale: %v", err) // nothing of stem svpzz exists; an error here is not this test's concern
	}
	if want := "svpzz" + strconv.Itoa(os.Getpid()); p != want || !prefixRE.MatchString(p) {
		t.Errorf("RunPrefix = %q, want %q", p, want)
	}

	dead := strconv.Itoa(deadPid(t))
	self := strconv.Itoa(os.Getpid())
	names := []string{
		"svpdp" + dead, "svpdp" + dead, // stale, listed once
		"svpdp" + self, // alive: kept
		// not of stem svpdp:
		"svpdpx" + dead, "svpd" + dead, "svpdp" + dead + "x", "other", "",
	}
	got := stalePrefixes("svpdp", names, func(s string) string { return s })
	if want := []string{"svpdp" + dead}; !slices.Equal(got, want) {
		t.Errorf("stalePrefixes = %q, want %q", got, want)
	}
}
