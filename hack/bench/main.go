// Command bench measures svcproxy side by side with the real kube-proxy
// v1.36.3 in one lab, four daemons on four nodes, same flags, same
// kube-apiserver, each in its own node namespace:
//
//	node1  svcproxy --proxy-mode iptables              (compact layout, the default)
//	node2  svcproxy --proxy-mode iptables --rule-layout=kube-proxy
//	node3  kube-proxy --proxy-mode iptables
//	node4  kube-proxy --proxy-mode nftables
//
// It creates N single-stack IPv6 Services (one TCP port, M fake endpoints
// each, on fake nodes) through the API, then starts the daemons one at a
// time and measures the cold start (process start → rules programmed, a
// daemon not done within -cap is stopped and reported as not finished),
// a bare ip6tables-restore of svcproxy's own text, one-endpoint change
// latency, the cost of a new connection to the first and the last Service
// in each daemon's dispatch order, RSS and CPU; then prints a table with
// ratios (also written to -out) and judges issue 9's targets.
//
// Run it through hack/bench.sh (`make bench`); it needs root, the lab tools,
// nft, and the pinned kube-apiserver and kube-proxy binaries.
//
// IPv6: the lab's IPv4 service range is 203.0.113.0/25 (about 120
// ClusterIPs), its IPv6 range 2001:db8:5::/108 (2^20), so the bench's
// Services are single-stack IPv6 at every N and the ip6 tables are the ones
// measured. Endpoints are fake addresses in 2001:db8:9::/64 (no pod lives
// there; the rules are programmed but never used); the per-connection part
// uses real echo backends in the lab's pods. Nothing reads a whole table:
// rules are checked one chain at a time (ip6tables -S CHAIN, nft list
// chain), progress through the daemons' kubeproxy_* metrics.
//
// The parts, one file each:
//
//	config.go       flags → config (passed down; nothing reads flags later)
//	daemon.go       the proxies under test: one variant per column (label,
//	                node, command line), start / stop, chain names and
//	                listings, "programmed", CPU and RSS
//	setup.go        lab, control plane, cluster objects, echo backends;
//	                tearDown (run once, by run, after everything)
//	load.go         the N Services: objects and their creation
//	metrics.go      the daemons' kubeproxy_* metrics (hack/lab's scraper and
//	                the Prometheus text parser)
//	coldstart.go    a.  cold start, bare restore; d. resources
//	updates.go      b.  one-endpoint change latency, restore size, CPU
//	connections.go  c.  per-connection cost, first and last Service
//	report.go       the table
//	targets.go      issue 9's targets, met or missed
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
	"time"
)

var logf = log.New(os.Stderr, "bench: ", log.Ltime|log.Lmicroseconds).Printf

// measurements run in this order; each adds its rows to the report.
var measurements = []struct {
	name string
	run  func(*bench, context.Context) error
}{
	{"a. cold start", (*bench).coldStart},
	{"b. updates", (*bench).updates},
	{"c. connections", (*bench).connections},
	{"d. resources", (*bench).resources},
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
	report.note("load average after the measurements: %s; finished %s", loadAvg(), time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	report.after = b.res.targets(cfg.N)
	return nil
}
