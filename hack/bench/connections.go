package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/svcproxy/svcproxy/hack/lab"
)

// rounds of direct, first and last connections alternate (less sensitive to
// the other daemons' or the API server's bursts on 2 CPUs).
const rounds = 5

// c. per connection: sequential TCP connect+echo+close from pod 1 of each
// running daemon's node to the ClusterIPs of the first and the last Service
// in its dispatch order (their endpoint is pod 2 of the same node), and to
// that pod's IP directly; per-connection p50 and p99, and how many nat
// rules a new connection to each walks before its Service's rule.
func (b *bench) connections(ctx context.Context) error {
	n := len(b.ds)
	cols := map[string][]float64{}
	for _, k := range []string{"first50", "first99", "last50", "last99", "direct50", "firstPos", "lastPos", "services"} {
		cols[k] = nans(n)
	}
	for k, d := range b.ds {
		if !d.running {
			continue
		}
		c, err := b.connectionCost(ctx, d)
		if err != nil {
			return err
		}
		logf("%s: first %.0f/%.0f µs, last %.0f/%.0f µs (p50/p99), pod IP %.0f µs; rules walked %.0f / %.0f",
			d.label, c.first[0], c.first[1], c.last[0], c.last[1], c.direct, c.firstPos, c.lastPos)
		cols["first50"][k], cols["first99"][k] = c.first[0], c.first[1]
		cols["last50"][k], cols["last99"][k] = c.last[0], c.last[1]
		cols["direct50"][k], cols["services"][k] = c.direct, c.services
		cols["firstPos"][k], cols["lastPos"][k] = c.firstPos, c.lastPos
	}
	b.res.firstP50, b.res.lastP50 = cols["first50"], cols["last50"]
	ratio := nans(n)
	for k := range ratio {
		ratio[k] = cols["last50"][k] / cols["first50"][k]
	}
	t := b.results
	t.sec(fmt.Sprintf("c. per connection: %d sequential TCP connect+echo+close per target (%d alternating rounds) from a pod to a ClusterIP whose endpoint is a pod on the same node", b.cfg.Conns, rounds))
	t.add("first Service in dispatch order: p50 (µs)", "%.0f", cols["first50"]...)
	t.add("first Service in dispatch order: p99 (µs)", "%.0f", cols["first99"]...)
	t.add("last Service in dispatch order: p50 (µs)", "%.0f", cols["last50"]...)
	t.add("last Service in dispatch order: p99 (µs)", "%.0f", cols["last99"]...)
	t.add("last / first p50", "%.2f", ratio...)
	t.add("pod IP directly (no DNAT): p50 (µs)", "%.0f", cols["direct50"]...)
	t.add("nat rules walked to the first Service's rule", "%.0f", cols["firstPos"]...)
	t.add("nat rules walked to the last Service's rule", "%.0f", cols["lastPos"]...)
	t.add("KUBE-SERVICES rules", "%.0f", cols["services"]...)
	t.note("Dispatch order: svcproxy sorts KUBE-SERVICES by name (kube-proxy layout, and compact up to 256 ports) or dispatches by the low bits of the cluster IP into about √N buckets (compact above 256); kube-proxy's iptables mode writes KUBE-SERVICES in Go map order, so its \"first\"/\"last\" targets sit wherever that sync put them (rules walked printed); its nftables mode looks the cluster IP up in a verdict map (n/a).")
	return nil
}

type connCost struct {
	first, last [2]float64 // p50, p99 µs per connection
	direct      float64    // p50 µs, to the pod IP
	// nat rules walked to the first/last target's rule; KUBE-SERVICES rules
	// (NaN for nftables mode)
	firstPos, lastPos, services float64
}

func (b *bench) connectionCost(ctx context.Context, d *daemon) (connCost, error) {
	c := connCost{firstPos: nan, lastPos: nan, services: nan}
	i := d.node.Index
	targets := b.echoTargets(i)
	if !d.nft {
		svcs, err := b.chain(ctx, d, "KUBE-SERVICES")
		if err != nil {
			return c, err
		}
		c.services = float64(countRules(svcs, "KUBE-SERVICES"))
		list := func(chain string) (string, error) { return b.chain(ctx, d, chain) }
		for _, e := range targets {
			pos, err := rulesWalked(svcs, list, fmt.Sprintf(`"%s/%s:tcp cluster IP"`, kns, e.name), e.ip)
			if err != nil {
				return c, fmt.Errorf("%s: %s: %w", d.label, e.name, err)
			}
			if e.which == "first" {
				c.firstPos = pos
			} else {
				c.lastPos = pos
			}
		}
	}
	client, backend := b.l.Pod(i, 1), b.l.Pod(i, 2)
	dsts := []string{net.JoinHostPort(backend.IP6, strconv.Itoa(echoPort))}
	for _, e := range targets {
		dsts = append(dsts, net.JoinHostPort(e.ip, "80"))
	}
	// Warm up (and check every path works).
	for _, dst := range dsts {
		if _, err := connLoop(ctx, client.NS, dst, 50); err != nil {
			return c, fmt.Errorf("%s: %w", d.label, err)
		}
	}
	perRound := b.cfg.Conns / rounds
	samples := make([][]float64, len(dsts))
	for r := 0; r < rounds; r++ {
		for k, dst := range dsts {
			xs, err := connLoop(ctx, client.NS, dst, perRound)
			if err != nil {
				return c, fmt.Errorf("%s: %w", d.label, err)
			}
			samples[k] = append(samples[k], xs...)
		}
	}
	c.direct = quantile(samples[0], 0.5)
	c.first = [2]float64{quantile(samples[1], 0.5), quantile(samples[1], 0.99)}
	c.last = [2]float64{quantile(samples[2], 0.5), quantile(samples[2], 0.99)}
	return c, nil
}

