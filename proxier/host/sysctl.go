package host

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

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
// parameters).
type ProcSys struct{}

var _ SysctlReader = ProcSys{}

// Path is the file behind a sysctl name.
func (ProcSys) Path(name string) string {
	switch {
	case filepath.IsAbs(name):
		return name
	case strings.Contains(name, "/"):
		return filepath.Join("/proc/sys", name)
	}
	return filepath.Join("/proc/sys", strings.ReplaceAll(name, ".", "/"))
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
