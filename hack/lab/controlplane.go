package lab

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/rest"
)

// ControlPlane is etcd + kube-apiserver running inside the lab's <prefix>-cp
// namespace. Its processes run in their own sessions and are tracked by pid
// files in Dir, so a control plane started by hack/controlplane.sh can be
// driven from Go (LoadControlPlane) and vice versa.
type ControlPlane struct {
	NS             string   `json:"ns"`
	Dir            string   `json:"dir"` // <StateDir>/cp
	EtcdDataDir    string   `json:"etcdDataDir"`
	Server         string   `json:"server"` // https://192.0.2.10:6443
	Token          string   `json:"token"`  // admin bearer token (system:masters)
	KubeconfigPath string   `json:"kubeconfig"`
	EtcdArgs       []string `json:"etcdArgs"`
	APIServerArgs  []string `json:"apiServerArgs"`

	logf func(format string, args ...any)
}

const (
	etcdClientURL = "http://127.0.0.1:2379"
	cpStateFile   = "cp.json"
	readyTimeout  = 120 * time.Second
)

// StartControlPlane starts etcd and kube-apiserver in the control-plane
// namespace and waits (bounded) for /readyz. Any control plane previously
// started for this lab is stopped first. extraAPIServerArgs are appended to
// the kube-apiserver command line (and reused by RestartAPIServer).
func (l *Lab) StartControlPlane(ctx context.Context, extraAPIServerArgs ...string) (*ControlPlane, error) {
	if err := ControlPlaneAvailable(); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join("/run/netns", l.CP.NS)); err != nil {
		return nil, fmt.Errorf("lab: control-plane namespace %s missing (lab not up?)", l.CP.NS)
	}
	dir := filepath.Join(l.StateDir, "cp")
	if old, err := LoadControlPlane(l); err == nil {
		old.Stop()
	}
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "certs"), 0o700); err != nil {
		return nil, err
	}
	etcdBin, err := EtcdBinary()
	if err != nil {
		return nil, err
	}
	apiBin := KubeBinary("kube-apiserver")

	// Throwaway service-account signing key pair.
	saKey := filepath.Join(dir, "sa.key")
	saPub := filepath.Join(dir, "sa.pub")
	if _, err := run(ctx, nil, "openssl", "genrsa", "-out", saKey, "2048"); err != nil {
		return nil, err
	}
	if _, err := run(ctx, nil, "openssl", "rsa", "-in", saKey, "-pubout", "-out", saPub); err != nil {
		return nil, err
	}
	tok := make([]byte, 24)
	if _, err := rand.Read(tok); err != nil {
		return nil, err
	}
	cp := &ControlPlane{
		NS:             l.CP.NS,
		Dir:            dir,
		Server:         fmt.Sprintf("https://%s:%d", l.CP.IP, APIServerPort),
		Token:          hex.EncodeToString(tok),
		KubeconfigPath: filepath.Join(dir, "admin.kubeconfig"),
		logf:           l.logf,
	}
	tokens := filepath.Join(dir, "tokens.csv")
	if err := os.WriteFile(tokens, []byte(cp.Token+`,admin,admin,"system:masters"`+"\n"), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(cp.KubeconfigPath, []byte(cp.kubeconfigYAML()), 0o600); err != nil {
		return nil, err
	}

	// etcd data on tmpfs when possible: etcd 3.4 has no --unsafe-no-fsync.
	base := ""
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		base = "/dev/shm"
	}
	cp.EtcdDataDir, err = os.MkdirTemp(base, "svcproxy-etcd-"+l.Prefix+"-")
	if err != nil {
		return nil, err
	}
	cp.EtcdArgs = []string{
		etcdBin,
		"--name", "cp",
		"--data-dir", cp.EtcdDataDir,
		"--listen-client-urls", etcdClientURL,
		"--advertise-client-urls", etcdClientURL,
		"--listen-peer-urls", "http://127.0.0.1:2380",
		"--initial-advertise-peer-urls", "http://127.0.0.1:2380",
		"--initial-cluster", "cp=http://127.0.0.1:2380",
		"--initial-cluster-state", "new",
		"--snapshot-count", "10000",
	}
	cp.APIServerArgs = append([]string{
		apiBin,
		"--advertise-address=" + l.CP.IP,
		"--bind-address=" + l.CP.IP,
		"--secure-port=" + strconv.Itoa(APIServerPort),
		"--etcd-servers=" + etcdClientURL,
		"--service-cluster-ip-range=" + l.ServiceCIDRs(),
		"--service-node-port-range=30000-32767",
		"--token-auth-file=" + tokens,
		"--authorization-mode=Node,RBAC",
		"--service-account-key-file=" + saPub,
		"--service-account-signing-key-file=" + saKey,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--cert-dir=" + filepath.Join(dir, "certs"),
		// No controller-manager runs: ServiceAccount admission would reject
		// pods for want of the "default" service account.
		"--disable-admission-plugins=ServiceAccount",
		"--allow-privileged=true",
		"--profiling=false",
		"--v=1",
	}, extraAPIServerArgs...)
	if err := cp.save(); err != nil {
		return nil, err
	}
	if err := cp.startEtcd(ctx); err != nil {
		cp.Stop()
		return nil, err
	}
	if err := cp.StartAPIServer(ctx); err != nil {
		cp.Stop()
		return nil, err
	}
	// /readyz can succeed before the bootstrap controller has created the
	// "kubernetes" Service; wait for it so callers see a complete cluster.
	svcURL := cp.Server + "/api/v1/namespaces/default/services/kubernetes"
	if err := waitUntil(ctx, 60*time.Second, nil, func() error { return httpOK(ctx, cp.HTTPClient(), svcURL, cp.Token) }); err != nil {
		cp.Stop()
		return nil, fmt.Errorf("lab: kubernetes Service not created: %w", err)
	}
	return cp, nil
}

