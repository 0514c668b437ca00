package retry

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"
)

// TestEINTR calls again only while the call is interrupted, and returns
// the first other result, nil or an error.
func TestEINTR(t *testing.T) {
	for _, tt := range []struct {
		name      string
		results   []error
		wantCalls int
		want      error
	}{
		{"success at once", []error{nil}, 1, nil},
		{"interrupted twice", []error{syscall.EINTR, syscall.EINTR, nil}, 3, nil},
		{"interrupted, then another error", []error{syscall.EINTR, syscall.ENOSPC}, 2, syscall.ENOSPC},
		{"another error at once", []error{syscall.EAGAIN, nil}, 1, syscall.EAGAIN},
	} {
		t.Run(tt.name, func(t *testing.T) {
			calls := 0
			err := EINTR(func() error {
				calls++
				return tt.results[calls-1]
			})
			if calls != tt.wantCalls || !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
				t.Errorf("%d calls, %v; want %d, %v", calls, err, tt.wantCalls, tt.want)
			}
		})
	}
}

type afterErr struct{ d time.Duration }

func (e afterErr) Error() string             { return "busy" }
func (e afterErr) RetryAfter() time.Duration { return e.d }

func TestBackoffDelay(t *testing.T) {
	b := Backoff{Min: 100 * time.Millisecond, Max: time.Second}
	for _, tt := range []struct {
		attempt int
		want    time.Duration
	}{{1, 100 * time.Millisecond}, {2, 200 * time.Millisecond}, {3, 400 * time.Millisecond}, {4, 800 * time.Millisecond}, {5, time.Second}, {50, time.Second}} {
		if got := b.Delay(tt.attempt); got != tt.want {
			t.Errorf("Delay(%d) = %s, want %s", tt.attempt, got, tt.want)
		}
	}
	j := Backoff{Min: time.Second, Max: time.Second, Jitter: 0.5}
	for range 100 {
		if d := j.Delay(3); d < time.Second || d > 1500*time.Millisecond {
			t.Fatalf("jittered delay %s outside [1s, 1.5s]", d)
		}
	}
}

func TestDo(t *testing.T) {
	transient := errors.New("transient")
	permanent := errors.New("permanent")
	tests := []struct {
		name      string
		errs      []error // fn's answers in order; nil ends
		attempts  int
		maxAfter  time.Duration
		wantCalls int
		wantErr   error
		wantWaits []time.Duration
	}{
		{"success at once", []error{nil}, 3, 0, 1, nil, nil},
		{"transient then success", []error{transient, transient, nil}, 5, 0, 3, nil, []time.Duration{10 * time.Millisecond, 20 * time.Millisecond}},
		{"attempts exhausted", []error{transient, transient, transient}, 3, 0, 3, transient, []time.Duration{10 * time.Millisecond, 20 * time.Millisecond}},
		{"permanent stops", []error{permanent}, 5, 0, 1, permanent, nil},
		{"retry-after honoured", []error{afterErr{3 * time.Second}, nil}, 5, 0, 2, nil, []time.Duration{3 * time.Second}},
		{"retry-after over the cap ends", []error{afterErr{time.Hour}}, 5, time.Minute, 1, afterErr{time.Hour}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls := 0
			var waits []time.Duration
			err := Do(t.Context(), Policy{
				Attempts:  tt.attempts,
				Backoff:   Backoff{Min: 10 * time.Millisecond, Max: time.Second},
				Retryable: func(err error) bool { return !errors.Is(err, permanent) },
				MaxAfter:  tt.maxAfter,
				Sleep:     func(_ context.Context, d time.Duration) error { waits = append(waits, d); return nil },
			}, func(context.Context) error {
				err := tt.errs[calls]
				calls++
				return err
			})
			if calls != tt.wantCalls || !errors.Is(err, tt.wantErr) && err != tt.wantErr {
				t.Fatalf("calls %d err %v, want %d %v", calls, err, tt.wantCalls, tt.wantErr)
			}
			if len(waits) != len(tt.wantWaits) {
				t.Fatalf("waits %v, want %v", waits, tt.wantWaits)
			}
			for i := range waits {
				if waits[i] != tt.wantWaits[i] {
					t.Fatalf("waits %v, want %v", waits, tt.wantWaits)
				}
			}
		})
	}
}

// A wait that would pass the deadline is not started: the error comes back
// at once.
func TestDoDeadline(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	calls := 0
	err := Do(ctx, Policy{Attempts: 5, Backoff: Backoff{Min: time.Hour}, Retryable: func(error) bool { return true }},
		func(context.Context) error { calls++; return errors.New("x") })
	if err == nil || calls != 1 {
		t.Fatalf("calls %d err %v", calls, err)
	}
}
