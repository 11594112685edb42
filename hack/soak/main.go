// Command soak runs svcproxy on the lab's nodes under steady API churn and
// scheduled faults, probes services the whole time, and checks the answers,
// the convergence after each fault, healthz, crashes and, at the end, that
// the live rules equal what `svcproxy dump` renders from the API's final
// state. `make soak` runs it (SOAK=3m by default, SOAK=30m for a long run).
//
// It prints its figures and exits 1 when a target is missed, naming it
// (2 when the environment could not be built). Every loop is bounded in
// count and time; no verdict depends on how much a loaded machine manages
// in a fixed time: targets are stated in syncs and in the daemon's own
// timestamps, and the wall-clock deadlines are generous ones that only a
// daemon making no progress misses.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"math/rand"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"
)

// logf prints progress (stderr); the report goes to stdout.
var logf = log.New(os.Stderr, "soak: ", log.Ltime|log.Lmicroseconds).Printf

type config struct {
	Duration      time.Duration
	Svcproxy      string
	Seed          int64
	Nodes         int
	PodsPerNode   int
	MinSync       time.Duration
	SyncPeriod    time.Duration
	ChurnInterval time.Duration
	ProbeTimeout  time.Duration
	// Converge is the generous deadline of each fault's convergence: missed
	// only when a node makes no progress at all.
	Converge time.Duration
	// Slack is what the daemon's timers may fire late on a loaded machine
	// (scheduling), in the timing targets.
	Slack time.Duration
	Keep  bool
	// Capture records packets and conntrack events for a post-mortem.
	Capture bool
	// Faults are the kinds injected, round-robin.
	Faults []string
}

func main() {
	var cfg config
	d := os.Getenv("SOAK")
	if d == "" {
		d = "3m"
	}
	def, err := time.ParseDuration(d)
	if err != nil {
		fmt.Fprintf(os.Stderr, "soak: SOAK=%q: %v\n", d, err)
		os.Exit(2)
	}
	flag.DurationVar(&cfg.Duration, "duration", def, "how long churn, faults and probes run (default $SOAK or 3m)")
	flag.StringVar(&cfg.Svcproxy, "svcproxy", "bin/svcproxy", "the svcproxy binary the nodes run")
	flag.Int64Var(&cfg.Seed, "seed", time.Now().UnixNano()%1000000, "random seed of the churn (printed; rerun with it)")
	flag.IntVar(&cfg.Nodes, "nodes", 2, "lab nodes running svcproxy (2-3)")
	flag.DurationVar(&cfg.MinSync, "min-sync", time.Second, "--iptables-min-sync-period of the daemons")
	flag.DurationVar(&cfg.SyncPeriod, "sync-period", 5*time.Second, "--iptables-sync-period of the daemons (healthz threshold: twice this)")
	flag.DurationVar(&cfg.ChurnInterval, "churn-interval", 400*time.Millisecond, "one API write per interval")
	faults := flag.String("faults", strings.Join(faultKinds, ","), "fault kinds injected, in this order, round-robin")
	flag.BoolVar(&cfg.Capture, "capture", false, "record packets (tcpdump on each node's pod bridge and in the probing pods) and each node's conntrack events into the lab's logs directory, for a post-mortem of a wrong answer")
	flag.BoolVar(&cfg.Keep, "keep", false, "leave the lab up at the end (hack/lab.sh down --prefix P removes it)")
	flag.Parse()
	cfg.Faults = strings.Split(*faults, ",")
	for _, k := range cfg.Faults {
		if !slices.Contains(faultKinds, k) {
			fmt.Fprintf(os.Stderr, "soak: -faults: unknown kind %q (known: %s)\n", k, strings.Join(faultKinds, ","))
			os.Exit(2)
		}
	}
	cfg.PodsPerNode = 3
	// Generous: a SYN is sent at 0, 1 and 3 s; a slow answer on a loaded
	// machine is not a wrong one.
	cfg.ProbeTimeout = 5 * time.Second
	windowGrace = cfg.ProbeTimeout + time.Second
	cfg.Converge = 2 * time.Minute
	cfg.Slack = 3 * time.Second
	if cfg.Nodes < 2 || cfg.Nodes > 3 {
		fmt.Fprintln(os.Stderr, "soak: -nodes must be 2 or 3")
		os.Exit(2)
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "soak: must run as root (network namespaces, iptables)")
		os.Exit(2)
	}

	ctx, cancel := context.WithCancel(context.Background())
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	s := &soak{cfg: cfg, rnd: rand.New(rand.NewSource(cfg.Seed))}
	go func() {
		got := <-sig
		logf("got %v: stopping (a second signal tears down at once)", got)
		s.interrupted.Store(true)
		cancel()
		<-sig
		s.teardown()
		os.Exit(130)
	}()

	code := s.run(ctx)
	s.teardown()
	os.Exit(code)
}
