// Package async runs one work function (a proxier sync) at a bounded
// frequency: never more often than a minimum interval, at least once per
// maximum interval, and again after a retry interval when it fails.
//
// It has the semantics of kube-proxy's BoundedFrequencyRunner
// (pkg/proxy/runner in Kubernetes v1.36):
//
//   - Run(ctx) does not call the function straight away; the first call
//     comes from Sync() or when maxInterval has passed.
//   - Sync() requests a call. Requests coalesce: any number of Sync() calls
//     made before the function next starts cause one call.
//   - At least minInterval passes between the end of one call and the start
//     of the next. Requests made in between (including during the call) are
//     kept and served as soon as minInterval has passed.
//   - After a successful call the next unrequested call comes maxInterval
//     later; after a failed call it comes min(retryInterval, maxInterval)
//     later (but never before minInterval). Any call resets that deadline.
package async

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
)

// BoundedFrequencyRunner calls a function at a bounded frequency. Create one
// with NewBoundedFrequencyRunner, start it with Run, and request calls with
// Sync.
type BoundedFrequencyRunner struct {
	name          string
	fn            func(ctx context.Context) error
	minInterval   time.Duration
	retryInterval time.Duration
	maxInterval   time.Duration
	clock         clock.Clock

	// trigger holds at most one pending request; Sync never blocks.
	trigger chan struct{}
	running atomic.Bool

	// onWait, when set (tests only), is called each time the loop is about
	// to block, after it has created the timers it will wait on.
	onWait func(waitState)
}

// waitState says what the loop is about to block on.
type waitState int

const (
	// waitRequest: waiting for Sync() or the max/retry deadline.
	waitRequest waitState = iota
	// waitMinInterval: a call just finished; waiting out minInterval.
	waitMinInterval
)

// NewBoundedFrequencyRunner returns a runner that calls fn, named name in
// log messages. It starts nothing; call Run.
//
// minInterval may be 0 (every request runs at once). retryInterval and
// maxInterval must be positive and maxInterval must not be less than
// minInterval; otherwise New returns an error (joined, one per problem).
// A nil clock means the real clock.
func NewBoundedFrequencyRunner(name string, fn func(ctx context.Context) error, minInterval, retryInterval, maxInterval time.Duration, clk clock.Clock) (*BoundedFrequencyRunner, error) {
	var errs []error
	if fn == nil {
		errs = append(errs, fmt.Errorf("runner %q: fn must not be nil", name))
	}
	if minInterval < 0 {
		errs = append(errs, fmt.Errorf("runner %q: minInterval (%v) must not be negative", name, minInterval))
	}
	if retryInterval <= 0 {
		errs = append(errs, fmt.Errorf("runner %q: retryInterval (%v) must be positive", name, retryInterval))
	}
	if maxInterval <= 0 {
		errs = append(errs, fmt.Errorf("runner %q: maxInterval (%v) must be positive", name, maxInterval))
	}
	if maxInterval < minInterval {
		errs = append(errs, fmt.Errorf("runner %q: maxInterval (%v) must not be less than minInterval (%v)", name, maxInterval, minInterval))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if clk == nil {
		clk = clock.RealClock{}
	}
	return &BoundedFrequencyRunner{
		name:          name,
		fn:            fn,
		minInterval:   minInterval,
		retryInterval: retryInterval,
		maxInterval:   maxInterval,
		clock:         clk,
		trigger:       make(chan struct{}, 1),
	}, nil
}

// Sync requests a call of the function as soon as the interval bounds allow.
// It never blocks and is safe to call from any goroutine, before or while Run
// runs. Requests made before the next call starts are coalesced into it.
func (r *BoundedFrequencyRunner) Sync() {
	select {
	case r.trigger <- struct{}{}:
	default: // a request is already pending
	}
}

// Run calls the function as requested until ctx is done, then returns. It
// passes ctx to fn, so a call in progress sees the cancellation (the
// proxier's sync then stops its iptables-restore, which applies all or
// nothing) and Run returns once that call has. A panic in fn is not recovered
// (kube-proxy's runner re-panics too): a half-applied sync is better
// restarted than continued. Run must not be called more than once at a time;
// a second concurrent call returns at once with an error.
func (r *BoundedFrequencyRunner) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return fmt.Errorf("runner %q is already running", r.name)
	}
	defer r.running.Store(false)

	logger := klog.FromContext(ctx).WithValues("runner", r.name)
	logger.V(3).Info("Runner starting")
	defer logger.V(3).Info("Runner stopped")

	// next fires the unrequested call: maxInterval after a success,
	// retryInterval after a failure. Each iteration makes fresh timers, so
	// no stale tick from a stopped timer can leak into the next wait.
	next := r.clock.NewTimer(r.maxInterval)
	defer func() { next.Stop() }()

	for {
		r.waiting(waitRequest)
		select {
		case <-ctx.Done():
			return nil
		case <-r.trigger:
		case <-next.C():
		}
		next.Stop()

		err := r.fn(ctx)
		interval := r.maxInterval
		if err != nil {
			interval = min(r.retryInterval, r.maxInterval)
			// The function logs its own failures; this is for debugging the runner.
			logger.V(2).Info("Sync failed; will retry", "err", err.Error(), "retryInterval", interval)
		}
		next = r.clock.NewTimer(interval)

		if r.minInterval > 0 {
			cooldown := r.clock.NewTimer(r.minInterval)
			r.waiting(waitMinInterval)
			select {
			case <-ctx.Done():
				cooldown.Stop()
				return nil
			case <-cooldown.C():
			}
		} else if ctx.Err() != nil {
			return nil
		}
	}
}

func (r *BoundedFrequencyRunner) waiting(s waitState) {
	if r.onWait != nil {
		r.onWait(s)
	}
}
