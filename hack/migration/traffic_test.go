//go:build migration

package migration

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/svcproxy/svcproxy/hack/lab"
)

// ---- a line echo server for long-lived connections --------------------------

// lineServer listens on TCP port inside a pod's namespace (the socket lives
// there; the goroutines are the test's). Like hack/echoserver it greets every
// connection with "<name> <client ip:port>\n" (so lab.Probe works against
// it), but then keeps the connection open and answers every line received
// with the same line.
type lineServer struct {
	name string
	ln   net.Listener
	wg   sync.WaitGroup
	mu   sync.Mutex
	open map[net.Conn]bool
}

func startLineServer(pod *lab.Pod, port int) (*lineServer, error) {
	s := &lineServer{name: pod.Name, open: map[net.Conn]bool{}}
	err := lab.InNetns(pod.NS, func() error {
		var err error
		s.ln, err = net.Listen("tcp4", net.JoinHostPort("0.0.0.0", strconv.Itoa(port)))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("line server in %s: %w", pod.NS, err)
	}
	s.wg.Add(1)
	go s.serve()
	return s, nil
}

func (s *lineServer) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.open[c] = true
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() { s.mu.Lock(); delete(s.open, c); s.mu.Unlock(); c.Close() }()
			r := bufio.NewReader(c)
			for {
				if _, err := fmt.Fprintf(c, "%s %s\n", s.name, c.RemoteAddr()); err != nil {
					return
				}
				if _, err := r.ReadString('\n'); err != nil {
					return
				}
			}
		}()
	}
}

