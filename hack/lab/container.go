package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Containers in the lab: podman runs an image inside a lab namespace, the
// way a container runtime runs a hostNetwork pod in a node's network
// namespace. A container is named "<prefix>-<name>" so that a crashed run's
// containers can be found and removed (RemoveStaleContainers), as DownStale
// does for its namespaces.

// podmanGlobal are the podman flags this kind of machine needs: crun refuses
// its hybrid cgroups, and systemd is not the cgroup manager.
var podmanGlobal = []string{"--runtime", "runc", "--cgroup-manager", "cgroupfs"}

// podmanRun are the run flags it needs: podman's default rlimits are refused.
var podmanRun = []string{"--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"}

// Mount is a bind mount of a host path into a container.
type Mount struct {
	Source, Target string
	ReadOnly       bool
}

// ContainerSpec says what to run. Entrypoint and Args are the image's
// ENTRYPOINT and CMD overrides (Kubernetes' command and args); nil keeps
// the image's.
type ContainerSpec struct {
	Name       string // unique within the lab; the container is "<prefix>-<Name>"
	Image      string
	NS         string // network namespace (e.g. a node's); "" = none
	Entrypoint []string
	Args       []string
	Env        []string // KEY=VALUE
	Mounts     []Mount
	Privileged bool
	CapAdd     []string
	CapDrop    []string
}

// Container is a running (or exited) podman container.
type Container struct {
	Name string // podman's name
	Log  string // its stdout and stderr (podman's k8s-file format)
}

