package faulty_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sandkeep/sandkeep/internal/provider"
	"github.com/sandkeep/sandkeep/internal/provider/faulty"
)

// mem is a minimal in-memory provider whose operations complete at once.
type mem struct{ boxes map[string]provider.State }

func (m *mem) Name() string { return "mem" }
func (m *mem) Create(context.Context, provider.CreateSpec) (provider.Sandbox, error) {
	id := "sb" + string(rune('a'+len(m.boxes)))
	m.boxes[id] = provider.StateStarted
	return provider.Sandbox{ID: id, State: provider.StateStarted}, nil
}
func (m *mem) set(id string, s provider.State) error {
	if _, ok := m.boxes[id]; !ok {
		return provider.ErrNotFound
	}
	m.boxes[id] = s
	return nil
}
func (m *mem) Start(_ context.Context, id string) error   { return m.set(id, provider.StateStarted) }
func (m *mem) Stop(_ context.Context, id string) error    { return m.set(id, provider.StateStopped) }
func (m *mem) Archive(_ context.Context, id string) error { return m.set(id, provider.StateArchived) }
func (m *mem) Delete(_ context.Context, id string) error  { delete(m.boxes, id); return nil }
func (m *mem) Get(_ context.Context, id string) (provider.Sandbox, error) {
	s, ok := m.boxes[id]
	if !ok {
		return provider.Sandbox{}, provider.ErrNotFound
	}
	return provider.Sandbox{ID: id, State: s}, nil
}
func (m *mem) List(context.Context, map[string]string) ([]provider.Sandbox, error) { return nil, nil }

func TestFaults(t *testing.T) {
	ctx := t.Context()
	t.Run("unavailable and throttle", func(t *testing.T) {
		p := faulty.New(&mem{boxes: map[string]provider.State{}}, faulty.Faults{Unavailable: 1})
		_, err := p.Create(ctx, provider.CreateSpec{})
		var u *provider.UnavailableError
		if !errors.As(err, &u) || !provider.NotActedOn(err) {
			t.Fatalf("create: %v", err)
		}
		p.SetFaults(faulty.Faults{Throttle: 1, RetryAfter: 3 * time.Second})
		_, err = p.Get(ctx, "x")
		if !errors.As(err, &u) || u.RetryAfter() != 3*time.Second {
			t.Fatalf("get: %v", err)
		}
		if c := p.Counts(); c["unavailable"] != 1 || c["throttle"] != 1 {
			t.Fatalf("counts %v", c)
		}
	})
	t.Run("hang ends with the context", func(t *testing.T) {
		p := faulty.New(&mem{boxes: map[string]provider.State{}}, faulty.Faults{Hang: 1})
		hctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		defer cancel()
		if err := p.Start(hctx, "x"); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("hung start: %v", err)
		}
	})
	t.Run("lose, fail, slow", func(t *testing.T) {
		inner := &mem{boxes: map[string]provider.State{}}
		p := faulty.New(inner, faulty.Faults{Slow: time.Hour})
		sb, err := p.Create(ctx, provider.CreateSpec{})
		if err != nil || sb.State != provider.StateCreating {
			t.Fatalf("slow create: %+v %v", sb, err)
		}
		if err := p.Fail(ctx, sb.ID, "boom"); err != nil {
			t.Fatal(err)
		}
		if got, _ := p.Get(ctx, sb.ID); got.State != provider.StateError || got.ErrorReason != "boom" || inner.boxes[sb.ID] != provider.StateStopped {
			t.Fatalf("failed: %+v (inner %s)", got, inner.boxes[sb.ID])
		}
		if err := p.Lose(ctx, sb.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := p.Get(ctx, sb.ID); !errors.Is(err, provider.ErrNotFound) {
			t.Fatalf("a lost sandbox: %v", err)
		}
	})
}
