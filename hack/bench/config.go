package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/svcproxy/svcproxy/hack/lab"
)

// config is the command line. It is parsed once and passed down; nothing
// reads flags after parseConfig.
type config struct {
	N         int           // Services (one TCP port each)
	M         int           // endpoints per Service
	K         int           // one-endpoint changes (latency, CPU per update)
	Conns     int           // sequential TCP connections per target (per-connection cost)
	Prefix    string        // lab prefix
	Svcproxy  string        // svcproxy binary
	KubeProxy string        // kube-proxy binary
	MinSync   time.Duration // --iptables-min-sync-period for every daemon
	Cap       time.Duration // bound on one daemon's cold start (reported as "not finished in Cap")
	Restore   bool          // also time a bare ip6tables-restore of svcproxy's text
	Out       string        // where the table is written
	Timeout   time.Duration // bound on the whole run
}

// Limits of the knobs: fake endpoint addresses are 2001:db8:9::<service>:<endpoint>
// (16 bits each), and the lab's IPv6 service range has 2^20 addresses.
const (
	maxEndpoints = 1000
	maxServices  = 50000
)

func parseConfig(args []string) (config, error) {
	var c config
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.IntVar(&c.N, "n", 1000, "Services to create (one TCP port each, single-stack IPv6)")
	fs.IntVar(&c.M, "m", 10, "endpoints per Service")
	fs.IntVar(&c.K, "k", 20, "one-endpoint changes for the latency and CPU-per-update measurement")
	fs.IntVar(&c.Conns, "conns", 2000, "sequential TCP connections per target for the per-connection cost")
	fs.StringVar(&c.Prefix, "prefix", "svpbn", "lab prefix")
	fs.StringVar(&c.Svcproxy, "svcproxy", "bin/svcproxy", "svcproxy binary")
	fs.StringVar(&c.KubeProxy, "kube-proxy", "", "kube-proxy binary (default: the cached pinned build)")
	fs.DurationVar(&c.MinSync, "min-sync", time.Second, "--iptables-min-sync-period for every daemon")
	fs.DurationVar(&c.Cap, "cap", 8*time.Minute, "bound on one daemon's cold start; a daemon not done by then is stopped and reported as not finished")
	fs.BoolVar(&c.Restore, "restore", true, "time a bare ip6tables-restore of `svcproxy dump` text (each layout) in a scratch namespace")
	fs.StringVar(&c.Out, "out", "_output/bench.txt", "where to write the table")
	fs.DurationVar(&c.Timeout, "timeout", 40*time.Minute, "bound on the whole run")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if c.KubeProxy == "" {
		c.KubeProxy = lab.KubeBinary("kube-proxy")
	}
	switch {
	case c.N < 1 || c.N > maxServices:
		return c, fmt.Errorf("-n must be 1..%d, got %d", maxServices, c.N)
	case c.M < 1 || c.M > maxEndpoints:
		return c, fmt.Errorf("-m must be 1..%d, got %d", maxEndpoints, c.M)
	case c.K < 1:
		return c, fmt.Errorf("-k must be at least 1, got %d", c.K)
	case c.Conns < rounds:
		return c, fmt.Errorf("-conns must be at least %d, got %d", rounds, c.Conns)
	case c.Cap < 10*time.Second:
		return c, fmt.Errorf("-cap must be at least 10s, got %s", c.Cap)
	case c.Timeout < c.Cap:
		return c, fmt.Errorf("-timeout (%s) must not be below -cap (%s)", c.Timeout, c.Cap)
	}
	for _, b := range []string{c.Svcproxy, c.KubeProxy} {
		if _, err := os.Stat(b); err != nil {
			return c, fmt.Errorf("binary: %w", err)
		}
	}
	return c, nil
}
