package async

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// harness drives a BoundedFrequencyRunner in lock step: the loop reports every time it is
// about to block (onWait) and waits for the test to take that report, so the
// test always knows which timers exist before it steps the fake clock. No
// assertion depends on wall-clock speed; the real-time timeout below only
// turns a hang into a failure.
type harness struct {
	t      *testing.T
	clk    *clocktesting.FakeClock
	r      *BoundedFrequencyRunner
	waits  chan waitState
	cancel context.CancelFunc
	done   chan error

	mu    sync.Mutex
	calls []time.Time // fake-clock time of each call
	errs  []error     // results to return, in order; nil when exhausted
	onFn  func()      // runs inside fn (e.g. to call Sync mid-run)
}

const hang = 10 * time.Second

func newHarness(t *testing.T, minI, retryI, maxI time.Duration) *harness {
	t.Helper()
	h := &harness{t: t, clk: clocktesting.NewFakeClock(t0), waits: make(chan waitState), done: make(chan error, 1)}
	r, err := NewBoundedFrequencyRunner("test", h.fn, minI, retryI, maxI, h.clk)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.r, h.cancel = r, cancel
	r.onWait = func(s waitState) {
		select {
		case h.waits <- s:
		case <-ctx.Done():
		}
	}
	go func() { h.done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-h.done:
		case <-time.After(hang):
			t.Errorf("Run did not return after cancel")
		}
	})
	return h
}

func (h *harness) fn(context.Context) error {
	h.mu.Lock()
	h.calls = append(h.calls, h.clk.Now())
	var err error
	if len(h.errs) > 0 {
		err, h.errs = h.errs[0], h.errs[1:]
	}
	onFn := h.onFn
	h.mu.Unlock()
	if onFn != nil {
		onFn()
	}
	return err
}

// expectWait waits for the loop to block in state want.
func (h *harness) expectWait(want waitState) {
	h.t.Helper()
	select {
	case got := <-h.waits:
		if got != want {
			h.t.Fatalf("loop blocked in state %d, want %d (calls so far: %v)", got, want, h.callTimes())
		}
	case <-time.After(hang):
		h.t.Fatalf("loop never blocked in state %d", want)
	}
}

// expectIdle checks that the loop has not moved since its last report. It is
// only meaningful when no timer the loop waits on can have fired.
func (h *harness) expectIdle() {
	h.t.Helper()
	select {
	case got := <-h.waits:
		h.t.Fatalf("loop moved unexpectedly to state %d", got)
	default:
	}
}

func (h *harness) callTimes() []time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []time.Duration
	for _, c := range h.calls {
		out = append(out, c.Sub(t0))
	}
	return out
}

func (h *harness) expectCalls(want ...time.Duration) {
	h.t.Helper()
	got := h.callTimes()
	if len(got) != len(want) {
		h.t.Fatalf("calls at %v, want %v", got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			h.t.Fatalf("calls at %v, want %v", got, want)
		}
	}
}

func TestNoCallUntilRequested(t *testing.T) {
	h := newHarness(t, time.Second, 5*time.Second, time.Minute)
	h.expectWait(waitRequest)
	h.clk.Step(59 * time.Second)
	h.expectIdle()
	h.expectCalls()
}

func TestSyncCoalesces(t *testing.T) {
	h := newHarness(t, time.Second, 5*time.Second, time.Minute)

	// Three requests while the loop is held before its first select: one call.
	h.r.Sync()
	h.r.Sync()
	h.r.Sync()
	h.expectWait(waitRequest)
	h.expectWait(waitMinInterval)
	h.expectCalls(0)
	h.clk.Step(time.Second)
	h.expectWait(waitRequest)
	h.expectIdle()
	h.expectCalls(0)

	// Requests during the cooldown: kept, coalesced, served once it ends.
	h.r.Sync()
	h.expectWait(waitMinInterval)
	h.r.Sync()
	h.r.Sync()
	h.clk.Step(999 * time.Millisecond)
	h.expectIdle()
	h.expectCalls(0, time.Second)
	h.clk.Step(time.Millisecond)
	h.expectWait(waitRequest)     // cooldown over
	h.expectWait(waitMinInterval) // pending request ran at once
	h.expectCalls(0, time.Second, 2*time.Second)

	// Nothing pending now.
	h.clk.Step(time.Second)
	h.expectWait(waitRequest)
	h.expectIdle()
	h.expectCalls(0, time.Second, 2*time.Second)
}

func TestSyncDuringCallRunsAgain(t *testing.T) {
	h := newHarness(t, 2*time.Second, 5*time.Second, time.Minute)
	var once sync.Once
	h.onFn = func() { once.Do(h.r.Sync) } // a change arrives mid-sync
	h.expectWait(waitRequest)
	h.r.Sync()
	h.expectWait(waitMinInterval)
	h.clk.Step(2 * time.Second)
	h.expectWait(waitRequest)
	h.expectWait(waitMinInterval)
	h.expectCalls(0, 2*time.Second)
}

func TestMinInterval(t *testing.T) {
	h := newHarness(t, 3*time.Second, 5*time.Second, time.Minute)
	h.expectWait(waitRequest)
	h.r.Sync()
	h.expectWait(waitMinInterval)

	// A request one second later waits for the remaining two seconds.
	h.clk.Step(time.Second)
	h.r.Sync()
	h.clk.Step(time.Second)
	h.expectIdle()
	h.clk.Step(time.Second)
	h.expectWait(waitRequest)
	h.expectWait(waitMinInterval)
	h.expectCalls(0, 3*time.Second)

	// A request long after the cooldown runs immediately.
	h.clk.Step(3 * time.Second)
	h.expectWait(waitRequest)
	h.clk.Step(10 * time.Second)
	h.r.Sync()
	h.expectWait(waitMinInterval)
	h.expectCalls(0, 3*time.Second, 16*time.Second)
}

