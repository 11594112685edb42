package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/svcproxy/svcproxy/hack/lab"
)

// rounds of direct and ClusterIP connections alternate; the median round
// is reported (less sensitive to the other daemon's or the API server's
// bursts on 2 CPUs).
const rounds = 5

// c. per connection: sequential TCP connect+echo+close from pod 1 of each
// daemon's node to a ClusterIP whose endpoint is pod 2 of the same node, and
// to that pod's IP directly; with the rule's position in KUBE-SERVICES.
func (b *bench) connections(ctx context.Context) error {
	t := b.results
	t.sec(fmt.Sprintf("c. per connection: %d sequential TCP connect+echo+close (5 alternating rounds, median round) from a pod to a ClusterIP whose endpoint is a pod on the same node", b.cfg.Conns))
	var per, direct, pos, total []float64
	for _, d := range b.ds {
		c, err := b.connectionCost(ctx, d)
		if err != nil {
			return err
		}
		logf("%s: ClusterIP %.0f µs/conn, pod IP %.0f µs/conn, rule %.0f of %.0f in KUBE-SERVICES", d.label, c.clusterIP, c.podIP, c.position, c.rules)
		per, direct = append(per, c.clusterIP), append(direct, c.podIP)
		pos, total = append(pos, c.position), append(total, c.rules)
	}
	t.add("ClusterIP: time per connection (µs)", "%.0f", per...)
	t.add("pod IP directly (no DNAT; still walks KUBE-SERVICES): time per connection (µs)", "%.0f", direct...)
	t.add("ClusterIP − pod IP (µs)", "%.0f", minus(per, direct)...)
	t.add("KUBE-SERVICES rules", "%.0f", total...)
	t.add("position of the echo Service's rule in KUBE-SERVICES", "%.0f", pos...)
	t.note("A random service's rule sits at ≈ N/2 in KUBE-SERVICES for both (svcproxy sorts by name; kube-proxy writes in map order); a packet to a pod IP or an unknown address walks all of it.")
	return nil
}

type connCost struct {
	clusterIP, podIP float64 // µs per connection, median round
	position, rules  float64 // of the echo Service's rule in KUBE-SERVICES
}

func (b *bench) connectionCost(ctx context.Context, d *daemon) (connCost, error) {
	var c connCost
	i := d.node.Index
	svc, err := b.cs.CoreV1().Services(kns).Get(ctx, b.echoName(i), metav1.GetOptions{})
	if err != nil {
		return c, err
	}
	nat, err := b.nat(ctx, d)
	if err != nil {
		return c, err
	}
	c.position, c.rules = rulePosition(nat, fmt.Sprintf("%s/%s:tcp cluster IP", kns, b.echoName(i)))
	client, backend := b.l.Pod(i, 1), b.l.Pod(i, 2)
	// Warm up (and check the path works).
	if _, err := connLoop(ctx, client.NS, backend.IP, echoPort, 50); err != nil {
		return c, fmt.Errorf("%s: direct: %w", d.label, err)
	}
	if _, err := connLoop(ctx, client.NS, svc.Spec.ClusterIP, 80, 50); err != nil {
		return c, fmt.Errorf("%s: ClusterIP: %w", d.label, err)
	}
	perRound := b.cfg.Conns / rounds
	var dr, cr []float64
	for r := 0; r < rounds; r++ {
		dd, err := connLoop(ctx, client.NS, backend.IP, echoPort, perRound)
		if err != nil {
			return c, fmt.Errorf("%s: direct: %w", d.label, err)
		}
		cd, err := connLoop(ctx, client.NS, svc.Spec.ClusterIP, 80, perRound)
		if err != nil {
			return c, fmt.Errorf("%s: ClusterIP: %w", d.label, err)
		}
		dr = append(dr, dd.Seconds()*1e6/float64(perRound))
		cr = append(cr, cd.Seconds()*1e6/float64(perRound))
	}
	c.clusterIP, c.podIP = quantile(cr, 0.5), quantile(dr, 0.5)
	return c, nil
}

// connLoop makes n sequential TCP connections from namespace ns, reading the
// echo server's one-line greeting each time, and returns the total time. It
// stops early when ctx ends.
func connLoop(ctx context.Context, ns, addr string, port, n int) (time.Duration, error) {
	var took time.Duration
	dst := net.JoinHostPort(addr, strconv.Itoa(port))
	err := lab.InNetns(ns, func() error {
		start := time.Now()
		for i := 0; i < n; i++ {
			if err := ctx.Err(); err != nil {
				return err
			}
			c, err := net.DialTimeout("tcp4", dst, 2*time.Second)
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
		}
		took = time.Since(start)
		return nil
	})
	return took, err
}