// Podman runs podman with the flags this machine needs; bounded by ctx.
func Podman(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "podman", append(append([]string{}, podmanGlobal...), args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("lab: podman %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// PodmanAvailable says why podman cannot run containers here, or nil.
func PodmanAvailable(ctx context.Context) error {
	if _, err := exec.LookPath("podman"); err != nil {
		return errors.New("podman not found (hack/image.sh installs it)")
	}
	if _, err := exec.LookPath("runc"); err != nil {
		return errors.New("runc not found (hack/image.sh installs it)")
	}
	if _, err := Podman(ctx, "info", "--format", "{{.Host.OCIRuntime.Name}}"); err != nil {
		return err
	}
	return nil
}

// ImageExists says whether ref is in podman's local storage.
func ImageExists(ctx context.Context, ref string) bool {
	_, err := Podman(ctx, "image", "exists", ref)
	return err == nil
}

func (l *Lab) containerName(name string) string { return l.Prefix + "-" + name }

// runArgs are the podman run flags for spec (without the image and args).
func (l *Lab) runArgs(s ContainerSpec) ([]string, error) {
	args := append([]string{}, podmanRun...)
	if s.NS != "" {
		args = append(args, "--network", "ns:"+filepath.Join("/run/netns", s.NS))
	} else {
		args = append(args, "--network", "none")
	}
	if s.Entrypoint != nil {
		ep, err := json.Marshal(s.Entrypoint)
		if err != nil {
			return nil, err
		}
		args = append(args, "--entrypoint", string(ep))
	}
	for _, e := range s.Env {
		args = append(args, "--env", e)
	}
	for _, m := range s.Mounts {
		v := m.Source + ":" + m.Target
		if m.ReadOnly {
			v += ":ro"
		}
		args = append(args, "--volume", v)
	}
	if s.Privileged {
		args = append(args, "--privileged")
	}
	for _, c := range s.CapAdd {
		args = append(args, "--cap-add", c)
	}
	for _, c := range s.CapDrop {
		args = append(args, "--cap-drop", c)
	}
	return args, nil
}

// StartContainer starts spec in the background (replacing a container of
// the same name). Its output goes to <StateDir>/logs/<Name>.log.
func (l *Lab) StartContainer(ctx context.Context, s ContainerSpec) (*Container, error) {
	args, err := l.runArgs(s)
	if err != nil {
		return nil, err
	}
	c := &Container{Name: l.containerName(s.Name), Log: filepath.Join(l.StateDir, "logs", s.Name+".log")}
	if err := os.MkdirAll(filepath.Dir(c.Log), 0o755); err != nil {
		return nil, err
	}
	_ = os.Remove(c.Log) // podman appends to an existing file
	run := append([]string{"run", "--detach", "--replace", "--name", c.Name,
		"--log-driver", "k8s-file", "--log-opt", "path=" + c.Log}, args...)
	run = append(append(run, s.Image), s.Args...)
	if _, err := Podman(ctx, run...); err != nil {
		return nil, err
	}
	return c, nil
}

// RunContainer runs spec in the foreground, removes it, and returns its
// output (stdout and stderr).
func (l *Lab) RunContainer(ctx context.Context, s ContainerSpec) ([]byte, error) {
	args, err := l.runArgs(s)
	if err != nil {
		return nil, err
	}
	run := append([]string{"run", "--rm", "--name", l.containerName(s.Name)}, args...)
	run = append(append(run, s.Image), s.Args...)
	cmd := exec.CommandContext(ctx, "podman", append(append([]string{}, podmanGlobal...), run...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("lab: podman run %s %s: %w", s.Image, strings.Join(s.Args, " "), err)
	}
	return out, nil
}

// State is the container's state ("running", "exited", ...) and, once it
// has exited, its exit code.
func (c *Container) State(ctx context.Context) (state string, exitCode int, err error) {
	out, err := Podman(ctx, "inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", c.Name)
	if err != nil {
		return "", 0, err
	}
	_, err = fmt.Sscan(string(out), &state, &exitCode)
	return state, exitCode, err
}

// Running says whether the container runs; if not, why (state, exit code).
func (c *Container) Running(ctx context.Context) error {
	state, code, err := c.State(ctx)
	if err != nil {
		return err
	}
	if state != "running" {
		return fmt.Errorf("container %s is %s (exit code %d)", c.Name, state, code)
	}
	return nil
}

// Stop stops the container as a kubelet deletes a pod: SIGTERM, then
// SIGKILL after grace; then removes it. Its log file stays.
func (c *Container) Stop(ctx context.Context, grace time.Duration) error {
	secs := fmt.Sprint(int(grace.Seconds()))
	_, err := Podman(ctx, "stop", "--time", secs, c.Name)
	if _, rmErr := Podman(ctx, "rm", "--force", "--time", "0", c.Name); rmErr != nil && err == nil {
		err = rmErr
	}
	return err
}

// LogTail returns the last n bytes of the container's output.
func (c *Container) LogTail(n int) string { return fileTail(c.Log, n) }

// RemoveContainers force-removes every container of the lab with prefix
// (bounded by 60 s).
func RemoveContainers(prefix string) error {
	if !prefixRE.MatchString(prefix) {
		return fmt.Errorf("lab: bad prefix %q", prefix)
	}
	names, err := containerNames()
	if err != nil {
		return err
	}
	return removeContainers(names, func(p string) bool { return p == prefix })
}

// RemoveStaleContainers removes the containers of the runs of stem whose
// process is gone (see DownStale). Nothing to do, and no error, without
// podman.
func RemoveStaleContainers(stem string) error {
	if err := checkStem(stem); err != nil {
		return err
	}
	names, err := containerNames()
	if err != nil {
		return err
	}
	stale := map[string]bool{}
	for _, p := range stalePrefixes(stem, names, containerPrefix) {
		stale[p] = true
	}
	return removeContainers(names, func(p string) bool { return stale[p] })
}

// containerPrefix is the lab prefix of a container name ("" if none).
func containerPrefix(name string) string {
	p, _, ok := strings.Cut(name, "-")
	if !ok || !prefixRE.MatchString(p) {
		return ""
	}
	return p
}

// containerNames lists every podman container (nil without podman).
func containerNames() ([]string, error) {
	if _, err := exec.LookPath("podman"); err != nil {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := Podman(ctx, "ps", "--all", "--format", "{{.Names}}")
	if err != nil {
		return nil, err
	}
	names := strings.Fields(string(out))
	sort.Strings(names)
	return names, nil
}

func removeContainers(names []string, match func(prefix string) bool) error {
	var rm []string
	for _, n := range names {
		if p := containerPrefix(n); p != "" && match(p) {
			rm = append(rm, n)
		}
	}
	if len(rm) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, err := Podman(ctx, append([]string{"rm", "--force", "--time", "5"}, rm...)...)
	return err
}
