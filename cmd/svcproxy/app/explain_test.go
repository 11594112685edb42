package app

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/svcproxy/svcproxy/proxier/explain"
)

var offline = []string{"explain", "-f", "../../../manifests/examples", "--node-name", "node1", "--cluster-cidr", "198.51.100.0/24"}

func runExplain(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	return runMain(t, "", append(append([]string{}, offline...), args...)...)
}

func TestExplainOffline(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		code    int
		verdict string
		want    []string // more substrings of stdout
	}{
		{"cluster IP from a pod", []string{"--from", "198.51.100.4", "--to", "203.0.113.10:80"}, 0,
			"OK: 203.0.113.10:80/tcp reaches 3 endpoints of demo/web:http (198.51.100.2:8080, 198.51.100.3:8080, 198.51.100.66:8080); masquerade: no",
			[]string{"outcome 1: ACCEPT endpoint 198.51.100.2:8080, masquerade no",
				`nat/KUBE-SERVICES rule 2: -A KUBE-SERVICES -m comment --comment "demo/web:http cluster IP"`}},
		{"hairpin is masqueraded", []string{"--from", "198.51.100.2", "--to", "203.0.113.10", "--port", "80"}, 0,
			"masquerade: only to 198.51.100.2:8080", nil},
		{"no endpoints", []string{"--from", "198.51.100.4", "--to", "203.0.113.30:80"}, 1,
			"REJECT: Service demo/empty port http has no endpoints (filter KUBE-SERVICES rule 1)",
			[]string{"outcome 1: REJECT, masquerade no"}},
		{"node port from outside", []string{"--from", "192.0.2.100", "--to", "192.0.2.11:30080"}, 0,
			"OK: 192.0.2.11:30080/tcp reaches 2 endpoints of demo/shop:http (198.51.100.4:8080, 198.51.100.67:8080); masquerade: yes",
			[]string{"nat/KUBE-NODEPORTS rule 1"}},
		{"udp from the node", []string{"--from-node", "--to", "203.0.113.53:53", "--proto", "udp"}, 0,
			"reaches 2 endpoints of kube-system/dns:dns", []string{"packet: udp 192.0.2.11 -> 203.0.113.53:53 (local)"}},
		{"a node address as --from is local", []string{"--from", "192.0.2.11", "--to", "203.0.113.10:80"}, 0,
			"reaches 3 endpoints", []string{"(local)", "nat/OUTPUT rule 1"}},
		{"unknown IP", []string{"--from", "198.51.100.4", "--to", "203.0.113.99:80"}, 1,
			"no service matched 203.0.113.99:80/tcp: the packet is not DNATed (is the Service programmed? is the port right?)", nil},
		{"wrong protocol", []string{"--from", "198.51.100.4", "--to", "203.0.113.10:80", "--proto", "udp"}, 1,
			"no service matched 203.0.113.10:80/udp", nil},
		{"node address, no node port", []string{"--from", "192.0.2.100", "--to", "192.0.2.11:22"}, 0,
			"ACCEPT: 192.0.2.11:22/tcp is delivered to this node", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runExplain(t, tt.args...)
			checkExplained(t, code, out, errOut, tt.code, tt.verdict, tt.want)
		})
	}
}

func TestExplainOfflineJSON(t *testing.T) {
	code, out, _ := runExplain(t, "--from", "192.0.2.100", "--to", "192.0.2.11:30080", "-o", "json")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	var r explain.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if r.Status != explain.StatusOK || r.Service != "demo/shop:http" || len(r.Outcomes) != 2 || !r.Outcomes[0].Masquerade || r.Outcomes[0].Endpoint != "198.51.100.4:8080" {
		t.Errorf("unexpected report: %+v", r)
	}
	if p := r.Outcomes[0].Path[0]; p.Table != "nat" || p.Chain != "PREROUTING" || p.Rule != 1 {
		t.Errorf("first step %+v", p)
	}
}

func TestExplainBadInput(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--to", "203.0.113.10:80"}, "--from: required"},
		{[]string{"--from", "198.51.100.300", "--to", "203.0.113.10:80"}, `--from: "198.51.100.300" is not an IP address`},
		{[]string{"--from", "198.51.100.4"}, "--to: required"},
		{[]string{"--from", "198.51.100.4", "--to", "web:80"}, `--to: "web:80" is not IP:PORT, IP or NAMESPACE/NAME[:PORT]`},
		{[]string{"--from", "198.51.100.4", "--to", "203.0.113.10"}, "--port: a destination port"},
		{[]string{"--from", "198.51.100.4", "--to", "203.0.113.10:80", "--proto", "icmp"}, `--proto: "icmp" is not tcp, udp or sctp`},
		{[]string{"--from", "198.51.100.4", "--from-node", "--to", "203.0.113.10:80"}, "--from and --from-node"},
		{[]string{"--from", "2001:db8::1", "--to", "203.0.113.10:80"}, "different IP families"},
		{[]string{"--from", "198.51.100.4", "--to", "203.0.113.10:80", "-o", "yaml"}, `--output: "yaml"`},
		{[]string{"--from", "198.51.100.4", "--to", "203.0.113.10:80", "--cluster-cidr", "nope"}, `--cluster-cidr: "nope" is not a CIDR`},
	} {
		code, out, errOut := runExplain(t, tt.args...)
		if code != 2 || !strings.Contains(errOut, tt.want) || out != "" {
			t.Errorf("%v: exit %d, stderr %q, stdout %q; want exit 2 and %q", tt.args, code, errOut, out, tt.want)
		}
	}
	code, _, errOut := runMain(t, "", "explain", "-f", "../../../manifests/examples", "--from-node", "--to", "203.0.113.10:80")
	if code != 2 || !strings.Contains(errOut, "--from-node: the node's address is unknown") {
		t.Errorf("--from-node without a node: exit %d, %q", code, errOut)
	}
}

// checkExplained checks an explain run: its exit code, the verdict (the
// last line) and more substrings of its output, and an empty stderr.
func checkExplained(t *testing.T, code int, out, errOut string, wantCode int, verdict string, want []string) {
	t.Helper()
	if code != wantCode {
		t.Errorf("exit %d, want %d; stderr %q", code, wantCode, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if last := lines[len(lines)-1]; !strings.Contains(last, verdict) {
		t.Errorf("verdict line %q, want it to contain %q\n%s", last, verdict, out)
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
	if errOut != "" {
		t.Errorf("stderr %q", errOut)
	}
}
