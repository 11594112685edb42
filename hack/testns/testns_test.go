package testns

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

func TestName(t *testing.T) {
	for _, c := range []struct {
		pid  int
		n    int64
		test string
		want string
	}{
		{4711, 3, "TestX", "svptns-4711-3-TestX"},
		{4711, 4, "TestX/sub test#01", "svptns-4711-4-TestX-sub-test-01"},
		{1, 1, strings.Repeat("a", 100), ("svptns-1-1-" + strings.Repeat("a", 100))[:maxName]},
		{1, 2, "T/" + strings.Repeat("b", 51) + "/c", "svptns-1-2-T-" + strings.Repeat("b", 51)},
	} {
		if got := name(c.pid, c.n, c.test); got != c.want {
			t.Errorf("name(%d, %d, %q) = %q, want %q", c.pid, c.n, c.test, got, c.want)
		}
		if m := nameRE.FindStringSubmatch(name(c.pid, c.n, c.test)); m == nil || m[1] != strconv.Itoa(c.pid) {
			t.Errorf("nameRE does not find pid %d in %q: %v", c.pid, name(c.pid, c.n, c.test), m)
		}
	}
	if nameRE.MatchString("svptns-12x-1-T") || nameRE.MatchString("svptnsx-1-1-T") || nameRE.MatchString("svpt-1-1-T") {
		t.Error("nameRE matches a name this package does not make")
	}
}

func TestNewExecDo(t *testing.T) {
	var first *NS
	t.Run("first", func(t *testing.T) {
		ns := New(t)
		first = &NS{Name: ns.Name}
		if !strings.HasPrefix(ns.Name, Stem+"-"+strconv.Itoa(os.Getpid())+"-") {
			t.Errorf("name %q lacks the stem and this process's pid", ns.Name)
		}
		if _, err := os.Stat(filepath.Join("/run/netns", ns.Name)); err != nil {
			t.Fatalf("namespace not created: %v", err)
		}
		// A fresh namespace: lo is there and down, nothing is up.
		out := ns.Run(t, "ip", "-o", "link", "show")
		if !strings.Contains(out, "lo: <LOOPBACK>") || strings.Contains(out, "state UP") {
			t.Errorf("not a fresh namespace:\n%s", out)
		}
		if _, err := ns.Exec(context.Background(), "false"); err == nil || !strings.Contains(err.Error(), "netns exec "+ns.Name+" false") {
			t.Errorf("Exec(false) = %v, want an error naming the command", err)
		}

		// Do switches this thread into the namespace and back.
		root, err := netns.Get()
		if err != nil {
			t.Fatal(err)
		}
		defer root.Close()
		target, err := netns.GetFromName(ns.Name)
		if err != nil {
			t.Fatal(err)
		}
		defer target.Close()
		ns.Do(t, func() {
			cur, err := netns.Get()
			if err != nil {
				t.Fatal(err)
			}
			defer cur.Close()
			if !cur.Equal(target) {
				t.Errorf("inside Do the thread is in %v, want %v", cur, target)
			}
		})
		if cur, err := netns.Get(); err != nil || !cur.Equal(root) {
			t.Errorf("after Do the thread is in %v (%v), want the original %v", cur, err, root)
		}
	})
	if first == nil {
		return // skipped
	}
	if _, err := os.Stat(filepath.Join("/run/netns", first.Name)); !os.IsNotExist(err) {
		t.Errorf("namespace %s left after its test: %v", first.Name, err)
	}
	t.Run("second", func(t *testing.T) {
		if ns := New(t); ns.Name == first.Name {
			t.Errorf("two tests got the same namespace %s", ns.Name)
		}
	})
}

// A namespace named for a process that is gone is removed, with what runs
// in it; one of a live process is kept.
func TestRemoveStale(t *testing.T) {
	Require(t)
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	dead := cmd.Process.Pid
	if processAlive(dead) {
		t.Skipf("pid %d was reused at once", dead)
	}
	stale, live := name(dead, 1, t.Name()), name(os.Getpid(), seq.Add(1), t.Name())
	for _, n := range []string{stale, live} {
		if out, err := exec.Command("ip", "netns", "add", n).CombinedOutput(); err != nil {
			t.Skipf("skipping: cannot create a network namespace: %v: %s", err, out)
		}
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", n).Run() })
	}
	// A process a crashed test left running in its namespace goes too.
	sleeper := exec.Command("ip", "netns", "exec", stale, "sleep", "60")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- sleeper.Wait() }()
	t.Cleanup(func() { _ = sleeper.Process.Kill() })
	for i := 0; ; i++ { // until it has entered the namespace
		out, _ := exec.Command("ip", "netns", "pids", stale).Output()
		if strings.TrimSpace(string(out)) != "" {
			break
		}
		if i == 500 {
			t.Fatalf("the process never showed up in %s", stale)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := RemoveStale(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Errorf("the process in stale namespace %s was not killed", stale)
	}
	if _, err := os.Stat(filepath.Join("/run/netns", stale)); !os.IsNotExist(err) {
		t.Errorf("stale namespace %s not removed (%v)", stale, err)
	}
	if _, err := os.Stat(filepath.Join("/run/netns", live)); err != nil {
		t.Errorf("live namespace %s removed: %v", live, err)
	}
}
