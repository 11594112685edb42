package app

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"

	"github.com/svcproxy/svcproxy/cmd/svcproxy/options"
	"github.com/svcproxy/svcproxy/iptables"
	"github.com/svcproxy/svcproxy/proxier/conntrack"
	"github.com/svcproxy/svcproxy/proxier/host"
	"github.com/svcproxy/svcproxy/proxier/nodeconfig"
)

// fakeRoot makes a fake / with the /proc/sys and /sys files the daemon's
// set-up writes, each holding value, and returns it.
func fakeRoot(t *testing.T, value string) string {
	t.Helper()
	root := t.TempDir()
	for _, f := range []string{
		"proc/sys/net/netfilter/nf_conntrack_max",
		"proc/sys/net/netfilter/nf_conntrack_tcp_timeout_established",
		"proc/sys/net/netfilter/nf_conntrack_tcp_timeout_close_wait",
		"proc/sys/net/ipv4/conf/all/route_localnet",
		"sys/module/nf_conntrack/parameters/hashsize",
		"proc/self/oom_score_adj",
	} {
		p := filepath.Join(root, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(value+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func readInt(t *testing.T, root, path string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, path))
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return n
}

// --init-only runs the daemon's privileged set-up (the conntrack sysctls,
// route_localnet for 127.0.0.1 NodePorts) and returns nil without
// starting the proxy, as kube-proxy's init-only mode; it leaves
// oom_score_adj alone (kube-proxy applies that when it runs).
func TestInitOnlySetsSysctlsAndReturns(t *testing.T) {
	root := fakeRoot(t, "0")
	cfg := options.Defaults()
	cfg.HostnameOverride = "node1"
	cfg.Master = "http://127.0.0.1:9" // never contacted: the plan is faked
	planned := false
	h := daemonHost{sys: host.ProcSys{Root: root}, initOnly: true,
		planFamilies: func(context.Context, iptables.Backend, string, string, func(context.Context) (*v1.Node, error)) (*nodeconfig.Plan, error) {
			planned = true
			return &nodeconfig.Plan{Families: []v1.IPFamily{v1.IPv4Protocol},
				IPTables: map[v1.IPFamily]iptables.Interface{v1.IPv4Protocol: iptables.NewFake(iptables.IPv4)}}, nil
		}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := runDaemon(ctx, cfg, h); err != nil {
		t.Fatalf("runDaemon --init-only: %v", err)
	}
	if !planned {
		t.Error("the IP families were never planned")
	}
	wantMax := conntrack.Max(conntrackSettings(cfg.Conntrack), runtime.NumCPU())
	for path, want := range map[string]int{
		"proc/sys/net/netfilter/nf_conntrack_max":                     wantMax,
		"sys/module/nf_conntrack/parameters/hashsize":                 wantMax / 4,
		"proc/sys/net/netfilter/nf_conntrack_tcp_timeout_established": int(cfg.Conntrack.TCPEstablishedTimeout.Seconds()),
		"proc/sys/net/netfilter/nf_conntrack_tcp_timeout_close_wait":  int(cfg.Conntrack.TCPCloseWaitTimeout.Seconds()),
		"proc/sys/net/ipv4/conf/all/route_localnet":                   1,
		"proc/self/oom_score_adj":                                     0,
	} {
		if got := readInt(t, root, path); got != want {
			t.Errorf("%s = %d, want %d", path, got, want)
		}
	}

	// A sysctl that cannot be written is fatal, naming it, as in kube-proxy.
	bad := fakeRoot(t, "0")
	if err := os.RemoveAll(filepath.Join(bad, "proc/sys/net/netfilter")); err != nil {
		t.Fatal(err)
	}
	h.sys = host.ProcSys{Root: bad}
	err := runDaemon(ctx, cfg, h)
	if err == nil || !strings.Contains(err.Error(), "nf_conntrack_max") {
		t.Errorf("unwritable nf_conntrack_max: %v, want an error naming it", err)
	}
}

// --oom-score-adj is written to /proc/self/oom_score_adj; a failure is an
// error naming the setting and the file (the daemon logs it and goes on,
// as kube-proxy).
func TestApplyOOMScoreAdj(t *testing.T) {
	root := fakeRoot(t, "0")
	sys := host.ProcSys{Root: root}
	if err := sys.ApplyOOMScoreAdj(-999); err != nil {
		t.Fatal(err)
	}
	if got := readInt(t, root, "proc/self/oom_score_adj"); got != -999 {
		t.Errorf("oom_score_adj = %d, want -999", got)
	}
	missing := host.ProcSys{Root: filepath.Join(root, "nowhere")}
	if err := missing.ApplyOOMScoreAdj(-999); err == nil || !strings.Contains(err.Error(), "oom_score_adj -999") ||
		!strings.Contains(err.Error(), "proc/self/oom_score_adj") {
		t.Errorf("missing file: %v", err)
	}
}

func TestVersion(t *testing.T) {
	want := "svcproxy " + Version() + "\n"
	for _, args := range [][]string{{"--version"}, {"--version=true"}, {"run", "--version"}, {"version"}} {
		code, out, errOut := runMain(t, "", args...)
		if code != 0 || out != want {
			t.Errorf("%q: exit %d, stdout %q (stderr %q), want 0 and %q", args, code, out, errOut, want)
		}
	}
	for _, args := range [][]string{{"--version=raw"}, {"version", "--raw"}} {
		code, out, _ := runMain(t, "", args...)
		if code != 0 || !strings.HasPrefix(out, "app.VersionInfo{Version:\""+Version()+"\"") || !strings.Contains(out, "GoVersion:\""+runtime.Version()) {
			t.Errorf("%q: exit %d, stdout %q", args, code, out)
		}
	}
	if code, _, errOut := runMain(t, "", "--version=maybe"); code != exitBadInput || !strings.Contains(errOut, "--version") {
		t.Errorf("--version=maybe: exit %d, stderr %q", code, errOut)
	}
	if Version() == "" {
		t.Error("empty version")
	}
}

// The version is set at build time with -ldflags -X, as make build does.
func TestVersionFromLdflags(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "svcproxy")
	build := exec.Command("go", "build", "-ldflags", "-X github.com/svcproxy/svcproxy/cmd/svcproxy/app.version=v9.8.7-test", "-o", bin, "github.com/svcproxy/svcproxy/cmd/svcproxy")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, args := range [][]string{{"--version"}, {"version"}} {
		out, err := exec.Command(bin, args...).Output()
		if err != nil || string(out) != "svcproxy v9.8.7-test\n" {
			t.Errorf("svcproxy %q: %q, %v; want \"svcproxy v9.8.7-test\"", args, out, err)
		}
	}
}

// helperMain runs Main in a child process (the test binary itself, see
// TestMain), for what changes process-wide state: applying the logging
// configuration.
func helperMain(t *testing.T, args ...string) (code int, output string) {
	t.Helper()
	enc, _ := json.Marshal(args)
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "SVCPROXY_HELPER_ARGS="+string(enc))
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), string(out)
	} else if err != nil {
		t.Fatal(err)
	}
	return 0, string(out)
}

