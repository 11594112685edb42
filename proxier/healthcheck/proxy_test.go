package healthcheck

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/svcproxy/svcproxy/proxier/metrics"
)

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func newTest(t *testing.T) (*ProxyHealth, *clocktesting.FakePassiveClock) {
	t.Helper()
	clk := clocktesting.NewFakePassiveClock(t0)
	h, err := NewProxyHealth(ProxyHealthConfig{HealthTimeout: time.Minute, Clock: clk})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return h, clk
}

func TestConfig(t *testing.T) {
	var c ProxyHealthConfig
	c.Defaults()
	if c.BindAddress != "0.0.0.0:10256" || c.HealthTimeout != time.Minute || c.Clock == nil {
		t.Errorf("defaults = %+v", c)
	}
	for _, tc := range []struct {
		cfg  ProxyHealthConfig
		want string
	}{
		{ProxyHealthConfig{BindAddress: "[::]:10256"}, ""},
		{ProxyHealthConfig{BindAddress: ":10256"}, ""},
		{ProxyHealthConfig{BindAddress: "0.0.0.0"}, `BindAddress "0.0.0.0": must be IP:port`},
		{ProxyHealthConfig{BindAddress: "foo:10256"}, `"foo" is not an IP address`},
		{ProxyHealthConfig{BindAddress: "0.0.0.0:99999"}, `"99999" is not a valid port`},
		{ProxyHealthConfig{HealthTimeout: -time.Second}, `HealthTimeout (-1s) must be positive`},
	} {
		_, err := NewProxyHealth(tc.cfg)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("NewProxyHealth(%+v): unexpected error %v", tc.cfg, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("NewProxyHealth(%+v) = %v, want error containing %q", tc.cfg, err, tc.want)
		}
	}
}

func TestHealthRule(t *testing.T) {
	h, clk := newTest(t)
	step := func(d time.Duration) { clk.SetTime(clk.Now().Add(d)) }
	expect := func(want bool, what string) {
		t.Helper()
		if got := h.IsHealthy(); got != want {
			t.Fatalf("%s: IsHealthy = %v, want %v (%+v)", what, got, want, h.Health())
		}
	}

	expect(true, "initial")
	h.QueueUpdated(v1.IPv4Protocol)
	step(time.Hour)
	expect(true, "queued but never Updated: still starting up")

	h.Updated(v1.IPv4Protocol)
	expect(true, "after Updated")
	step(time.Hour)
	expect(true, "nothing queued, long after last update")

	h.QueueUpdated(v1.IPv4Protocol)
	step(30 * time.Second)
	h.QueueUpdated(v1.IPv4Protocol) // a later change does not restart the clock
	step(30*time.Second - time.Nanosecond)
	expect(true, "oldest queued change just under the timeout")
	step(time.Nanosecond)
	expect(false, "oldest queued change at the timeout")

	h.Updated(v1.IPv4Protocol)
	expect(true, "sync caught up")
	st := h.Health()
	if !st.LastUpdated.Equal(clk.Now()) || !st.CurrentTime.Equal(clk.Now()) {
		t.Errorf("Health times = %v / %v, want %v", st.LastUpdated, st.CurrentTime, clk.Now())
	}
}

func TestDualStack(t *testing.T) {
	h, clk := newTest(t)
	h.Updated(v1.IPv4Protocol)
	h.Updated(v1.IPv6Protocol)
	h.QueueUpdated(v1.IPv4Protocol)
	h.QueueUpdated(v1.IPv6Protocol)
	clk.SetTime(t0.Add(2 * time.Minute))
	h.Updated(v1.IPv6Protocol)

	st := h.Health()
	if st.Healthy {
		t.Errorf("overall healthy with a stuck IPv4 proxier")
	}
	if st.Status[v1.IPv4Protocol].Healthy || !st.Status[v1.IPv4Protocol].LastUpdated.Equal(t0) {
		t.Errorf("IPv4 status = %+v", st.Status[v1.IPv4Protocol])
	}
	if !st.Status[v1.IPv6Protocol].Healthy || !st.LastUpdated.Equal(t0.Add(2*time.Minute)) {
		t.Errorf("IPv6 status = %+v, lastUpdated %v", st.Status[v1.IPv6Protocol], st.LastUpdated)
	}
}

