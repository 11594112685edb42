package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/svcproxy/svcproxy/hack/lab"
)

// variant is one proxy under test: a column of the report, on a node of its
// own.
type variant struct {
	label string // column header, e.g. "kube-proxy"
	short string // in the ratio column's header, e.g. "kp"
	// command is the command line; common holds the flags every variant
	// gets (kube-proxy's, as a DaemonSet passes them).
	command func(common []string) []string
}

// variants are the proxies compared, in column order: the first is the
// baseline of the ratio columns (each other / first). Variant i runs on lab
// node i+1.
func variants(cfg config) []variant {
	return []variant{
		{label: "svcproxy", short: "svp", command: func(c []string) []string { return append([]string{cfg.Svcproxy}, c...) }},
		{label: "kube-proxy", short: "kp", command: func(c []string) []string { return append([]string{cfg.KubeProxy}, c...) }},
	}
}

// commonFlags are the flags every variant gets on node n.
func (b *bench) commonFlags(n *lab.Node) []string {
	return []string{
		"--kubeconfig", b.cp.Kubeconfig(),
		"--hostname-override", n.Name,
		"--cluster-cidr", lab.PodNetwork,
		"--proxy-mode", "iptables",
		"--iptables-min-sync-period", b.cfg.MinSync.String(),
		"--iptables-sync-period", "1h",
		"--conntrack-max-per-core", "0",
		"--healthz-bind-address", n.IP + ":10256",
		"--metrics-bind-address", "127.0.0.1:10249",
		"--v", "1",
	}
}

// daemon is a variant running on its node.
type daemon struct {
	variant
	node  *lab.Node
	argv  []string
	proc  *lab.Proc
	start time.Time
}

// ready and restart bounds: a cold start with a large N takes minutes
// (kube-proxy's first restore of 160k rules: several minutes on 2 CPUs).
const (
	readyBound   = 90 * time.Second
	restartBound = 10 * time.Minute
)

// startDaemon starts d and waits up to bound for its first sync after the
// start.
func (b *bench) startDaemon(ctx context.Context, d *daemon, bound time.Duration) error {
	d.start = time.Now()
	p, err := b.l.StartProcess(d.node.NS, d.label+"-"+d.node.Name, d.argv...)
	if err != nil {
		return err
	}
	d.proc = p
	err = lab.Poll(ctx, bound, 100*time.Millisecond, func() error {
		if exited, werr := p.Exited(); exited {
			return fmt.Errorf("%w: %s exited: %v\n%s", lab.ErrStop, d.label, werr, p.LogTail(3000))
		}
		m, err := b.metrics(ctx, d)
		if err != nil {
			return err
		}
		if m[lastSync] < unix(d.start) {
			return errors.New("no sync yet")
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("%s on %s not ready: %w", d.label, d.node.Name, err)
	}
	logf("%s on %s ready in %s (pid %d)", d.label, d.node.Name, time.Since(d.start).Round(time.Millisecond), p.Pid())
	return nil
}

// stop stops d's process (if started).
func (d *daemon) stop() {
	if d.proc != nil {
		_ = d.proc.Stop()
	}
}

// cpu returns each daemon's CPU seconds (user+system, including waited-for
// children such as iptables-restore).
func (b *bench) cpu() []float64 {
	out := make([]float64, len(b.ds))
	for k, d := range b.ds {
		out[k], _ = procStats(d.proc.Pid())
	}
	return out
}

// procStats reads utime+stime+cutime+cstime (seconds) and VmRSS (KiB).
func procStats(pid int) (cpu, rssKiB float64) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err == nil {
		s := string(data)
		if j := strings.LastIndexByte(s, ')'); j >= 0 {
			f := strings.Fields(s[j+1:])
			// fields after ")" start at field 3 (state); utime is field 14.
			if len(f) > 14 {
				for _, x := range f[11:15] {
					v, _ := strconv.ParseFloat(x, 64)
					cpu += v
				}
				cpu /= 100 // USER_HZ
			}
		}
	}
	if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for _, line := range strings.Split(string(st), "\n") {
			if strings.HasPrefix(line, "VmRSS:") {
				f := strings.Fields(line)
				if len(f) >= 2 {
					rssKiB, _ = strconv.ParseFloat(f[1], 64)
				}
			}
		}
	}
	return cpu, rssKiB
}

func numCPU() int {
	data, _ := os.ReadFile("/proc/cpuinfo")
	return strings.Count(string(data), "processor\t:")
}
