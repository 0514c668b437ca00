// Package retry is sandkeep's one helper for retrying an operation that
// may fail transiently: exponential backoff with jitter, bounded attempts,
// a server's own advice on when to come back (Retry-After), and a context
// that ends it all; and, for a system call a signal interrupted, EINTR.
package retry

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"syscall"
	"time"
)

// EINTR calls f again for as long as it fails with EINTR (a system call
// interrupted by a signal, which Go's runtime sends to preempt goroutines)
// and returns its first other result.
func EINTR(f func() error) error {
	for {
		if err := f(); !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}

// Backoff is an exponential backoff: Min·2^(attempt-1), capped at Max, plus
// up to Jitter (a fraction, 0.2 = 20 %) more, so that many clients do not
// retry in step.
type Backoff struct {
	Min, Max time.Duration
	Jitter   float64
}

// Delay returns the wait after the attempt-th failure (attempt ≥ 1).
func (b Backoff) Delay(attempt int) time.Duration {
	d := max(b.Min, time.Millisecond)
	for i := 1; i < attempt && (b.Max <= 0 || d < b.Max); i++ {
		d *= 2
	}
	if b.Max > 0 {
		d = min(d, b.Max)
	}
	if b.Jitter > 0 {
		d += time.Duration(rand.Int64N(int64(float64(d)*b.Jitter) + 1))
	}
	return d
}

// Afterer is implemented by errors that carry the server's advice on when
// to try again (an HTTP Retry-After).
type Afterer interface {
	RetryAfter() time.Duration
}

// After returns the advice of the first error in err's chain that carries
// one.
func After(err error) (time.Duration, bool) {
	var a Afterer
	if errors.As(err, &a) && a.RetryAfter() > 0 {
		return a.RetryAfter(), true
	}
	return 0, false
}

// Policy says how Do retries.
type Policy struct {
	// Attempts bounds the calls of fn (default 1: no retry).
	Attempts int
	Backoff  Backoff
	// Retryable says whether a failure may be retried (default: never).
	Retryable func(error) bool
	// MaxAfter caps how long a Retry-After is honoured: a longer one ends
	// the retries with the error (default: no cap).
	MaxAfter time.Duration
	// Sleep waits (default: a timer bounded by ctx); tests replace it.
	Sleep func(ctx context.Context, d time.Duration) error
}

// Do calls fn until it succeeds, fails in a way Retryable refuses, has been
// called Attempts times, or the next wait would pass ctx's deadline. It
// returns fn's last error (never wrapped, so callers test it as fn's).
func Do(ctx context.Context, p Policy, fn func(ctx context.Context) error) error {
	attempts := max(p.Attempts, 1)
	sleep := p.Sleep
	if sleep == nil {
		sleep = Sleep
	}
	for attempt := 1; ; attempt++ {
		err := fn(ctx)
		if err == nil || attempt >= attempts || p.Retryable == nil || !p.Retryable(err) || ctx.Err() != nil {
			return err
		}
		wait := p.Backoff.Delay(attempt)
		if ra, ok := After(err); ok {
			if p.MaxAfter > 0 && ra > p.MaxAfter {
				return err
			}
			wait = ra
		}
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
			return err
		}
		if sleep(ctx, wait) != nil {
			return err
		}
	}
}

// Sleep waits d or until ctx ends (then it returns ctx's error).
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return fmt.Errorf("retry: %w", ctx.Err())
	case <-t.C:
		return nil
	}
}