func TestNodeEligible(t *testing.T) {
	h, _ := newTest(t)
	now := metav1.NewTime(t0)
	for _, tc := range []struct {
		name string
		node *v1.Node
		want bool
	}{
		{"ready node", &v1.Node{}, true},
		{"deleted", nil, false},
		{"being deleted", &v1.Node{ObjectMeta: metav1.ObjectMeta{DeletionTimestamp: &now}}, false},
		{"autoscaler taint", &v1.Node{Spec: v1.NodeSpec{Taints: []v1.Taint{{Key: "other"}, {Key: ToBeDeletedTaint, Effect: v1.TaintEffectNoSchedule}}}}, false},
		{"other taint", &v1.Node{Spec: v1.NodeSpec{Taints: []v1.Taint{{Key: "other"}}}}, true},
	} {
		h.SyncNode(tc.node)
		if got := h.NodeEligible(); got != tc.want {
			t.Errorf("%s: NodeEligible = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// response is Status as decoded from the wire, with the raw keys kept to
// check the exact JSON shape.
type response struct {
	code int
	st   Status
	keys map[string]json.RawMessage
}

func fetch(t *testing.T, url string) response {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s: Content-Type %q", url, ct)
	}
	body, _ := io.ReadAll(resp.Body)
	r := response{code: resp.StatusCode}
	if err := json.Unmarshal(body, &r.st); err != nil {
		t.Fatalf("%s: bad JSON %q: %v", url, body, err)
	}
	_ = json.Unmarshal(body, &r.keys)
	return r
}

func TestHTTP(t *testing.T) {
	h, clk := newTest(t)
	srv := httptest.NewServer(h.Handler())
	defer srv.Close()
	healthz503 := counterValue(t, metrics.ProxyHealthzTotal.WithLabelValues("503"))
	healthz200 := counterValue(t, metrics.ProxyHealthzTotal.WithLabelValues("200"))
	livez200 := counterValue(t, metrics.ProxyLivezTotal.WithLabelValues("200"))
	livez503 := counterValue(t, metrics.ProxyLivezTotal.WithLabelValues("503"))

	h.Updated(v1.IPv4Protocol)
	clk.SetTime(t0.Add(10 * time.Second))

	// Node not known yet: /healthz 503 with nodeEligible false; /livez 200.
	r := fetch(t, srv.URL+"/healthz")
	if r.code != 503 || r.st.NodeEligible == nil || *r.st.NodeEligible || !r.st.Healthy {
		t.Errorf("/healthz before SyncNode = %d %+v", r.code, r.st)
	}
	if !r.st.LastUpdated.Equal(t0) {
		t.Errorf("unhealthy /healthz lastUpdated = %v, want last sync %v", r.st.LastUpdated, t0)
	}
	r = fetch(t, srv.URL+"/livez")
	if r.code != 200 || r.st.NodeEligible != nil {
		t.Errorf("/livez = %d %+v, want 200 without nodeEligible", r.code, r.st)
	}
	if _, ok := r.keys["nodeEligible"]; ok {
		t.Errorf("/livez body has nodeEligible: %v", r.keys)
	}

	// Node known: 200, and lastUpdated reads as "now" (kube-proxy compat).
	h.SyncNode(&v1.Node{})
	r = fetch(t, srv.URL+"/healthz")
	if r.code != 200 || !*r.st.NodeEligible || !r.st.Healthy {
		t.Errorf("/healthz = %d %+v, want 200", r.code, r.st)
	}
	if now := clk.Now(); !r.st.LastUpdated.Equal(now) || !r.st.CurrentTime.Equal(now) {
		t.Errorf("healthy /healthz times = %v / %v, want both %v", r.st.LastUpdated, r.st.CurrentTime, now)
	}
	for _, k := range []string{"lastUpdated", "currentTime", "nodeEligible", "healthy", "status"} {
		if _, ok := r.keys[k]; !ok {
			t.Errorf("/healthz body lacks %q: %v", k, r.keys)
		}
	}
	if ps := r.st.Status[v1.IPv4Protocol]; !ps.Healthy || !ps.LastUpdated.Equal(t0) {
		t.Errorf("/healthz status[IPv4] = %+v", ps)
	}

	// Stuck sync: both 503.
	h.QueueUpdated(v1.IPv4Protocol)
	clk.SetTime(clk.Now().Add(time.Minute))
	if r = fetch(t, srv.URL+"/healthz"); r.code != 503 || r.st.Healthy {
		t.Errorf("/healthz stuck = %d %+v", r.code, r.st)
	}
	if r = fetch(t, srv.URL+"/livez"); r.code != 503 || r.st.Healthy {
		t.Errorf("/livez stuck = %d %+v", r.code, r.st)
	}

	if resp, err := http.Get(srv.URL + "/other"); err != nil || resp.StatusCode != 404 {
		t.Errorf("/other = %v %v, want 404", resp, err)
	} else {
		resp.Body.Close()
	}

	for _, c := range []struct {
		name      string
		got, want float64
	}{
		{"healthz 503", counterValue(t, metrics.ProxyHealthzTotal.WithLabelValues("503")) - healthz503, 2},
		{"healthz 200", counterValue(t, metrics.ProxyHealthzTotal.WithLabelValues("200")) - healthz200, 1},
		{"livez 200", counterValue(t, metrics.ProxyLivezTotal.WithLabelValues("200")) - livez200, 1},
		{"livez 503", counterValue(t, metrics.ProxyLivezTotal.WithLabelValues("503")) - livez503, 1},
	} {
		if c.got != c.want {
			t.Errorf("%s counter grew by %v, want %v", c.name, c.got, c.want)
		}
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func TestRun(t *testing.T) {
	h, _ := newTest(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Skipf("cannot listen on loopback: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.serve(ctx, ln) }()

	if r := fetch(t, "http://"+ln.Addr().String()+"/livez"); r.code != 200 {
		t.Errorf("/livez over TCP = %d", r.code)
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

func TestRunListenError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Skipf("cannot listen on loopback: %v", err)
	}
	defer ln.Close()
	h, err := NewProxyHealth(ProxyHealthConfig{BindAddress: ln.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	err = h.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "failed to start proxy healthz on "+ln.Addr().String()) {
		t.Fatalf("Run on a taken port = %v", err)
	}
}
