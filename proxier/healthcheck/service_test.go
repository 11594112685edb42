package healthcheck

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
)

var web = types.NamespacedName{Namespace: "demo", Name: "web"}

func freePort(t *testing.T) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Skipf("cannot listen on loopback: %v", err)
	}
	defer ln.Close()
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

func get(t *testing.T, port uint16) (int, map[string]any, http.Header) {
	t.Helper()
	resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(int(port)) + "/")
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var parsed map[string]any
	if err := json.Unmarshal(body, &parsed); err != nil {
		t.Fatalf("body is not JSON: %v: %s", err, body)
	}
	return resp.StatusCode, parsed, resp.Header
}

func TestServiceHealthFollowsLocalEndpoints(t *testing.T) {
	healthy := true
	s := NewServiceHealthServer([]netip.Addr{netip.MustParseAddr("127.0.0.1")}, func() bool { return healthy }, nil)
	defer s.Close()
	port := freePort(t)
	if err := s.SyncServices(map[types.NamespacedName]uint16{web: port}); err != nil {
		t.Fatal(err)
	}

	code, body, _ := get(t, port)
	if code != http.StatusServiceUnavailable || body["localEndpoints"] != float64(0) {
		t.Errorf("no local endpoints: got %d %v, want 503 with 0", code, body)
	}
	s.SyncEndpoints(map[types.NamespacedName]int{web: 2})
	code, body, hdr := get(t, port)
	if code != http.StatusOK || body["localEndpoints"] != float64(2) || hdr.Get("X-Load-Balancing-Endpoint-Weight") != "2" {
		t.Errorf("two local endpoints: got %d %v %v", code, body, hdr)
	}
	svc := body["service"].(map[string]any)
	if svc["namespace"] != "demo" || svc["name"] != "web" || body["serviceProxyHealthy"] != true {
		t.Errorf("body does not name the service: %v", body)
	}
	healthy = false
	if code, _, _ := get(t, port); code != http.StatusServiceUnavailable {
		t.Errorf("an unhealthy proxy must answer 503, got %d", code)
	}
}

func TestServiceHealthClosesRemovedAndMovedPorts(t *testing.T) {
	s := NewServiceHealthServer([]netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil, nil)
	defer s.Close()
	first, second := freePort(t), freePort(t)
	if err := s.SyncServices(map[types.NamespacedName]uint16{web: first}); err != nil {
		t.Fatal(err)
	}
	if err := s.SyncServices(map[types.NamespacedName]uint16{web: second}); err != nil {
		t.Fatal(err)
	}
	if _, err := net.Dial("tcp4", "127.0.0.1:"+strconv.Itoa(int(first))); err == nil {
		t.Error("old port still open after the health check port moved")
	}
	get(t, second)
	if err := s.SyncServices(nil); err != nil {
		t.Fatal(err)
	}
	if _, err := net.Dial("tcp4", "127.0.0.1:"+strconv.Itoa(int(second))); err == nil {
		t.Error("port still open after the service went away")
	}
}

func TestServiceHealthReportsPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Skipf("cannot listen: %v", err)
	}
	defer ln.Close()
	busy := uint16(ln.Addr().(*net.TCPAddr).Port)
	other := types.NamespacedName{Namespace: "demo", Name: "other"}
	s := NewServiceHealthServer([]netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil, nil)
	defer s.Close()
	rec := events.NewFakeRecorder(10)
	s.ReportTo(rec, "node1")
	free := freePort(t)
	err = s.SyncServices(map[types.NamespacedName]uint16{web: busy, other: free})
	if err == nil {
		t.Fatal("want an error for the port in use")
	}
	if want := "service demo/web: health check node port " + strconv.Itoa(int(busy)); !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not name %q", err, want)
	}
	get(t, free) // the other service still got its server
	// kube-proxy's Warning on the Service, naming node and port.
	select {
	case ev := <-rec.Events:
		want := "Warning FailedToStartServiceHealthcheck node node1 failed to start healthcheck \"demo/web\" on port " + strconv.Itoa(int(busy))
		if !strings.HasPrefix(ev, want) {
			t.Errorf("event %q, want it to start with %q", ev, want)
		}
	default:
		t.Error("no event for the port in use")
	}
	if len(rec.Events) != 0 {
		t.Errorf("%d more events, want only the one for demo/web", len(rec.Events))
	}
}
