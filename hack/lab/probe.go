package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netns"
)

// Probe outcome sentinels; test with errors.Is.
var (
	// ErrRefused: TCP RST to the SYN, or ICMP port-unreachable for UDP
	// (e.g. an iptables REJECT, or nothing listening).
	ErrRefused = errors.New("connection refused")
	// ErrTimeout: no answer within the timeout (packets dropped / blackholed).
	ErrTimeout = errors.New("timeout")
	// ErrUnreachable: ICMP host/net unreachable, or no route.
	ErrUnreachable = errors.New("unreachable")
	// ErrReset: connection established, then reset or closed without a reply.
	ErrReset = errors.New("reset without reply")
	// ErrBadReply: a reply that is not "<name> <ip>:<port>".
	ErrBadReply = errors.New("bad reply")
)

// ProbeErrorKind names the kind of a probe's failure in one word
// ("refused", "timeout", "unreachable", "reset"), or "" for any other error.
func ProbeErrorKind(err error) string {
	switch {
	case errors.Is(err, ErrRefused):
		return "refused"
	case errors.Is(err, ErrTimeout):
		return "timeout"
	case errors.Is(err, ErrUnreachable):
		return "unreachable"
	case errors.Is(err, ErrReset):
		return "reset"
	}
	return ""
}

