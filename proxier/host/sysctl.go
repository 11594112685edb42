package host

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
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