func TestMain(m *testing.M) {
	if enc := os.Getenv("SVCPROXY_HELPER_ARGS"); enc != "" {
		var args []string
		if err := json.Unmarshal([]byte(enc), &args); err != nil {
			os.Exit(99)
		}
		os.Exit(Main(args, os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// kube-proxy's logging flags work: --logging-format=json logs JSON, the
// default is klog text (where -v and --vmodule apply), and a bad setting is
// refused naming the flag (--vmodule with JSON is, as in kube-proxy).
func TestLoggingFlags(t *testing.T) {
	out := filepath.Join(t.TempDir(), "config.yaml")
	code, logs := helperMain(t, "--logging-format=json", "--log-flush-frequency=1s", "-v=2", "--hostname-override=n1", "--write-config-to="+out)
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, logs)
	}
	found := false
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		var entry map[string]any
		if err := json.Unmarshal([]byte(line), &entry); err != nil {
			t.Errorf("not a JSON log line: %q", line)
			continue
		}
		if entry["msg"] == "Wrote configuration" && entry["file"] == out {
			found = true
		}
	}
	if !found {
		t.Errorf("no JSON \"Wrote configuration\" line in:\n%s", logs)
	}

	code, logs = helperMain(t, "-v=2", "--vmodule=run=4", "--hostname-override=n1", "--write-config-to="+out)
	if code != 0 || !strings.Contains(logs, "] \"Wrote configuration\" file=") || !strings.HasPrefix(logs, "I") {
		t.Errorf("text logs: exit %d:\n%s", code, logs)
	}

	code, logs = helperMain(t, "--logging-format=xml", "--write-config-to="+out)
	if code != exitBadInput || !strings.Contains(logs, "logging.format (--logging-format)") {
		t.Errorf("--logging-format=xml: exit %d:\n%s", code, logs)
	}
	code, logs = helperMain(t, "--logging-format=json", "--vmodule=run=4", "--write-config-to="+out)
	if code != exitBadInput || !strings.Contains(logs, "logging.vmodule (--vmodule): Forbidden") {
		t.Errorf("--logging-format=json --vmodule: exit %d:\n%s", code, logs)
	}
}
