package lab

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Proc is a background process started inside a namespace.
type Proc struct {
	Cmd  *exec.Cmd
	NS   string
	Log  string // log file ("" = discarded)
	done chan struct{}
	once sync.Once
	err  error
}

// Start starts argv in the background inside namespace ns, in its own session
// (so it survives the caller if the caller does not Stop it). Output goes to
// logFile (appended) if non-empty. The process is reaped by a goroutine.
func Start(ns, logFile string, argv ...string) (*Proc, error) {
	if len(argv) == 0 {
		return nil, errors.New("lab: Start: empty argv")
	}
	full := argv
	if ns != "" {
		// ip netns exec execs argv in place: the pid is argv's pid.
		full = append([]string{"ip", "netns", "exec", ns}, argv...)
	}
	cmd := exec.Command(full[0], full[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	var f *os.File
	if logFile != "" {
		var err error
		f, err = os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, err
		}
		cmd.Stdout = f
		cmd.Stderr = f
	}
	if err := cmd.Start(); err != nil {
		if f != nil {
			f.Close()
		}
		return nil, fmt.Errorf("lab: starting %s: %w", strings.Join(full, " "), err)
	}
	if f != nil {
		f.Close() // the child has its own copy
	}
	p := &Proc{Cmd: cmd, NS: ns, Log: logFile, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Pid returns the process id.
func (p *Proc) Pid() int { return p.Cmd.Process.Pid }

// Exited reports whether the process has exited (and its wait error).
func (p *Proc) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// Done is closed when the process exits.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Stop sends SIGTERM to the process (its session), waits up to 5s, then
// SIGKILLs it. Safe to call more than once.
func (p *Proc) Stop() error {
	p.once.Do(func() {
		pid := p.Cmd.Process.Pid
		_ = syscall.Kill(-pid, syscall.SIGTERM)
		_ = syscall.Kill(pid, syscall.SIGTERM)
		select {
		case <-p.done:
			return
		case <-time.After(5 * time.Second):
		}
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		_ = syscall.Kill(pid, syscall.SIGKILL)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
		}
	})
	return nil
}

// LogTail returns the last n bytes of the process log.
func (p *Proc) LogTail(n int) string { return fileTail(p.Log, n) }

func fileTail(path string, n int) string {
	if path == "" {
		return ""
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// pidAlive reports whether pid exists and is not a zombie.
func pidAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	// pid (comm) S ...; comm may contain spaces/parens: use the last ')'.
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return false
	}
	return s[i+2] != 'Z' && s[i+2] != 'X'
}

// pidCmdline returns the argv of pid (nil if unknown).
func pidCmdline(pid int) []string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return nil
	}
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
}

// killPids SIGTERMs pids, waits up to grace for them to go, then SIGKILLs the
// rest and waits (bounded) again.
func killPids(pids []int, grace time.Duration) {
	if len(pids) == 0 {
		return
	}
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	if waitGone(pids, grace) {
		return
	}
	for _, pid := range pids {
		if pidAlive(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	waitGone(pids, 5*time.Second)
}

func waitGone(pids []int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for i := 0; i < 1000; i++ {
		alive := false
		for _, pid := range pids {
			if pidAlive(pid) {
				alive = true
				break
			}
		}
		if !alive {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}