// rulesWalked returns how many nat rules a new connection to ip walks up to
// and including its Service's rule (the one whose comment is comment):
// its position in KUBE-SERVICES (svcs, as `ip6tables -S` lists it) or, when
// KUBE-SERVICES dispatches ("-d VALUE/MASK -j KUBE-DISPATCH-..."), the position
// of the matching bucket rule plus the rule's position in that bucket
// (listed with list).
func rulesWalked(svcs string, list func(chain string) (string, error), comment, ip string) (float64, error) {
	dst, err := netip.ParseAddr(ip)
	if err != nil {
		return 0, err
	}
	pos := 0
	for _, line := range strings.Split(svcs, "\n") {
		if !strings.HasPrefix(line, "-A KUBE-SERVICES ") {
			continue
		}
		pos++
		if strings.Contains(line, comment) {
			return float64(pos), nil
		}
		bucket, ok := dispatchJump(line, dst)
		if !ok {
			continue
		}
		chain, err := list(bucket)
		if err != nil {
			return 0, err
		}
		in := 0
		for _, l := range strings.Split(chain, "\n") {
			if !strings.HasPrefix(l, "-A "+bucket+" ") {
				continue
			}
			in++
			if strings.Contains(l, comment) {
				return float64(pos + in), nil
			}
		}
		return 0, fmt.Errorf("not in its bucket %s", bucket)
	}
	return 0, fmt.Errorf("no rule %s in KUBE-SERVICES", comment)
}

// dispatchJump reports whether a KUBE-SERVICES rule "-d VALUE/MASK ... -j
// CHAIN" matches dst, and its target chain. MASK is an address or a prefix
// length.
func dispatchJump(line string, dst netip.Addr) (string, bool) {
	f := strings.Fields(line)
	var match, target string
	for k := 0; k+1 < len(f); k++ {
		switch f[k] {
		case "-d":
			match = f[k+1]
		case "-j":
			target = f[k+1]
		}
	}
	if match == "" || !strings.HasPrefix(target, "KUBE-DISPATCH-") {
		return "", false
	}
	value, mask, ok := strings.Cut(match, "/")
	v, err := netip.ParseAddr(value)
	if !ok || err != nil || v.Is4() != dst.Is4() {
		return "", false
	}
	var m netip.Addr
	if bits, err := strconv.Atoi(mask); err == nil {
		p, err := v.Prefix(bits)
		if err != nil {
			return "", false
		}
		return target, p.Contains(dst)
	}
	if m, err = netip.ParseAddr(mask); err != nil {
		return "", false
	}
	a, mb, vb := dst.AsSlice(), m.AsSlice(), v.AsSlice()
	for k := range a {
		if a[k]&mb[k] != vb[k]&mb[k] {
			return target, false
		}
	}
	return target, true
}

// connLoop makes n sequential TCP connections from namespace ns to dst,
// reading the echo server's one-line greeting each time, and returns each
// connection's time in µs. It stops early when ctx ends.
func connLoop(ctx context.Context, ns, dst string, n int) ([]float64, error) {
	out := make([]float64, 0, n)
	err := lab.InNetns(ns, func() error {
		for i := 0; i < n; i++ {
			if err := ctx.Err(); err != nil {
				return err
			}
			start := time.Now()
			c, err := net.DialTimeout("tcp", dst, 2*time.Second)
			if err != nil {
				return fmt.Errorf("connection %d to %s: %w", i, dst, err)
			}
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
				c.Close()
				return fmt.Errorf("connection %d to %s: read: %w", i, dst, err)
			}
			// RST on close (SO_LINGER 0): no TIME_WAIT pile-up over thousands of connections.
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
			c.Close()
			out = append(out, float64(time.Since(start).Nanoseconds())/1000)
		}
		return nil
	})
	return out, err
}