// Close stops listening and closes every open connection.
func (s *lineServer) Close() {
	s.ln.Close()
	s.mu.Lock()
	for c := range s.open {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// liveConn is a long-lived client connection to a lineServer through a
// Service.
type liveConn struct {
	from    string // client pod
	backend string // the server that answered first
	local   string // our address
	c       net.Conn
	r       *bufio.Reader
}

func (c *liveConn) String() string {
	return fmt.Sprintf("connection %s from %s (%s) to %s", c.c.RemoteAddr(), c.from, c.local, c.backend)
}

// dialLive opens a connection from pod to addr:port and asks once.
func dialLive(pod *lab.Pod, addr string, port int) (*liveConn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	nc, err := lab.DialContextInNetns(pod.NS)(ctx, "tcp4", net.JoinHostPort(addr, strconv.Itoa(port)))
	if err != nil {
		return nil, err
	}
	c := &liveConn{from: pod.Name, c: nc, r: bufio.NewReader(nc), local: nc.LocalAddr().String()}
	if c.backend, err = c.read(); err != nil {
		nc.Close()
		return nil, err
	}
	return c, nil
}

// ask sends a line and returns the name of the server that answered.
func (c *liveConn) ask() (string, error) {
	_ = c.c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.c.Write([]byte("ping\n")); err != nil {
		return "", fmt.Errorf("write: %w", err)
	}
	return c.read()
}

// read reads one answer and returns the name of the server that sent it.
func (c *liveConn) read() (string, error) {
	_ = c.c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := c.r.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("read: %w", err)
	}
	name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
	return name, nil
}

// check fails unless the connection still answers, from the same backend.
func (c *liveConn) check() error {
	name, err := c.ask()
	if err != nil {
		return fmt.Errorf("%s: broken: %w", c, err)
	}
	if name != c.backend {
		return fmt.Errorf("%s: answered by %s", c, name)
	}
	return nil
}

// openLive opens connections from pod to addr:port until every backend in
// want holds one (at most 40 attempts), and returns one per backend.
func openLive(pod *lab.Pod, addr string, port int, want ...string) ([]*liveConn, error) {
	got := map[string]*liveConn{}
	var lastErr error
	for i := 0; i < 40 && len(got) < len(want); i++ {
		c, err := dialLive(pod, addr, port)
		if err != nil {
			lastErr = err
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if got[c.backend] != nil {
			c.c.Close()
			continue
		}
		got[c.backend] = c
	}
	var out []*liveConn
	for _, w := range want {
		if got[w] == nil {
			for _, c := range got {
				c.c.Close()
			}
			return nil, fmt.Errorf("no connection from %s to %s:%d reached %s in 40 attempts (last error: %v)", pod.Name, addr, port, w, lastErr)
		}
		out = append(out, got[w])
	}
	return out, nil
}

// ---- a stream of new connections --------------------------------------------

// prober makes new connections to one target, one every interval, until
// stopped (at most maxProbes), and counts the answers by phase: the phase
// is whatever the test last set, so failures can be laid against the steps
// of the migration without any timing assumption.
type prober struct {
	spec     lab.ProbeSpec
	interval time.Duration

	mu      sync.Mutex
	phase   string
	ok      map[string]int
	failed  map[string]int
	errs    map[string][]string // first errors per phase
	phases  []string            // in order of first use
	stop    chan struct{}
	stopped chan struct{}
}

const maxProbes = 20000 // 20 ms apart: over 6 minutes

func startProber(spec lab.ProbeSpec, interval time.Duration, phase string) *prober {
	p := &prober{spec: spec, interval: interval, ok: map[string]int{}, failed: map[string]int{},
		errs: map[string][]string{}, stop: make(chan struct{}), stopped: make(chan struct{})}
	p.setPhase(phase)
	go p.run()
	return p
}

func (p *prober) setPhase(phase string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.phase = phase
	for _, ph := range p.phases {
		if ph == phase {
			return
		}
	}
	p.phases = append(p.phases, phase)
}

func (p *prober) run() {
	defer close(p.stopped)
	for i := 0; i < maxProbes; i++ {
		select {
		case <-p.stop:
			return
		default:
		}
		// The phase when the probe starts: a probe that times out across a
		// phase change belongs to the phase it was sent in.
		p.mu.Lock()
		phase := p.phase
		p.mu.Unlock()
		r, err := lab.ProbeWith(p.spec)
		p.mu.Lock()
		if err == nil && r.Backend != "" {
			p.ok[phase]++
		} else {
			if err == nil {
				err = errors.New("empty reply")
			}
			p.failed[phase]++
			if len(p.errs[phase]) < 3 {
				p.errs[phase] = append(p.errs[phase], err.Error())
			}
		}
		p.mu.Unlock()
		select {
		case <-p.stop:
			return
		case <-time.After(p.interval):
		}
	}
}

// Stop stops the prober and waits for its last probe.
func (p *prober) Stop() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.stopped
}

// failures returns the failed probes in the given phases.
func (p *prober) failures(phases ...string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, ph := range phases {
		n += p.failed[ph]
	}
	return n
}

// report is one line per phase: answered/sent, and the first errors.
func (p *prober) report() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "new %s connections to %s:%d from %s, one every %s:\n", p.spec.Proto, p.spec.Addr, p.spec.Port, p.spec.NS, p.interval)
	for _, ph := range p.phases {
		fmt.Fprintf(&b, "  %-34s %5d answered, %4d failed", ph, p.ok[ph], p.failed[ph])
		if len(p.errs[ph]) > 0 {
			fmt.Fprintf(&b, " (first: %s)", strings.Join(p.errs[ph], "; "))
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// reachAll probes g until every backend in want has answered (at most 200
// probes and limit); an answer from another backend is an error.
func reachAll(spec lab.ProbeSpec, limit time.Duration, want ...string) error {
	seen := map[string]bool{}
	var lastErr error
	deadline := time.Now().Add(limit)
	for i := 0; i < 200 && time.Now().Before(deadline); i++ {
		r, err := lab.ProbeWith(spec)
		if err != nil {
			lastErr = err
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if !slices.Contains(want, r.Backend) {
			return fmt.Errorf("%s %s:%d from %s: answered by %q, want only %v", spec.Proto, spec.Addr, spec.Port, spec.NS, r.Backend, want)
		}
		seen[r.Backend] = true
		if len(seen) == len(want) {
			return nil
		}
	}
	return fmt.Errorf("%s %s:%d from %s: only %v of %v answered (last error: %v)", spec.Proto, spec.Addr, spec.Port, spec.NS, slices.Sorted(maps.Keys(seen)), want, lastErr)
}
