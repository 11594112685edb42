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
	N         int           // service ports to create
	M         int           // endpoints per service port
	K         int           // single-EndpointSlice updates (latency)
	Conns     int           // sequential TCP connections per node (per-connection cost)
	Prefix    string        // lab prefix
	Svcproxy  string        // svcproxy binary
	KubeProxy string        // kube-proxy binary
	MinSync   time.Duration // --iptables-min-sync-period for every daemon
	Out       string        // where the table is written
	Timeout   time.Duration // bound on the whole run
}

// maxEndpoints bounds M: fake endpoints come from a /25 and must not repeat
// within one Service.
const maxEndpoints = 120

func parseConfig(args []string) (config, error) {
	var c config
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.IntVar(&c.N, "n", 1000, "service ports to create")
	fs.IntVar(&c.M, "m", 10, "endpoints per service port")
	fs.IntVar(&c.K, "k", 20, "single-EndpointSlice updates for the latency measurement")
	fs.IntVar(&c.Conns, "conns", 2000, "sequential TCP connections per node for the per-connection cost")
	fs.StringVar(&c.Prefix, "prefix", "svpbn", "lab prefix")
	fs.StringVar(&c.Svcproxy, "svcproxy", "bin/svcproxy", "svcproxy binary")
	fs.StringVar(&c.KubeProxy, "kube-proxy", "", "kube-proxy binary (default: the cached pinned build)")
	fs.DurationVar(&c.MinSync, "min-sync", time.Second, "--iptables-min-sync-period for both")
	fs.StringVar(&c.Out, "out", "_output/bench.txt", "where to write the table")
	fs.DurationVar(&c.Timeout, "timeout", 15*time.Minute, "bound on the whole run")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if c.KubeProxy == "" {
		c.KubeProxy = lab.KubeBinary("kube-proxy")
	}
	switch {
	case c.N < 1:
		return c, fmt.Errorf("-n must be at least 1, got %d", c.N)
	case c.M < 1 || c.M > maxEndpoints:
		return c, fmt.Errorf("-m must be 1..%d, got %d", maxEndpoints, c.M)
	case c.K < 1:
		return c, fmt.Errorf("-k must be at least 1, got %d", c.K)
	case c.Conns < rounds:
		return c, fmt.Errorf("-conns must be at least %d, got %d", rounds, c.Conns)
	}
	for _, b := range []string{c.Svcproxy, c.KubeProxy} {
		if _, err := os.Stat(b); err != nil {
			return c, fmt.Errorf("binary: %w", err)
		}
	}
	return c, nil
}
