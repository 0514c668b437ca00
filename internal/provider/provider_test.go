package provider

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestTransition(t *testing.T) {
	// Every legal transition, as the lifecycle design lists them.
	legal := map[[2]State]bool{
		{StateCreating, StateStarting}:  true,
		{StateCreating, StateStarted}:   true,
		{StateCreating, StateError}:     true,
		{StateCreating, StateDestroyed}: true,
		{StateStarting, StateStarted}:   true,
		{StateStarting, StateError}:     true,
		{StateStarting, StateStopped}:   true,
		{StateStarted, StateStopping}:   true,
		{StateStarted, StateError}:      true,
		{StateStarted, StateDestroyed}:  true,
		{StateStopping, StateStopped}:   true,
		{StateStopping, StateError}:     true,
		{StateStopped, StateStarting}:   true,
		{StateStopped, StateArchived}:   true,
		{StateStopped, StateDestroyed}:  true,
		{StateArchived, StateStarting}:  true,
		{StateArchived, StateDestroyed}: true,
		{StateError, StateDestroyed}:    true,
		{StateError, StateStarting}:     true,
		{StateError, StateStopped}:      true,
	}
	n := 0
	for _, from := range States() {
		for _, to := range States() {
			want := legal[[2]State{from, to}]
			if want {
				n++
			}
			if got := Transition(from, to); got != want {
				t.Errorf("Transition(%s, %s) = %v, want %v", from, to, got, want)
			}
		}
	}
	if n != len(legal) {
		t.Fatalf("table names %d transitions between known states, want %d", n, len(legal))
	}
	for _, tt := range []struct {
		from, to State
	}{
		{StateDestroyed, StateStarting}, // destroyed is final
		{StateDestroyed, StateDestroyed},
		{StateStarted, StateStarted}, // no self transitions
		{StateStarted, StateStopped}, // must pass through stopping
		{StateArchived, StateStarted},
		{"bogus", StateStarted},
		{StateStarted, "bogus"},
	} {
		if Transition(tt.from, tt.to) {
			t.Errorf("Transition(%s, %s) = true", tt.from, tt.to)
		}
	}
}

func TestStates(t *testing.T) {
	if len(States()) != 8 {
		t.Fatalf("States() = %v", States())
	}
	for _, s := range States() {
		if !s.Valid() {
			t.Errorf("%s not Valid", s)
		}
	}
	if State("running").Valid() {
		t.Error(`"running" is Valid`)
	}
	for s, want := range map[State]bool{StateCreating: true, StateStarting: true, StateStopping: true, StateStarted: false, StateError: false, StateArchived: false} {
		if got := s.Transitional(); got != want {
			t.Errorf("%s.Transitional() = %v", s, got)
		}
	}
}

func TestMatchLabels(t *testing.T) {
	labels := map[string]string{"sandkeep.project": "p1", "team": "a"}
	for _, tt := range []struct {
		sel  map[string]string
		want bool
	}{
		{nil, true},
		{map[string]string{}, true},
		{map[string]string{"sandkeep.project": "p1"}, true},
		{map[string]string{"sandkeep.project": "p1", "team": "a"}, true},
		{map[string]string{"sandkeep.project": "p2"}, false},
		{map[string]string{"other": ""}, false},
		{map[string]string{"sandkeep.project": "p1", "team": "b"}, false},
	} {
		if got := MatchLabels(labels, tt.sel); got != tt.want {
			t.Errorf("MatchLabels(%v) = %v, want %v", tt.sel, got, tt.want)
		}
	}
}

// script is a Provider whose Get walks through a list of answers.
type script struct {
	mu    sync.Mutex
	steps []step
	gets  int
}

type step struct {
	state State
	err   error
}

func (s *script) Name() string { return "script" }
func (s *script) Create(context.Context, CreateSpec) (Sandbox, error) {
	return Sandbox{}, ErrUnsupported
}
func (s *script) Start(context.Context, string) error   { return nil }
func (s *script) Stop(context.Context, string) error    { return nil }
func (s *script) Archive(context.Context, string) error { return nil }
func (s *script) Delete(context.Context, string) error  { return nil }
func (s *script) List(context.Context, map[string]string) ([]Sandbox, error) {
	return nil, nil
}
func (s *script) Get(_ context.Context, id string) (Sandbox, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := min(s.gets, len(s.steps)-1)
	s.gets++
	st := s.steps[i]
	if st.err != nil {
		return Sandbox{}, st.err
	}
	sb := Sandbox{ID: id, State: st.state, ProviderState: "raw-" + string(st.state)}
	if st.state == StateError {
		sb.ErrorReason = "disk full"
	}
	return sb, nil
}

func TestWaitForState(t *testing.T) {
	notFound := fmt.Errorf("get x: %w", ErrNotFound)
	for _, tt := range []struct {
		name    string
		steps   []step
		want    State
		wantErr error
		gets    int
	}{
		{"already", []step{{state: StateStarted}}, StateStarted, nil, 1},
		{"slow", []step{{state: StateCreating}, {state: StateStarting}, {state: StateStarting}, {state: StateStarted}}, StateStarted, nil, 4},
		{"error state", []step{{state: StateStarting}, {state: StateError}}, StateStarted, ErrFailed, 2},
		{"error wanted", []step{{state: StateError}}, StateError, nil, 1},
		{"destroyed meanwhile", []step{{state: StateStopping}, {state: StateDestroyed}}, StateStopped, ErrNotFound, 2},
		{"gone wanted destroyed", []step{{state: StateStarted}, {err: notFound}}, StateDestroyed, nil, 2},
		{"gone", []step{{err: notFound}}, StateStarted, ErrNotFound, 1},
		{"provider down", []step{{err: fmt.Errorf("x: %w", ErrUnavailable)}}, StateStarted, ErrUnavailable, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := &script{steps: tt.steps}
			sb, err := WaitForState(t.Context(), p, "x", tt.want, time.Millisecond)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("WaitForState: %v, want %v", err, tt.wantErr)
			}
			if err == nil && sb.State != tt.want {
				t.Fatalf("WaitForState returned state %s", sb.State)
			}
			if p.gets != tt.gets {
				t.Fatalf("%d Gets, want %d", p.gets, tt.gets)
			}
			if errors.Is(err, ErrFailed) && !strings.Contains(err.Error(), "disk full") {
				t.Fatalf("error %q does not give the reason", err)
			}
		})
	}
}

func TestWaitForStateBoundedByContext(t *testing.T) {
	p := &script{steps: []step{{state: StateStarting}}}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Millisecond)
	defer cancel()
	_, err := WaitForState(ctx, p, "x", StateStarted, time.Millisecond)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitForState: %v, want deadline exceeded", err)
	}
	if !strings.Contains(err.Error(), "starting") {
		t.Fatalf("error %q does not name the last state", err)
	}
	// A cancelled context stops it before polling again.
	ctx, cancel = context.WithCancel(t.Context())
	cancel()
	if _, err := WaitForState(ctx, p, "x", StateStarted, time.Hour); !errors.Is(err, context.Canceled) {
		t.Fatalf("WaitForState on a cancelled context: %v", err)
	}
}
