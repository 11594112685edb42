// Command bignode measures start and restart over a big table (issue 14,
// point 3): in one lab with one kube-apiserver it creates N single-stack
// IPv6 ClusterIP Services (one port, M fake endpoints each, spread over many
// fake nodes) plus one probe Service whose endpoint is a real IPv6 echo
// server in a lab pod, then measures, for each case, "process start → the
// change made at that moment is served": the probe Service's EndpointSlice is
// moved to another pod right after the process starts, and a pod of that
// node connects to the probe Service's cluster IP every 200 ms until the new
// pod answers.
//
// Cases (in the order run):
//
//	a0  kube-proxy --proxy-mode nftables, cold start on an empty node (node1)
//	ref svcproxy (compact layout), cold start on an empty node (node2)
//	a   kube-proxy nftables restarted over its own N-Service table (node1)
//	b   svcproxy (compact) restarted over its own table (node2)
//	    (a and b alternately, -repeat times each: a#2, b#2, ...)
//	    (prep: svcproxy --rule-layout=kube-proxy makes kube-proxy's layout on
//	    node2, over the compact table, and on node3, from empty; not timed
//	    as cases, but logged)
//	e   svcproxy --rule-layout=kube-proxy restarted over its own table
//	    (node2); then SIGKILLed
//	c   svcproxy (compact) started over kube-proxy's layout left by a
//	    SIGKILLed process, with kubelet's hint chain (node2)
//	d   the same without the hint chain (node3)
//
// It never saves a whole table: progress is read from the daemons' metrics,
// their logs, single chains and traffic. Every wait is bounded; SIGINT /
// SIGTERM / -timeout cancel the run and the lab is torn down (its namespaces,
// its processes, the control plane) exactly once.
//
// Run it through `make bignode` (N=10000 by default, N=1000 for a quick
// check); root, the lab tools and the pinned kube-apiserver and kube-proxy.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/svcproxy/svcproxy/hack/lab"
)

var logf = log.New(os.Stderr, "bignode: ", log.Ltime|log.Lmicroseconds).Printf

// config is the command line, parsed once.
type config struct {
	N         int           // Services
	M         int           // fake endpoints per Service
	Workers   int           // concurrent API creates
	Repeat    int           // restarts a and b, each, alternately
	Layouts   bool          // also cases e, c and d (kube-proxy's layout)
	Stem      string        // lab prefix stem (lab.RunPrefix)
	Svcproxy  string        // svcproxy binary
	KubeProxy string        // kube-proxy binary
	Out       string        // where the table is written
	CaseBound time.Duration // bound on one case (start → served, then syncs)
	PrepBound time.Duration // bound on a preparation start (kube-proxy layout, cold)
	Timeout   time.Duration // bound on the whole run
}

func parseConfig(args []string) (config, error) {
	var c config
	fs := flag.NewFlagSet("bignode", flag.ContinueOnError)
	fs.IntVar(&c.N, "n", 10000, "single-stack IPv6 ClusterIP Services to create")
	fs.IntVar(&c.M, "m", 10, "fake endpoints per Service")
	fs.IntVar(&c.Workers, "workers", 32, "concurrent creates through the API")
	fs.IntVar(&c.Repeat, "repeat", 1, "how many times cases a and b (the restarts) are each measured, alternately")
	fs.BoolVar(&c.Layouts, "layouts", true, "also the kube-proxy-layout cases (e, c, d; the layout's cold sync takes 3-15 min at 10,000)")
	fs.StringVar(&c.Stem, "stem", "svpbg", "lab prefix stem (the lab is <stem><pid>)")
	fs.StringVar(&c.Svcproxy, "svcproxy", "bin/svcproxy", "svcproxy binary")
	fs.StringVar(&c.KubeProxy, "kube-proxy", "", "kube-proxy binary (default: the cached pinned build)")
	fs.StringVar(&c.Out, "out", "_output/bignode.txt", "where to write the table")
	fs.DurationVar(&c.CaseBound, "case-timeout", 10*time.Minute, "bound on one case")
	fs.DurationVar(&c.PrepBound, "prep-timeout", 20*time.Minute, "bound on preparing a table")
	fs.DurationVar(&c.Timeout, "timeout", 150*time.Minute, "bound on the whole run")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if c.KubeProxy == "" {
		c.KubeProxy = lab.KubeBinary("kube-proxy")
	}
	switch {
	case c.N < 1 || c.N > 100000:
		return c, fmt.Errorf("-n must be 1..100000, got %d", c.N)
	case c.M < 1 || c.M > 100:
		return c, fmt.Errorf("-m must be 1..100, got %d", c.M)
	case c.Repeat < 1 || c.Repeat > 10:
		return c, fmt.Errorf("-repeat must be 1..10, got %d", c.Repeat)
	case c.Workers < 1 || c.Workers > 256:
		return c, fmt.Errorf("-workers must be 1..256, got %d", c.Workers)
	}
	for _, b := range []string{c.Svcproxy, c.KubeProxy} {
		if _, err := os.Stat(b); err != nil {
			return c, fmt.Errorf("binary: %w", err)
		}
	}
	return c, nil
}

func main() {
	cfg, err := parseConfig(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "bignode:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, stop) // a second signal kills at once

	r := &runner{cfg: cfg}
	err = r.run(ctx)
	if ctx.Err() != nil {
		logf("interrupted: the lab has been torn down")
	}
	out := r.report()
	fmt.Print(out)
	if err := os.MkdirAll(filepath.Dir(cfg.Out), 0o755); err == nil {
		_ = os.WriteFile(cfg.Out, []byte(out), 0o644)
	}
	if err != nil {
		logf("FAILED: %v", err)
		os.Exit(1)
	}
}

// run sets up, runs every case and tears down (also on failure or
// cancellation), bounded by cfg.Timeout.
func (r *runner) run(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	defer r.tearDown()
	r.started = time.Now()
	r.loadBefore = loadavg()
	if err := r.setUp(ctx); err != nil {
		return fmt.Errorf("setup: %w", err)
	}
	err := r.cases(ctx)
	r.loadAfter = loadavg()
	if err != nil && ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
		err = fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	return err
}
