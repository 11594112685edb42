package host

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"k8s.io/klog/v2"
)

// SysctlReader reads a sysctl by its dotted name ("net.ipv4.ip_forward").
// A missing sysctl is an error wrapping fs.ErrNotExist.
type SysctlReader interface {
	Sysctl(name string) (string, error)
}

// ProcSys reads and writes sysctls through /proc/sys (per network namespace
// for net.*). Names are dotted ("net.ipv4.ip_forward"), slashed
// ("net/netfilter/nf_conntrack_max") or absolute paths (for /sys module
// parameters and /proc/self files).
type ProcSys struct {
	// Root, when set, is where "/" is: every path is taken under it (a
	// fake /proc and /sys for tests). Empty means the real ones.
	Root string
}

var _ SysctlReader = ProcSys{}

// Path is the file behind a sysctl name.
func (p ProcSys) Path(name string) string {
	switch {
	case filepath.IsAbs(name):
	case strings.Contains(name, "/"):
		name = filepath.Join("/proc/sys", name)
	default:
		name = filepath.Join("/proc/sys", strings.ReplaceAll(name, ".", "/"))
	}
	if p.Root != "" {
		return filepath.Join(p.Root, name)
	}
	return name
}

// Sysctl reads a setting as text, without the trailing newline.
func (p ProcSys) Sysctl(name string) (string, error) {
	b, err := os.ReadFile(p.Path(name))
	if err != nil {
		return "", err
	}
	return string(bytes.TrimSpace(b)), nil
}

// Get reads an integer setting.
func (p ProcSys) Get(name string) (int, error) {
	s, err := p.Sysctl(name)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(s)
}

// Set writes an integer setting.
func (p ProcSys) Set(name string, value int) error {
	err := os.WriteFile(p.Path(name), []byte(strconv.Itoa(value)), 0o640)
	if errors.Is(err, os.ErrPermission) {
		return fmt.Errorf("%w (read-only here; inside a network namespace set --conntrack-max-per-core=0)", err)
	}
	return err
}

// IntSysctls reads and writes integer sysctls by slashed name relative to
// /proc/sys ("net/netfilter/nf_conntrack_max") or absolute path. ProcSys is
// the real one.
type IntSysctls interface {
	Get(name string) (int, error)
	Set(name string, value int) error
}

var _ IntSysctls = ProcSys{}

// EnsureSysctl sets name to value unless it already has it, logging each
// write; the error names the setting.
func EnsureSysctl(logger klog.Logger, sys IntSysctls, name string, value int) error {
	if cur, err := sys.Get(name); err == nil && cur == value {
		return nil
	}
	logger.Info("Setting sysctl", "name", name, "value", value)
	if err := sys.Set(name, value); err != nil {
		return fmt.Errorf("sysctl %s=%d: %w", strings.ReplaceAll(name, "/", "."), value, err)
	}
	return nil
}

// OOMScoreAdjPath is where a process sets its own OOM score adjustment.
const OOMScoreAdjPath = "/proc/self/oom_score_adj"

// ApplyOOMScoreAdj writes value to /proc/self/oom_score_adj (under
// p.Root), as kube-proxy's OOM adjuster does for --oom-score-adj: two tries
// 100 ms apart; a missing file is not retried. The error names the file.
// kube-proxy only logs it (at -v=2) and carries on; so does the daemon.
func (p ProcSys) ApplyOOMScoreAdj(value int) error {
	path := p.Path(OOMScoreAdjPath)
	var err error
	for try := 0; try < 2; try++ {
		if try > 0 {
			time.Sleep(100 * time.Millisecond)
		}
		if err = os.WriteFile(path, []byte(strconv.Itoa(value)), 0o644); err == nil || errors.Is(err, os.ErrNotExist) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("oom_score_adj %d: %w", value, err)
	}
	return nil
}
