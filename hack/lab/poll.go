package lab

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrStop, wrapped in the error a Poll check returns, makes Poll give up at
// once (e.g. the process being waited for has exited).
var ErrStop = errors.New("giving up")

// Poll calls check every interval until it returns nil, returns an error
// wrapping ErrStop, ctx ends, or limit has passed; it makes at most
// limit/interval+2 calls. It returns nil, the stopping error as is, or an
// error that names the limit (or ctx's error) and wraps check's last error.
func Poll(ctx context.Context, limit, interval time.Duration, check func() error) error {
	if interval <= 0 {
		interval = 10 * time.Millisecond
	}
	deadline := time.Now().Add(limit)
	attempts := int(limit/interval) + 2
	var last error
	for i := 0; i < attempts; i++ {
		if last = check(); last == nil || errors.Is(last, ErrStop) {
			return last
		}
		if !time.Now().Before(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w; last check: %w", ctx.Err(), last)
		case <-time.After(min(interval, time.Until(deadline))):
		}
	}
	return fmt.Errorf("after %s: %w", limit, last)
}
