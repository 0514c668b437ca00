package sessions

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

const wait = 30 * time.Second

// fakeStream is the server side of a session stream: the test feeds
// Recv through in and reads what Serve sends from out.
type fakeStream struct {
	ctx context.Context
	in  chan *pb.SessionRequest
	out chan *pb.SessionResponse
}

func newFakeStream(ctx context.Context) *fakeStream {
	return &fakeStream{ctx: ctx, in: make(chan *pb.SessionRequest, 4), out: make(chan *pb.SessionResponse, 4)}
}

func (s *fakeStream) Send(m *pb.SessionResponse) error {
	select {
	case s.out <- m:
		return nil
	case <-s.ctx.Done():
		return s.ctx.Err()
	}
}

func (s *fakeStream) Recv() (*pb.SessionRequest, error) {
	select {
	case m, ok := <-s.in:
		if !ok {
			return nil, io.EOF
		}
		return m, nil
	case <-s.ctx.Done():
		return nil, s.ctx.Err()
	}
}

func (s *fakeStream) Context() context.Context { return s.ctx }

func hb(session string) *pb.SessionRequest {
	return &pb.SessionRequest{Msg: &pb.SessionRequest_Heartbeat{Heartbeat: &pb.Heartbeat{SessionId: session}}}
}

// serve runs a session of project until it ends, and returns its error.
func serve(t *testing.T, r *Registry, project, session string) (*fakeStream, <-chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s := newFakeStream(ctx)
	s.in <- hb(session)
	done := make(chan error, 1)
	go func() { done <- r.Serve(project, s) }()
	return s, done
}

// TestDisconnect: ending a deleted project's sessions ends their streams at
// once (and any command waiting for an answer), refuses new sessions of
// that project, and leaves the other projects' sessions alone.
func TestDisconnect(t *testing.T) {
	r := New(slog.New(slog.DiscardHandler))
	// Serve registers a session before it hands its first heartbeat to
	// OnHeartbeat: one heartbeat seen per session means all are registered.
	seen := make(chan string, 8)
	r.OnHeartbeat = func(_ string, hb *pb.Heartbeat) { seen <- hb.GetSessionId() }
	_, doneA := serve(t, r, "prj_a", "s1")
	_, doneA2 := serve(t, r, "prj_a", "s2")
	sB, doneB := serve(t, r, "prj_b", "s3")
	for range 3 {
		select {
		case <-seen:
		case <-time.After(wait):
			t.Fatal("the sessions never registered")
		}
	}
	// A command to A's agents, never answered.
	flushed := make(chan error, 1)
	go func() {
		_, err := r.Flush(context.Background(), "prj_a", time.Hour)
		flushed <- err
	}()

	if n := r.Disconnect("prj_a"); n != 2 {
		t.Fatalf("Disconnect ended %d sessions, want 2", n)
	}
	for i, done := range []<-chan error{doneA, doneA2} {
		select {
		case err := <-done:
			if !errors.Is(err, ErrDisconnected) {
				t.Fatalf("session %d of the deleted project ended with %v", i, err)
			}
		case <-time.After(wait):
			t.Fatalf("session %d of the deleted project still open", i)
		}
	}
	select {
	case err := <-flushed:
		if err == nil {
			t.Fatal("a flush of the deleted project's agents succeeded")
		}
	case <-time.After(wait):
		t.Fatal("a flush waiting for the deleted project's agents never returned")
	}
	if got := r.Agents("prj_a"); len(got) != 0 {
		t.Fatalf("the deleted project still lists agents: %v", got)
	}
	// A session that reaches Serve afterwards (authenticated before the
	// revocation) is refused.
	_, late := serve(t, r, "prj_a", "s4")
	select {
	case err := <-late:
		if !errors.Is(err, ErrDisconnected) {
			t.Fatalf("a new session of the deleted project: %v", err)
		}
	case <-time.After(wait):
		t.Fatal("a new session of the deleted project was accepted")
	}
	// B is untouched: its session still takes commands.
	select {
	case err := <-doneB:
		t.Fatalf("the other project's session ended: %v", err)
	default:
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() { _, _ = r.Flush(ctx, "prj_b", time.Second) }()
	select {
	case m := <-sB.out:
		if m.GetCommand().GetFlush() == nil {
			t.Fatalf("the other project's agent got %v", m)
		}
	case <-time.After(wait):
		t.Fatal("the other project's agent no longer gets commands")
	}
}

// TestRecheck: a session whose token Recheck finds revoked ends at its
// next heartbeat (with ErrRevoked, and that heartbeat is not recorded); a
// Recheck that cannot tell (the store is down) keeps it; Recheck runs at
// most once every RecheckEvery.
func TestRecheck(t *testing.T) {
	for _, tc := range []struct {
		name    string
		every   time.Duration
		answers []error // Recheck's answers, in order
		wantEnd bool
		calls   int
	}{
		{name: "valid", every: time.Nanosecond, answers: []error{nil, nil}, calls: 2},
		{name: "store down", every: time.Nanosecond, answers: []error{errors.New("db down"), nil}, calls: 2},
		{name: "revoked", every: time.Nanosecond, answers: []error{nil, fmt.Errorf("%w: token revoked", ErrRevoked)}, wantEnd: true, calls: 2},
		{name: "not due", every: time.Hour, answers: []error{ErrRevoked, ErrRevoked}, calls: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := New(slog.New(slog.DiscardHandler))
			r.RecheckEvery = tc.every
			var mu sync.Mutex
			calls := 0
			r.Recheck = func(_ context.Context, projectID string) error {
				mu.Lock()
				defer mu.Unlock()
				if projectID != "prj" {
					t.Errorf("Recheck of %q", projectID)
				}
				calls++
				return tc.answers[calls-1]
			}
			seen := make(chan string, 8)
			r.OnHeartbeat = func(_ string, hb *pb.Heartbeat) { seen <- hb.GetSessionId() }
			s, done := serve(t, r, "prj", "s1")
			<-seen // the first heartbeat: the stream was just authenticated
			for i := range len(tc.answers) {
				s.in <- hb("s1")
				if tc.wantEnd && i == len(tc.answers)-1 {
					break
				}
				select {
				case <-seen:
				case err := <-done:
					t.Fatalf("heartbeat %d ended the session: %v", i+1, err)
				case <-time.After(wait):
					t.Fatalf("heartbeat %d not recorded", i+1)
				}
			}
			if tc.wantEnd {
				select {
				case err := <-done:
					if !errors.Is(err, ErrRevoked) {
						t.Fatalf("session ended with %v, want ErrRevoked", err)
					}
				case <-time.After(wait):
					t.Fatal("the session of a revoked token is still open")
				}
				if len(seen) != 0 {
					t.Fatal("the heartbeat of a revoked token was recorded")
				}
				if got := r.Agents("prj"); len(got) != 1 || got[0].Connected {
					t.Fatalf("agents after the revocation: %+v", got)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if calls != tc.calls {
				t.Fatalf("Recheck called %d times, want %d", calls, tc.calls)
			}
		})
	}
}