// LoadControlPlane returns the control plane recorded in the lab's state dir
// (e.g. started by hack/controlplane.sh up).
func LoadControlPlane(l *Lab) (*ControlPlane, error) {
	b, err := os.ReadFile(filepath.Join(l.StateDir, "cp", cpStateFile))
	if err != nil {
		return nil, fmt.Errorf("lab: no control plane state: %w", err)
	}
	var cp ControlPlane
	if err := json.Unmarshal(b, &cp); err != nil {
		return nil, err
	}
	cp.logf = l.logf
	return &cp, nil
}

func (cp *ControlPlane) log(format string, args ...any) {
	if cp.logf != nil {
		cp.logf(format, args...)
	}
}

func (cp *ControlPlane) save() error {
	b, err := json.MarshalIndent(cp, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(cp.Dir, cpStateFile), append(b, '\n'), 0o600)
}

// Kubeconfig returns the path of the admin kubeconfig (token auth,
// insecure-skip-tls-verify, server https://192.0.2.10:6443). It is usable
// from any lab namespace with a route to the node network (nodes, client,
// cp), e.g. `ip netns exec svp-node1 kubectl --kubeconfig ...`.
func (cp *ControlPlane) Kubeconfig() string { return cp.KubeconfigPath }

func (cp *ControlPlane) kubeconfigYAML() string {
	return fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: svcproxy-lab
  cluster:
    server: %s
    insecure-skip-tls-verify: true
users:
- name: admin
  user:
    token: %s
contexts:
- name: svcproxy-lab
  context:
    cluster: svcproxy-lab
    user: admin
current-context: svcproxy-lab
`, cp.Server, cp.Token)
}

// RESTConfig returns a client-go config for the test process (which lives in
// the root namespace): its dialer opens sockets inside the cp namespace.
func (cp *ControlPlane) RESTConfig() *rest.Config {
	return &rest.Config{
		Host:            cp.Server,
		BearerToken:     cp.Token,
		TLSClientConfig: rest.TLSClientConfig{Insecure: true},
		Dial:            DialContextInNetns(cp.NS),
		QPS:             200,
		Burst:           400,
		Timeout:         30 * time.Second,
	}
}

// HTTPClient returns an http.Client reaching the API server from the cp
// namespace (TLS verification off). Add the bearer token yourself.
func (cp *ControlPlane) HTTPClient() *http.Client {
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			DialContext:       DialContextInNetns(cp.NS),
			TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // throwaway self-signed lab cert
			DisableKeepAlives: true,
		},
	}
}

func (cp *ControlPlane) pidFile(name string) string { return filepath.Join(cp.Dir, name+".pid") }
func (cp *ControlPlane) logFile(name string) string { return filepath.Join(cp.Dir, name+".log") }

// EtcdLog and APIServerLog are the log file paths.
func (cp *ControlPlane) EtcdLog() string { return cp.logFile("etcd") }

// APIServerLog is the kube-apiserver log file path.
func (cp *ControlPlane) APIServerLog() string { return cp.logFile("kube-apiserver") }

func (cp *ControlPlane) startProc(name string, argv []string) (*Proc, error) {
	p, err := Start(cp.NS, cp.logFile(name), argv...)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(cp.pidFile(name), []byte(strconv.Itoa(p.Pid())+"\n"), 0o644); err != nil {
		_ = p.Stop()
		return nil, err
	}
	return p, nil
}

func (cp *ControlPlane) startEtcd(ctx context.Context) error {
	start := time.Now()
	p, err := cp.startProc("etcd", cp.EtcdArgs)
	if err != nil {
		return err
	}
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: DialContextInNetns(cp.NS), DisableKeepAlives: true}}
	err = waitUntil(ctx, 30*time.Second, p, func() error {
		return httpOK(ctx, client, etcdClientURL+"/health", "")
	})
	if err != nil {
		return fmt.Errorf("lab: etcd not healthy: %w\n--- %s (tail):\n%s", err, cp.EtcdLog(), fileTail(cp.EtcdLog(), 3000))
	}
	cp.log("etcd healthy in %s (pid %d)", time.Since(start).Round(time.Millisecond), p.Pid())
	return nil
}

// StartAPIServer starts kube-apiserver (if not running) and waits for /readyz.
func (cp *ControlPlane) StartAPIServer(ctx context.Context) error {
	if pid := cp.pid("kube-apiserver"); pid > 0 {
		return fmt.Errorf("lab: kube-apiserver already running (pid %d)", pid)
	}
	start := time.Now()
	p, err := cp.startProc("kube-apiserver", cp.APIServerArgs)
	if err != nil {
		return err
	}
	if err := waitUntil(ctx, readyTimeout, p, func() error { return cp.Ready(ctx) }); err != nil {
		return fmt.Errorf("lab: kube-apiserver not ready: %w\n--- %s (tail):\n%s", err, cp.APIServerLog(), fileTail(cp.APIServerLog(), 4000))
	}
	cp.log("kube-apiserver ready in %s (pid %d)", time.Since(start).Round(time.Millisecond), p.Pid())
	return nil
}

// Ready checks /readyz once.
func (cp *ControlPlane) Ready(ctx context.Context) error {
	return httpOK(ctx, cp.HTTPClient(), cp.Server+"/readyz", cp.Token)
}

// WaitReady waits (bounded by ctx and 120s) for /readyz.
func (cp *ControlPlane) WaitReady(ctx context.Context) error {
	return waitUntil(ctx, readyTimeout, nil, func() error { return cp.Ready(ctx) })
}

// StopAPIServer stops kube-apiserver only (SIGTERM, then SIGKILL after 10s).
func (cp *ControlPlane) StopAPIServer() error {
	return cp.stopProc("kube-apiserver", 10*time.Second)
}

// KillAPIServer SIGKILLs kube-apiserver (a crash, no graceful shutdown).
func (cp *ControlPlane) KillAPIServer() error {
	return cp.stopProc("kube-apiserver", 0)
}

// RestartAPIServer kills and restarts kube-apiserver with the same arguments
// (etcd, and thus all objects, survive), then waits for /readyz.
func (cp *ControlPlane) RestartAPIServer(ctx context.Context) error {
	if err := cp.StopAPIServer(); err != nil {
		return err
	}
	return cp.StartAPIServer(ctx)
}

// Stop stops kube-apiserver and etcd and removes etcd's data dir. Logs,
// kubeconfig and keys stay in Dir. Idempotent.
func (cp *ControlPlane) Stop() {
	_ = cp.stopProc("kube-apiserver", 10*time.Second)
	_ = cp.stopProc("etcd", 10*time.Second)
	if cp.EtcdDataDir != "" && strings.Contains(cp.EtcdDataDir, "svcproxy-etcd-") {
		_ = os.RemoveAll(cp.EtcdDataDir)
	}
}

// Running reports the pids of running components (0 = not running).
func (cp *ControlPlane) Running() (etcdPid, apiServerPid int) {
	return cp.pid("etcd"), cp.pid("kube-apiserver")
}

// pid returns the live pid recorded for component name, verifying that the
// process really is the binary we started (guards against pid reuse).
func (cp *ControlPlane) pid(name string) int {
	b, err := os.ReadFile(cp.pidFile(name))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 || !pidAlive(pid) {
		return 0
	}
	want := cp.EtcdArgs
	if name == "kube-apiserver" {
		want = cp.APIServerArgs
	}
	got := pidCmdline(pid)
	if len(want) == 0 || len(got) == 0 || got[0] != want[0] {
		return 0
	}
	return pid
}

func (cp *ControlPlane) stopProc(name string, grace time.Duration) error {
	pid := cp.pid(name)
	defer os.Remove(cp.pidFile(name))
	if pid == 0 {
		return nil
	}
	if grace > 0 {
		_ = syscall.Kill(pid, syscall.SIGTERM)
		if waitGone([]int{pid}, grace) {
			return nil
		}
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	if !waitGone([]int{pid}, 5*time.Second) {
		return fmt.Errorf("lab: %s (pid %d) did not exit", name, pid)
	}
	return nil
}

// waitUntil polls check every 250ms until it succeeds, p exits, ctx ends or
// limit elapses.
func waitUntil(ctx context.Context, limit time.Duration, p *Proc, check func() error) error {
	return Poll(ctx, limit, 250*time.Millisecond, func() error {
		err := check()
		if err != nil && p != nil {
			if exited, werr := p.Exited(); exited {
				return fmt.Errorf("%w: process exited (%v); last check: %w", ErrStop, werr, err)
			}
		}
		return err
	})
}

func httpOK(ctx context.Context, c *http.Client, url, token string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

// StopControlPlane stops the control plane recorded in the lab's state dir,
// if any. Idempotent.
func StopControlPlane(l *Lab) {
	if cp, err := LoadControlPlane(l); err == nil {
		cp.Stop()
	}
}