// InNetns runs fn on an OS thread that has joined network namespace ns ("" =
// the caller's namespace). Sockets created by fn belong to ns and can be used
// from any goroutine afterwards. The thread is discarded after fn returns.
func InNetns(ns string, fn func() error) error {
	if ns == "" {
		return fn()
	}
	target, err := netns.GetFromName(ns)
	if err != nil {
		return fmt.Errorf("lab: opening netns %q: %w", ns, err)
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: when this goroutine exits, the runtime terminates
		// the thread instead of reusing it in the wrong namespace.
		runtime.LockOSThread()
		if err := netns.Set(target); err != nil {
			errc <- fmt.Errorf("lab: setns %q: %w", ns, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// DialContextInNetns returns a dial function whose sockets live in namespace
// ns; use it for http.Transport.DialContext or rest.Config.Dial to talk to
// the lab's API server from the test process.
func DialContextInNetns(ns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := InNetns(ns, func() error {
			var d net.Dialer
			var err error
			c, err = d.DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
}

// ProbeSpec describes one echo request.
type ProbeSpec struct {
	NS       string        // namespace to send from ("" = current)
	Proto    string        // "tcp" or "udp" (family from Addr), or "tcp4", "tcp6", "udp4", "udp6"
	Addr     string        // destination IP (IPv4 or IPv6)
	Port     int           // destination port
	Timeout  time.Duration // total budget (default 2s)
	SourceIP string        // optional local address to bind
	// SourcePort is an optional local port to bind (0 = ephemeral).
	SourcePort int
}

// ProbeResult is a successful echo reply.
type ProbeResult struct {
	Backend    string // name of the echo server that answered
	ClientAddr string // "ip:port" the backend saw as the client
	LocalAddr  string // "ip:port" of our socket
}

// ClientIP is the IP part of ClientAddr.
func (r ProbeResult) ClientIP() string {
	h, _, err := net.SplitHostPort(r.ClientAddr)
	if err != nil {
		return r.ClientAddr
	}
	return h
}

// Probe sends one request to an echo server (hack/echoserver) from inside
// namespace ns and returns the answering backend's name and the client
// address it saw. Failures wrap ErrRefused, ErrTimeout, ErrUnreachable,
// ErrReset or ErrBadReply.
func Probe(ns, proto, addr string, port int, timeout time.Duration) (backendName, seenClientAddr string, err error) {
	r, err := ProbeWith(ProbeSpec{NS: ns, Proto: proto, Addr: addr, Port: port, Timeout: timeout})
	return r.Backend, r.ClientAddr, err
}

// Hits sends n probes to s (each must be answered) and counts the answers
// by backend, with the client addresses the backends saw. The error names
// the first probe that failed.
func Hits(s ProbeSpec, n int) (byBackend map[string]int, clients map[string]bool, err error) {
	byBackend, clients = map[string]int{}, map[string]bool{}
	for i := 0; i < n; i++ {
		r, err := ProbeWith(s)
		if err != nil {
			return byBackend, clients, fmt.Errorf("request %d/%d: %w", i+1, n, err)
		}
		byBackend[r.Backend]++
		clients[r.ClientIP()] = true
	}
	return byBackend, clients, nil
}

// ProbeWith is Probe with all options.
func ProbeWith(s ProbeSpec) (ProbeResult, error) {
	if s.Timeout <= 0 {
		s.Timeout = 2 * time.Second
	}
	dst := net.JoinHostPort(s.Addr, strconv.Itoa(s.Port))
	var res ProbeResult
	var err error
	nsErr := InNetns(s.NS, func() error {
		switch strings.ToLower(s.Proto) {
		case "tcp", "tcp4", "tcp6", "":
			res, err = probeTCP(s, dst)
		case "udp", "udp4", "udp6":
			res, err = probeUDP(s, dst)
		default:
			err = fmt.Errorf("lab: unknown protocol %q", s.Proto)
		}
		return nil
	})
	if nsErr != nil {
		return res, nsErr
	}
	if err != nil {
		where := s.NS
		if where == "" {
			where = "current netns"
		}
		return res, fmt.Errorf("probe %s %s from %s: %w", s.Proto, dst, where, err)
	}
	return res, nil
}

// network is "tcp4"/"udp4" or "tcp6"/"udp6": the family of s.Addr (IPv4
// unless it is an IPv6 address), or the one s.Proto names.
func network(s ProbeSpec, base string) string {
	p := strings.ToLower(s.Proto)
	if strings.HasSuffix(p, "4") || strings.HasSuffix(p, "6") {
		return base + p[len(p)-1:]
	}
	if ip := net.ParseIP(s.Addr); ip != nil && ip.To4() == nil {
		return base + "6"
	}
	return base + "4"
}

func localAddr(s ProbeSpec, udp bool) net.Addr {
	if s.SourceIP == "" && s.SourcePort == 0 {
		return nil
	}
	ip := net.ParseIP(s.SourceIP)
	if udp {
		return &net.UDPAddr{IP: ip, Port: s.SourcePort}
	}
	return &net.TCPAddr{IP: ip, Port: s.SourcePort}
}

func probeTCP(s ProbeSpec, dst string) (ProbeResult, error) {
	deadline := time.Now().Add(s.Timeout)
	d := net.Dialer{Deadline: deadline, LocalAddr: localAddr(s, false)}
	c, err := d.Dial(network(s, "tcp"), dst)
	if err != nil {
		return ProbeResult{}, classify(err)
	}
	defer c.Close()
	_ = c.SetDeadline(deadline)
	line, err := bufio.NewReader(io.LimitReader(c, 4096)).ReadString('\n')
	if err != nil {
		if errors.Is(err, io.EOF) {
			return ProbeResult{}, fmt.Errorf("%w: connection closed before a reply", ErrReset)
		}
		return ProbeResult{}, classify(err)
	}
	res, err := ParseReply(line)
	res.LocalAddr = c.LocalAddr().String()
	return res, err
}

func probeUDP(s ProbeSpec, dst string) (ProbeResult, error) {
	udp := network(s, "udp")
	raddr, err := net.ResolveUDPAddr(udp, dst)
	if err != nil {
		return ProbeResult{}, err
	}
	var laddr *net.UDPAddr
	if a := localAddr(s, true); a != nil {
		laddr = a.(*net.UDPAddr)
	}
	c, err := net.DialUDP(udp, laddr, raddr)
	if err != nil {
		return ProbeResult{}, classify(err)
	}
	defer c.Close()
	deadline := time.Now().Add(s.Timeout)
	// Resend a few times within the budget (same socket, same conntrack
	// entry) in case the first datagram is lost during ARP resolution.
	interval := s.Timeout / 3
	if interval > time.Second {
		interval = time.Second
	}
	if interval < 50*time.Millisecond {
		interval = 50 * time.Millisecond
	}
	buf := make([]byte, 4096)
	for attempt := 0; attempt < 10; attempt++ {
		if _, err := c.Write([]byte("ping\n")); err != nil {
			return ProbeResult{}, classify(err)
		}
		next := time.Now().Add(interval)
		if next.After(deadline) || attempt == 9 {
			next = deadline
		}
		_ = c.SetReadDeadline(next)
		n, err := c.Read(buf)
		if err == nil {
			res, perr := ParseReply(string(buf[:n]))
			res.LocalAddr = c.LocalAddr().String()
			return res, perr
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() && time.Now().Before(deadline) {
			continue
		}
		return ProbeResult{}, classify(err)
	}
	return ProbeResult{}, ErrTimeout
}

// ParseReply parses an echo server line "<name> <ip>:<port>\n".
func ParseReply(line string) (ProbeResult, error) {
	f := strings.Fields(line)
	if len(f) != 2 {
		return ProbeResult{}, fmt.Errorf("%w: %q", ErrBadReply, line)
	}
	if _, _, err := net.SplitHostPort(f[1]); err != nil {
		return ProbeResult{}, fmt.Errorf("%w: %q", ErrBadReply, line)
	}
	return ProbeResult{Backend: f[0], ClientAddr: f[1]}, nil
}

func classify(err error) error {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%w (%v)", ErrRefused, err)
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return fmt.Errorf("%w (%v)", ErrUnreachable, err)
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return fmt.Errorf("%w (%v)", ErrReset, err)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, syscall.ETIMEDOUT):
		return fmt.Errorf("%w (%v)", ErrTimeout, err)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("%w (%v)", ErrTimeout, err)
	}
	return err
}
