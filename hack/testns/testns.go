// Package testns gives a test a throwaway network namespace: created with a
// name no other test and no other process uses, deleted when the test ends,
// and skipped, with the reason, where one cannot be made.
//
// It is the one place that decides when root tests skip: not root, no `ip`
// command, a namespace cannot be created, or -short. (hack/test.sh with
// SVCPROXY_REQUIRE_ALL=1 turns every such skip into a failure.)
//
//	ns := testns.New(t)                       // e.g. "svptns-4711-3-TestRealDetectBackend"
//	out, err := ns.Exec(ctx, "iptables-save")  // ip netns exec <name> iptables-save
//	ns.Run(t, "ip", "link", "add", ...)        // the same, failing t on error
//	ns.Do(t, func() { ... })                   // on this goroutine's OS thread, switched into the namespace
//
// A namespace is named Stem-<pid>-<n>-<test name>. If a test binary dies
// before its cleanups run, the next New in any process removes the
// namespaces whose process is gone.
//
// The package imports only the standard library and vishvananda/netns, so
// any package's tests can use it.
package testns

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// Stem starts the name of every namespace this package creates.
const Stem = "svptns"

// maxName bounds namespace names (they are file names in /run/netns; short
// names read better in `ip netns list`).
const maxName = 64

// execTimeout bounds every command run by Exec and Run.
const execTimeout = 60 * time.Second

// NS is a network namespace created for one test.
type NS struct {
	// Name is the namespace's name, as `ip netns` knows it.
	Name string
}

// String returns the name.
func (n *NS) String() string { return n.Name }

var (
	seq       atomic.Int64
	staleOnce sync.Once
)

// Check reports why network namespaces cannot be made here (nil if they
// can, as far as can be told without making one): not Linux, not root, or
// no `ip` command. New also skips in -short mode and when creating the
// namespace fails.
func Check() error {
	if runtime.GOOS != "linux" {
		return fmt.Errorf("network namespaces need Linux, this is %s", runtime.GOOS)
	}
	if os.Geteuid() != 0 {
		return errors.New("creating a network namespace needs root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return fmt.Errorf("no ip command (iproute2) to create a network namespace: %v", err)
	}
	return nil
}

// Require skips t, saying why, unless network namespaces can be made here
// and the run is not -short. New calls it; tests that make namespaces some
// other way (hack/lab) can call it to skip by the same rule.
func Require(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("skipping: -short skips tests that need a network namespace")
	}
	if err := Check(); err != nil {
		t.Skipf("skipping: %v", err)
	}
}

// New creates a network namespace for t and deletes it when t ends
// (t.Cleanup). It skips t, saying why, under the rule of Require, or when
// the namespace cannot be created.
func New(t testing.TB) *NS {
	t.Helper()
	Require(t)
	staleOnce.Do(func() { RemoveStale() })
	n := &NS{Name: name(os.Getpid(), seq.Add(1), t.Name())}
	if out, err := exec.Command("ip", "netns", "add", n.Name).CombinedOutput(); err != nil {
		t.Skipf("skipping: cannot create a network namespace: ip netns add %s: %v: %s", n.Name, err, bytes.TrimSpace(out))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", n.Name).CombinedOutput(); err != nil {
			t.Errorf("deleting network namespace %s: %v: %s", n.Name, err, bytes.TrimSpace(out))
		}
	})
	return n
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

// name is Stem-<pid>-<n>-<test name>, cut to maxName characters: the pid
// keeps processes apart, n tests (and namespaces) within one process.
func name(pid int, n int64, test string) string {
	s := fmt.Sprintf("%s-%d-%d-%s", Stem, pid, n, unsafeChars.ReplaceAllString(test, "-"))
	if len(s) > maxName {
		s = s[:maxName]
	}
	return strings.TrimRight(s, "-.")
}

var nameRE = regexp.MustCompile(`^` + Stem + `-([0-9]+)-[0-9]+(-|$)`)

// RemoveStale deletes the namespaces this package made in processes that
// are gone (a test binary killed before its cleanups ran), killing what
// still runs in them (processes those tests started). New calls it once per
// process.
func RemoveStale() error {
	entries, err := os.ReadDir("/run/netns")
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	var errs []error
	for _, e := range entries {
		m := nameRE.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		pid, err := strconv.Atoi(m[1])
		if err != nil || processAlive(pid) {
			continue
		}
		if out, err := exec.Command("ip", "netns", "pids", e.Name()).Output(); err == nil {
			for _, f := range strings.Fields(string(out)) {
				if p, err := strconv.Atoi(f); err == nil && p > 1 && p != os.Getpid() {
					_ = syscall.Kill(p, syscall.SIGKILL)
				}
			}
		}
		if out, err := exec.Command("ip", "netns", "del", e.Name()).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("ip netns del %s: %v: %s", e.Name(), err, bytes.TrimSpace(out)))
		}
	}
	return errors.Join(errs...)
}

// processAlive reports whether pid is a running process (not a zombie).
func processAlive(pid int) bool {
	if pid == os.Getpid() {
		return true
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && b[i+2] != 'Z' && b[i+2] != 'X'
}

// Exec runs argv inside the namespace (ip netns exec) and returns its
// combined output. It is bounded by ctx and 60 s. The error names the
// command and carries its output.
func (n *NS) Exec(ctx context.Context, argv ...string) ([]byte, error) {
	if len(argv) == 0 {
		return nil, errors.New("testns: Exec: empty argv")
	}
	ctx, cancel := context.WithTimeout(ctx, execTimeout)
	defer cancel()
	full := append([]string{"netns", "exec", n.Name}, argv...)
	out, err := exec.CommandContext(ctx, "ip", full...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("ip %s: %w: %s", strings.Join(full, " "), err, bytes.TrimSpace(out))
	}
	return out, nil
}

// Run is Exec for t: it fails t (Fatal) on error and returns the output.
func (n *NS) Run(t testing.TB, argv ...string) string {
	t.Helper()
	out, err := n.Exec(context.Background(), argv...)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// Do runs fn on the calling goroutine with its OS thread locked and switched
// into the namespace, then switches back; so fn may call t.Fatal. Kernel
// objects fn makes through the thread (sockets, netlink requests) belong to
// the namespace. Goroutines fn starts run in the original namespace: they
// must not do kernel work meant for this one.
//
// If switching back fails the thread stays locked, and the runtime discards
// it when the test's goroutine ends, so no other goroutine runs there.
func (n *NS) Do(t testing.TB, fn func()) {
	t.Helper()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("testns: current network namespace: %v", err)
	}
	defer orig.Close()
	target, err := netns.GetFromName(n.Name)
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("testns: opening network namespace %s: %v", n.Name, err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("testns: entering network namespace %s: %v", n.Name, err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			t.Errorf("testns: returning to the original network namespace: %v", err)
			return
		}
		runtime.UnlockOSThread()
	}()
	fn()
}
