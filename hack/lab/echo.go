package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

const echoPkg = "github.com/svcproxy/svcproxy/hack/echoserver"

var (
	echoOnce sync.Once
	echoPath string
	echoErr  error
)

// EchoServerBinary returns the path of a built hack/echoserver: $ECHOSERVER if
// set, else it is built (once per process) into CacheDir()/bin/echoserver.
// Building needs the go tool and a working directory inside the module.
func EchoServerBinary() (string, error) {
	echoOnce.Do(func() {
		if p := os.Getenv("ECHOSERVER"); p != "" {
			echoPath = p
			return
		}
		dir := filepath.Join(CacheDir(), "bin")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			echoErr = err
			return
		}
		tmp, err := os.CreateTemp(dir, ".echoserver-*")
		if err != nil {
			echoErr = err
			return
		}
		tmp.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-o", tmp.Name(), echoPkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			os.Remove(tmp.Name())
			echoErr = fmt.Errorf("lab: building echoserver: %w: %s", err, out)
			return
		}
		echoPath = filepath.Join(dir, "echoserver")
		echoErr = os.Rename(tmp.Name(), echoPath)
	})
	return echoPath, echoErr
}

// StartEcho starts an echo server named name on port (TCP and UDP) in
// namespace ns, logging to <StateDir>/logs/echo-<ns>-<port>.log, and waits
// (bounded, 10s per protocol) until it answers on 127.0.0.1 inside ns.
func (l *Lab) StartEcho(ns, name string, port int) (*Proc, error) {
	return l.StartEchoArgs(ns, name, port)
}

// StartEchoArgs is StartEcho with extra echoserver flags (e.g. "--udp=false",
// or "--addr", "::" for IPv6: it then waits for answers on ::1).
func (l *Lab) StartEchoArgs(ns, name string, port int, extra ...string) (*Proc, error) {
	bin, err := EchoServerBinary()
	if err != nil {
		return nil, err
	}
	logDir := filepath.Join(l.StateDir, "logs")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return nil, err
	}
	logFile := filepath.Join(logDir, fmt.Sprintf("echo-%s-%d.log", ns, port))
	argv := append([]string{bin, "--name", name, "--port", strconv.Itoa(port)}, extra...)
	p, err := Start(ns, logFile, argv...)
	if err != nil {
		return nil, err
	}
	// Ready when it answers, on every protocol it serves, at the address it
	// listens on (its loopback address for a wildcard).
	addr, protos := echoReadyCheck(extra)
	for _, proto := range protos {
		ok, r, lastErr := WaitProbe(ProbeSpec{NS: ns, Proto: proto, Addr: addr, Port: port, Timeout: 500 * time.Millisecond},
			10*time.Second, func(r ProbeResult, err error) bool {
				exited, _ := p.Exited()
				return exited || (err == nil && r.Backend == name)
			})
		if exited, werr := p.Exited(); exited {
			return nil, fmt.Errorf("lab: echoserver in %s exited: %v: %s", ns, werr, p.LogTail(2000))
		}
		if !ok {
			if lastErr == nil {
				lastErr = fmt.Errorf("answered by %q, want %q", r.Backend, name)
			}
			_ = p.Stop()
			return nil, fmt.Errorf("lab: echoserver %s in %s not ready on %s %s: %w", name, ns, proto, addr, lastErr)
		}
	}
	return p, nil
}

// echoReadyCheck returns where an echoserver started with the flags extra
// answers (--addr, with 127.0.0.1 or ::1 for a wildcard) and its protocols.
func echoReadyCheck(extra []string) (addr string, protos []string) {
	addr = "0.0.0.0"
	tcp, udp := true, true
	for i, e := range extra {
		switch {
		case e == "--addr" && i+1 < len(extra):
			addr = extra[i+1]
		case strings.HasPrefix(e, "--addr="):
			addr = strings.TrimPrefix(e, "--addr=")
		case e == "--tcp=false":
			tcp = false
		case e == "--udp=false":
			udp = false
		}
	}
	if ip, err := netip.ParseAddr(addr); err == nil && ip.IsUnspecified() {
		addr = "127.0.0.1"
		if ip.Is6() {
			addr = "::1"
		}
	}
	if tcp {
		protos = append(protos, "tcp")
	}
	if udp {
		protos = append(protos, "udp")
	}
	return addr, protos
}

// StartProcess starts argv in the background inside namespace ns with output
// in <StateDir>/logs/<logName>.log. Stop it with (*Proc).Stop; Down kills
// anything still running in the lab's namespaces anyway.
func (l *Lab) StartProcess(ns, logName string, argv ...string) (*Proc, error) {
	logDir := filepath.Join(l.StateDir, "logs")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return nil, err
	}
	return Start(ns, filepath.Join(logDir, logName+".log"), argv...)
}

// WaitProbe retries Probe every 100ms until check(result, err) returns true or
// the total time budget runs out (bounded to 600 attempts). It reports
// whether check succeeded, and the last result and probe error.
func WaitProbe(s ProbeSpec, total time.Duration, check func(ProbeResult, error) bool) (ok bool, last ProbeResult, lastErr error) {
	deadline := time.Now().Add(total)
	var r ProbeResult
	var err error
	for i := 0; i < 600; i++ {
		r, err = ProbeWith(s)
		if check(r, err) {
			return true, r, err
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false, r, err
}

// IsRefused, IsTimeout: shorthands for errors.Is.
func IsRefused(err error) bool { return errors.Is(err, ErrRefused) }

// IsTimeout reports whether err wraps ErrTimeout.
func IsTimeout(err error) bool { return errors.Is(err, ErrTimeout) }