func TestZeroMinIntervalRunsEveryRequest(t *testing.T) {
	h := newHarness(t, 0, 5*time.Second, time.Minute)
	h.expectWait(waitRequest)
	h.r.Sync()
	h.expectWait(waitRequest)
	h.r.Sync()
	h.expectWait(waitRequest)
	h.expectCalls(0, 0)
}

func TestRetryOnError(t *testing.T) {
	h := newHarness(t, time.Second, 5*time.Second, time.Minute)
	h.errs = []error{errors.New("boom"), errors.New("boom again")}
	h.expectWait(waitRequest)
	h.r.Sync()
	h.expectWait(waitMinInterval)
	h.clk.Step(time.Second)
	h.expectWait(waitRequest)

	// Retry comes retryInterval after the failed call, without any Sync.
	h.clk.Step(3999 * time.Millisecond)
	h.expectIdle()
	h.clk.Step(time.Millisecond)
	h.expectWait(waitMinInterval)
	h.expectCalls(0, 5*time.Second)

	// Second failure: another retry.
	h.clk.Step(time.Second)
	h.expectWait(waitRequest)
	h.clk.Step(4 * time.Second)
	h.expectWait(waitMinInterval)
	h.expectCalls(0, 5*time.Second, 10*time.Second)

	// Success: back to the periodic maxInterval.
	h.clk.Step(time.Second)
	h.expectWait(waitRequest)
	h.clk.Step(5 * time.Second)
	h.expectIdle()
	h.clk.Step(54 * time.Second)
	h.expectWait(waitMinInterval)
	h.expectCalls(0, 5*time.Second, 10*time.Second, 70*time.Second)
}

func TestRetryNotBeforeMinInterval(t *testing.T) {
	h := newHarness(t, 10*time.Second, time.Second, time.Minute)
	h.errs = []error{errors.New("boom")}
	h.expectWait(waitRequest)
	h.r.Sync()
	h.expectWait(waitMinInterval)
	h.clk.Step(time.Second) // retry deadline passes during the cooldown
	h.expectIdle()
	h.clk.Step(9 * time.Second)
	h.expectWait(waitRequest)
	h.expectWait(waitMinInterval)
	h.expectCalls(0, 10*time.Second)
}

func TestRetryCappedByMaxInterval(t *testing.T) {
	h := newHarness(t, 0, time.Hour, time.Minute)
	h.errs = []error{errors.New("boom")}
	h.expectWait(waitRequest)
	h.r.Sync()
	h.expectWait(waitRequest)
	h.clk.Step(time.Minute)
	h.expectWait(waitRequest)
	h.expectCalls(0, time.Minute)
}

func TestPeriodicRun(t *testing.T) {
	h := newHarness(t, time.Second, 5*time.Second, 30*time.Second)
	h.expectWait(waitRequest)
	h.clk.Step(30 * time.Second)
	h.expectWait(waitMinInterval)
	h.clk.Step(time.Second)
	h.expectWait(waitRequest)
	h.clk.Step(29 * time.Second)
	h.expectWait(waitMinInterval)
	h.expectCalls(30*time.Second, 60*time.Second)

	// A requested call pushes the periodic deadline out.
	h.clk.Step(10 * time.Second)
	h.expectWait(waitRequest)
	h.r.Sync()
	h.expectWait(waitMinInterval)
	h.clk.Step(time.Second)
	h.expectWait(waitRequest)
	h.clk.Step(28 * time.Second)
	h.expectIdle()
	h.clk.Step(time.Second)
	h.expectWait(waitMinInterval)
	h.expectCalls(30*time.Second, 60*time.Second, 70*time.Second, 100*time.Second)
}

func TestStopOnCancel(t *testing.T) {
	for _, tc := range []struct {
		name  string
		state waitState
	}{
		{"waiting for request", waitRequest},
		{"during cooldown", waitMinInterval},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, time.Second, 5*time.Second, time.Minute)
			h.expectWait(waitRequest)
			if tc.state == waitMinInterval {
				h.r.Sync()
				h.expectWait(waitMinInterval)
			}
			h.cancel()
			select {
			case err := <-h.done:
				if err != nil {
					t.Fatalf("Run returned %v, want nil", err)
				}
				h.done <- err // for Cleanup
			case <-time.After(hang):
				t.Fatal("Run did not return after cancel")
			}
			h.r.Sync() // must not block once stopped
			h.r.Sync()
		})
	}
}

func TestRunTwice(t *testing.T) {
	h := newHarness(t, time.Second, 5*time.Second, time.Minute)
	h.expectWait(waitRequest)
	if err := h.r.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Fatalf("second Run: got %v, want already-running error", err)
	}
}

func TestNewValidation(t *testing.T) {
	ok := func(context.Context) error { return nil }
	for _, tc := range []struct {
		name          string
		fn            func(context.Context) error
		minI, rI, mxI time.Duration
		want          []string
	}{
		{"valid", ok, time.Second, time.Second, time.Minute, nil},
		{"zero min", ok, 0, time.Second, time.Minute, nil},
		{"nil fn", nil, time.Second, time.Second, time.Minute, []string{"fn must not be nil"}},
		{"max below min", ok, time.Minute, time.Second, time.Second, []string{"maxInterval (1s) must not be less than minInterval (1m0s)"}},
		{"all bad", ok, -1, 0, 0, []string{"minInterval (-1ns) must not be negative", "retryInterval (0s) must be positive", "maxInterval (0s) must be positive"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewBoundedFrequencyRunner("x", tc.fn, tc.minI, tc.rI, tc.mxI, nil)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}
