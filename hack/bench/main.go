// Command bench measures svcproxy side by side with the real kube-proxy
// (iptables mode) in one lab: node1 runs svcproxy, node2 runs kube-proxy
// v1.36.3, both with the same flags against the same kube-apiserver, each in
// its own node namespace. It creates N service ports × M endpoints through
// the API and measures sync times, rule-update latency and the cost of a
// connection to a ClusterIP, then prints a table (also written to -out).
//
// Run it through hack/bench.sh (`make bench`); it needs root, the lab tools
// and the pinned kube-apiserver and kube-proxy binaries.
//
// Addresses: the IPv4 service CIDR of the lab is 203.0.113.0/25 (about 120
// ClusterIPs), so N service ports are made of ceil(N/P) Services with P ports
// each (P = ceil(N/100)). Every service port has its own KUBE-SVC chain and
// KUBE-SERVICES rule, which is what sync cost and dispatch depend on.
// Endpoints are fake addresses in 198.51.100.128/25 (no pod lives there; the
// rules are programmed but never used); the per-connection part uses real
// echo backends in the lab's pods.
//
// The parts, one file each:
//
//	config.go       flags → config (passed down; nothing reads flags later)
//	daemon.go       the proxies under test: one variant per column (label,
//	                node, command line), start / ready / stop, CPU and RSS
//	setup.go        lab, control plane, cluster objects, echo backends,
//	                daemons; tearDown (run once, by run, after everything)
//	load.go         the N service ports: objects and their creation
//	metrics.go      the daemons' kubeproxy_* metrics (hack/lab's scraper and
//	                the Prometheus text parser) and iptables-save
//	bulk.go         a.  bulk creation → all chains present, sync cost
//	updates.go      b.  single-EndpointSlice update latency
//	connections.go  c.  per-connection cost
//	coldstart.go    a'. cold start with everything programmed; resources
//	report.go       the table
//
// A measurement is a function in the measurements list below; a daemon
// variant is an entry of variants() in daemon.go.
//
// Shutdown has one owner: SIGINT/SIGTERM (or -timeout) cancels the context
// every phase runs under; each phase waits for the goroutines it started
// before it returns; then run tears the lab down, exactly once.
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
)

var logf = log.New(os.Stderr, "bench: ", log.Ltime|log.Lmicroseconds).Printf

// measurements run in this order; each adds its rows to the report.
var measurements = []struct {
	name string
	run  func(*bench, context.Context) error
}{
	{"a. bulk", (*bench).bulk},
	{"b. updates", (*bench).updates},
	{"c. connections", (*bench).connections},
	{"a'. cold start", (*bench).coldStart},
	{"resources", (*bench).resources},
}

func main() {
	cfg, err := parseConfig(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// After the first signal a second one kills at once (hack/bench.sh
	// still removes the lab then).
	context.AfterFunc(ctx, stop)

	report := &table{}
	err = run(ctx, cfg, report)
	if ctx.Err() != nil {
		logf("interrupted: the lab has been torn down")
	}
	if err != nil {
		if len(report.rows) > 0 {
			fmt.Print(report.String())
			fmt.Println("\n(incomplete: the run failed; see the error below)")
		}
		logf("FAILED: %v", err)
		os.Exit(1)
	}
	out := report.String()
	fmt.Print(out)
	if err := os.MkdirAll(filepath.Dir(cfg.Out), 0o755); err == nil {
		_ = os.WriteFile(cfg.Out, []byte(out), 0o644)
	}
}

// run sets the bench up, runs every measurement and tears everything down
// (also when setup or a measurement fails, or ctx is cancelled), bounded by
// cfg.Timeout.
func run(ctx context.Context, cfg config, report *table) (err error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	b := newBench(cfg, report)
	defer b.tearDown() // after every phase has returned, and with it its goroutines
	if err := b.setUp(ctx); err != nil {
		return err
	}
	for _, m := range measurements {
		if err := m.run(b, ctx); err != nil {
			if ctxErr := ctx.Err(); ctxErr != nil && !errors.Is(err, ctxErr) {
				err = fmt.Errorf("%w (%v)", ctxErr, err)
			}
			return fmt.Errorf("%s: %w", m.name, err)
		}
	}
	return nil
}
