package dataplane

import (
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// explainBinary builds svcproxy once per test binary run.
func explainBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "svcproxy")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/svcproxy/svcproxy/cmd/svcproxy").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// explainIn runs "svcproxy explain args..." (live mode) inside ns and
// returns its exit code and stdout+stderr.
func explainIn(t *testing.T, bin, ns string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, bin, "explain"}, args...)...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &ee):
		return ee.ExitCode(), string(out)
	}
	t.Fatalf("explain: %v\n%s", err, out)
	return 0, ""
}

// TestExplainLive runs "svcproxy explain" against node1's live rules,
// routes and sysctls.
func TestExplainLive(t *testing.T) {
	e := setup(t)
	bin := explainBinary(t)
	node := e.lab.Node(1)
	pod := e.lab.Pod(1, 3) // 198.51.100.4, not a web endpoint

	code, out := explainIn(t, bin, node.NS, "--from", pod.IP, "--to", webIP+":80")
	for _, ep := range []string{"198.51.100.2:8080", "198.51.100.3:8080", "198.51.100.66:8080"} {
		if !strings.Contains(out, "endpoint "+ep+", masquerade no") {
			t.Errorf("web from %s: no outcome for endpoint %s:\n%s", pod.IP, ep, out)
		}
	}
	if !strings.Contains(out, "routes:\n  198.51.100.2 dev cbr0") {
		t.Errorf("web: no route line for a local endpoint:\n%s", out)
	}
	if e.lab.BridgeNetfilter {
		if code != 0 || !strings.Contains(out, "OK: 203.0.113.10:80/tcp reaches 3 endpoints of demo/web:http") {
			t.Errorf("web: exit %d, want 0:\n%s", code, out)
		}
	} else if code != 1 || !strings.Contains(out, "bridge-nf-call-iptables") {
		t.Errorf("web without bridge netfilter: exit %d, want 1 naming bridge-nf-call-iptables:\n%s", code, out)
	}
	t.Logf("explain web:\n%s", out)

	code, out = explainIn(t, bin, node.NS, "--from", pod.IP, "--to", emptyIP+":80")
	if code != 1 || !strings.Contains(out, "REJECT: Service demo/empty port http has no endpoints (filter KUBE-SERVICES rule") {
		t.Errorf("empty: exit %d, want 1 with the REJECT cause:\n%s", code, out)
	}

	code, out = explainIn(t, bin, node.NS, "--from-node", "--to", webIP+":80")
	if code != 0 || !strings.Contains(out, "reaches 3 endpoints") {
		t.Errorf("web from the node with a default route: exit %d, want 0:\n%s", code, out)
	}

	// Without a default route, a process on the node cannot even start a
	// connection to the cluster IP: routing happens before OUTPUT DNAT.
	def, err := e.lab.Exec(node.NS, "ip", "route", "show", "default")
	if err != nil || strings.TrimSpace(string(def)) == "" {
		t.Fatalf("node1 default route: %q, %v", def, err)
	}
	if out, err := e.lab.Exec(node.NS, "ip", "route", "del", "default"); err != nil {
		t.Fatalf("ip route del default: %v %s", err, out)
	}
	t.Cleanup(func() {
		args := append([]string{"ip", "route", "replace"}, strings.Fields(strings.TrimSpace(string(def)))...)
		if out, err := e.lab.Exec(node.NS, args...); err != nil {
			t.Errorf("restoring the default route (%s): %v %s", def, err, out)
		}
	})
	code, out = explainIn(t, bin, node.NS, "--from-node", "--to", webIP+":80")
	if code != 1 || !strings.Contains(out, "no route to 203.0.113.10") || !strings.Contains(out, "connections from this node fail before DNAT") {
		t.Errorf("web from the node without a default route: exit %d, want 1 naming the missing route:\n%s", code, out)
	}
	t.Logf("explain without default route:\n%s", out)
}
