package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"time"
)

// KubeVersion is the pinned Kubernetes version built by hack/build-k8s.sh.
const KubeVersion = "v1.36.3"

// CacheDir is $SVCPROXY_CACHE, else $HOME/.cache/svcproxy.
func CacheDir() string {
	if d := os.Getenv("SVCPROXY_CACHE"); d != "" {
		return d
	}
	home, err := os.UserHomeDir()
	if err != nil || home == "" {
		home = "/root"
	}
	return filepath.Join(home, ".cache", "svcproxy")
}

// KubeBinary returns where hack/build-k8s.sh puts component (e.g.
// "kube-apiserver"). $KUBE_APISERVER / $KUBE_PROXY override it.
func KubeBinary(component string) string {
	switch component {
	case "kube-apiserver":
		if p := os.Getenv("KUBE_APISERVER"); p != "" {
			return p
		}
	case "kube-proxy":
		if p := os.Getenv("KUBE_PROXY"); p != "" {
			return p
		}
	}
	return filepath.Join(CacheDir(), component+"-"+KubeVersion, component)
}

// EtcdBinary is $ETCD or the etcd found in PATH (Debian: etcd-server).
func EtcdBinary() (string, error) {
	if p := os.Getenv("ETCD"); p != "" {
		return p, nil
	}
	p, err := exec.LookPath("etcd")
	if err != nil {
		return "", errors.New("etcd not found in PATH (run hack/install-deps.sh: apt-get install etcd-server)")
	}
	return p, nil
}

var (
	availOnce sync.Once
	availErr  error
)

// Available reports why the network lab cannot run here (nil if it can):
// not root, not Linux, no `ip`, or network namespaces cannot be created.
// Tests should t.Skip with the error.
func Available() error {
	availOnce.Do(func() { availErr = available() })
	return availErr
}

func available() error {
	if runtime.GOOS != "linux" {
		return fmt.Errorf("lab: needs Linux, running on %s", runtime.GOOS)
	}
	if os.Geteuid() != 0 {
		return errors.New("lab: needs root (network namespaces, iptables)")
	}
	for _, tool := range []string{"ip", "sysctl"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("lab: %q not found in PATH (run hack/install-deps.sh)", tool)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	probe := "svplabprobe" + strconv.Itoa(os.Getpid())
	if _, err := run(ctx, nil, "ip", "netns", "add", probe); err != nil {
		return fmt.Errorf("lab: cannot create network namespaces: %w", err)
	}
	defer func() { _, _ = run(context.Background(), nil, "ip", "netns", "del", probe) }()
	if _, err := run(ctx, []byte("link add br0 type bridge\nlink add vx0 type veth peer name vx1\n"), "ip", "-n", probe, "-batch", "-"); err != nil {
		return fmt.Errorf("lab: cannot create bridge/veth in a namespace: %w", err)
	}
	return nil
}

// ControlPlaneAvailable reports why a control plane cannot be started (nil
// if it can): everything Available checks, plus etcd, openssl and the built
// kube-apiserver (hack/build-kube-apiserver.sh).
func ControlPlaneAvailable() error {
	if err := Available(); err != nil {
		return err
	}
	if _, err := EtcdBinary(); err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	if _, err := exec.LookPath("openssl"); err != nil {
		return errors.New("lab: openssl not found in PATH (run hack/install-deps.sh)")
	}
	api := KubeBinary("kube-apiserver")
	if st, err := os.Stat(api); err != nil || st.Mode()&0o111 == 0 {
		return fmt.Errorf("lab: kube-apiserver not built at %s (run hack/build-kube-apiserver.sh)", api)
	}
	return nil
}
