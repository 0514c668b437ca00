// Package sessions tracks the coordinator's live agent session streams: the
// latest heartbeat of each agent (activity, pending work, backup status) and
// a way to send an agent a command (flush, rollback) and wait for its answer.
//
// The registry is in memory: an agent reconnects to whichever coordinator
// replica it reaches, and its next heartbeat (at most one interval later)
// re-registers it there.
package sessions

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

var (
	// ErrNoAgent: no agent of the project is connected.
	ErrNoAgent = errors.New("no agent of this project is connected")
	// ErrAgentFailed: the agent answered the command with an error.
	ErrAgentFailed = errors.New("agent reported a failure")
	// ErrAgentGone: the agent's session ended before it answered.
	ErrAgentGone = errors.New("agent disconnected before answering")
)

// Stream is the server side of one Session stream.
type Stream interface {
	Send(*pb.SessionResponse) error
	Recv() (*pb.SessionRequest, error)
	Context() context.Context
}

// Info is what the registry knows about one agent session.
type Info struct {
	SessionID string
	ProjectID string
	Connected bool
	LastSeen  time.Time
	Heartbeat *pb.Heartbeat
}

type conn struct {
	info    Info
	token   string // hash of the stream's token ("" if not known)
	send    chan *pb.Command
	waiting map[string]chan *pb.CommandResult
	// closed is closed by Disconnect: Serve then ends the stream.
	closed chan struct{}
}

// Registry is safe for concurrent use.
type Registry struct {
	mu    sync.Mutex
	conns map[string]*conn // by session id
	// gone holds the projects Disconnect closed, with the time, for a while:
	// a stream authenticated just before the project's tokens were revoked
	// may reach Serve after Disconnect ran.
	gone map[string]time.Time
	log  *slog.Logger
	// OnHeartbeat, if set, is called with every heartbeat (for persistence
	// and metrics). It must not block for long.
	OnHeartbeat func(projectID string, hb *pb.Heartbeat)
	// Forget is how long a disconnected session's last heartbeat is kept.
	Forget time.Duration
	// OnConnect, if set, is called with +1 when a stream opens and -1 when
	// it ends (a gauge of connected agents).
	OnConnect func(delta int)
	// Recheck, if set, checks again that the stream's token is valid
	// (ctx is the stream's): a token revoked, or a project deleted, on
	// another replica must end the streams this one holds too. It is
	// called on a heartbeat at most once every RecheckEvery; an error
	// wrapping ErrRevoked ends the session, another error (the store is
	// unreachable) is logged and the session kept.
	Recheck      func(ctx context.Context, projectID string) error
	RecheckEvery time.Duration
	// OnSession, if set, is called when a session's stream opens (open)
	// and when it ends, unless a newer stream of the same session id
	// replaced it: the cluster's routes of agent streams.
	OnSession func(projectID, sessionID string, open bool)
}

// DefaultRecheckEvery is RecheckEvery unless set.
const DefaultRecheckEvery = time.Minute

// New returns an empty registry.
func New(log *slog.Logger) *Registry {
	if log == nil {
		log = slog.Default()
	}
	return &Registry{conns: make(map[string]*conn), gone: make(map[string]time.Time), log: log, Forget: time.Hour}
}

// MaxCommandsQueued bounds commands waiting for one agent.
const MaxCommandsQueued = 16

// Bounds on what one project's agents may make the registry hold.
const (
	// MaxSessionsPerProject bounds a project's connected session streams.
	MaxSessionsPerProject = 8
	// maxRememberedPerProject bounds a project's sessions kept, connected
	// or not (the oldest disconnected ones are forgotten first).
	maxRememberedPerProject = 32
	// Longest strings a heartbeat or command result may carry.
	maxSessionID = 64
	maxErrorLen  = 4096
	maxShortLen  = 256
)

// ErrTooMany: the project has MaxSessionsPerProject streams open already.
var ErrTooMany = errors.New("too many agent sessions for this project")

// checkHeartbeat refuses a heartbeat whose strings exceed their bounds:
// the registry keeps the last one of every session.
func checkHeartbeat(hb *pb.Heartbeat) error {
	switch {
	case len(hb.GetSessionId()) > maxSessionID:
		return fmt.Errorf("%w: heartbeat session_id longer than %d bytes", ErrInvalid, maxSessionID)
	case len(hb.GetLastError()) > maxErrorLen:
		return fmt.Errorf("%w: heartbeat last_error longer than %d bytes", ErrInvalid, maxErrorLen)
	case len(hb.GetWatchMode()) > maxShortLen, len(hb.GetSandboxId()) > maxShortLen:
		return fmt.Errorf("%w: heartbeat watch_mode or sandbox_id longer than %d bytes", ErrInvalid, maxShortLen)
	case hb.GetPendingPaths() < 0, hb.GetPendingBytes() < 0, hb.GetVersion() < 0:
		return fmt.Errorf("%w: negative heartbeat counter", ErrInvalid)
	}
	return nil
}

func checkResult(res *pb.CommandResult) error {
	if len(res.GetId()) > maxSessionID || len(res.GetError()) > maxErrorLen {
		return fmt.Errorf("%w: command result id or error too long", ErrInvalid)
	}
	return nil
}

// admit checks, under r.mu, that projectID may open one more session, and
// forgets its oldest disconnected sessions past the remembered bound.
func (r *Registry) admit(projectID string) error {
	var connected int
	var idle []*conn
	for _, c := range r.conns {
		if c.info.ProjectID != projectID {
			continue
		}
		if c.info.Connected {
			connected++
		} else {
			idle = append(idle, c)
		}
	}
	if connected >= MaxSessionsPerProject {
		return fmt.Errorf("%w (at most %d at once)", ErrTooMany, MaxSessionsPerProject)
	}
	if extra := connected + len(idle) + 1 - maxRememberedPerProject; extra > 0 {
		sort.Slice(idle, func(i, j int) bool { return idle[i].info.LastSeen.Before(idle[j].info.LastSeen) })
		for _, c := range idle[:min(extra, len(idle))] {
			delete(r.conns, c.info.SessionID)
		}
	}
	return nil
}

// Serve runs one agent's stream until it ends.
func (r *Registry) Serve(projectID string, s Stream) error {
	return r.ServeToken(projectID, "", s)
}

// ServeToken is Serve for a stream authenticated by the token whose hash is
// tokenHash (DisconnectToken ends it).
func (r *Registry) ServeToken(projectID, tokenHash string, s Stream) error {
	first, err := s.Recv()
	if err != nil {
		return err
	}
	hb := first.GetHeartbeat()
	if hb == nil || hb.GetSessionId() == "" || len(hb.GetSessionId()) > maxSessionID {
		return fmt.Errorf("%w: the first session message must be a heartbeat with a session id", ErrInvalid)
	}
	if err := checkHeartbeat(hb); err != nil {
		return err
	}
	sid := hb.GetSessionId()
	c := &conn{token: tokenHash, info: Info{SessionID: sid, ProjectID: projectID, Connected: true}, send: make(chan *pb.Command, MaxCommandsQueued),
		waiting: make(map[string]chan *pb.CommandResult), closed: make(chan struct{})}
	r.mu.Lock()
	if _, gone := r.gone[projectID]; gone {
		r.mu.Unlock()
		return ErrDisconnected
	}
	if old, ok := r.conns[sid]; ok && old.info.ProjectID != projectID {
		r.mu.Unlock()
		return fmt.Errorf("%w: session id belongs to another project", ErrInvalid)
	}
	if err := r.admit(projectID); err != nil {
		r.mu.Unlock()
		return err
	}
	r.conns[sid] = c
	r.mu.Unlock()
	if r.OnSession != nil {
		r.OnSession(projectID, sid, true)
		defer func() {
			r.mu.Lock()
			current := r.conns[sid] == c
			r.mu.Unlock()
			if current {
				r.OnSession(projectID, sid, false)
			}
		}()
	}
	r.heartbeat(c, hb)
	if r.OnConnect != nil {
		r.OnConnect(1)
		defer r.OnConnect(-1)
	}
	defer func() {
		r.mu.Lock()
		c.info.Connected = false
		for id, ch := range c.waiting {
			close(ch)
			delete(c.waiting, id)
		}
		r.mu.Unlock()
	}()

	ctx := s.Context()
	errc := make(chan error, 1)
	checked := time.Now()
	go func() {
		for {
			msg, err := s.Recv()
			if err != nil {
				errc <- err
				return
			}
			switch {
			case msg.GetHeartbeat() != nil:
				if err := checkHeartbeat(msg.GetHeartbeat()); err != nil {
					errc <- err
					return
				}
				if err := r.recheck(ctx, projectID, &checked); err != nil {
					errc <- err
					return
				}
				r.heartbeat(c, msg.GetHeartbeat())
			case msg.GetResult() != nil:
				res := msg.GetResult()
				if err := checkResult(res); err != nil {
					errc <- err
					return
				}
				r.mu.Lock()
				ch, ok := c.waiting[res.GetId()]
				delete(c.waiting, res.GetId())
				r.mu.Unlock()
				if ok {
					ch <- res
				}
			}
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c.closed:
			return ErrDisconnected
		case err := <-errc:
			return err
		case cmd := <-c.send:
			if err := s.Send(&pb.SessionResponse{Command: cmd}); err != nil {
				return err
			}
		}
	}
}

// recheck runs Recheck if it is due (last is when it last ran); it
// returns an error only when the session must end.
func (r *Registry) recheck(ctx context.Context, projectID string, last *time.Time) error {
	every := r.RecheckEvery
	if every <= 0 {
		every = DefaultRecheckEvery
	}
	if r.Recheck == nil || time.Since(*last) < every {
		return nil
	}
	*last = time.Now()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err := r.Recheck(cctx, projectID)
	if errors.Is(err, ErrRevoked) {
		r.log.Info("agent session ended: its token is no longer valid", "project", projectID, "err", err)
		return err
	}
	if err != nil && ctx.Err() == nil {
		r.log.Warn("agent session: cannot check its token again; keeping it", "project", projectID, "err", err)
	}
	return nil
}

// ErrRevoked: the token a session was opened with is no longer valid
// (revoked, expired, or its project deleted), as Recheck found.
var ErrRevoked = errors.New("session closed: its token is no longer valid")

// ErrInvalid: a malformed session message.
var ErrInvalid = errors.New("invalid session message")

// ErrDisconnected: Disconnect closed the session (its project was deleted).
var ErrDisconnected = errors.New("session closed: the project was deleted and its tokens revoked")

// goneFor is how long Disconnect refuses new sessions of a project: longer
// than a stream takes from authentication to Serve.
const goneFor = 10 * time.Minute

// Disconnect ends every session of the project at once, and refuses new
// ones for a while (goneFor): the project was deleted and its tokens were
// revoked, so its agents must stop. It returns the number of sessions
// ended.
func (r *Registry) Disconnect(projectID string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	for p, t := range r.gone {
		if now.Sub(t) > goneFor {
			delete(r.gone, p)
		}
	}
	r.gone[projectID] = now
	n := 0
	for id, c := range r.conns {
		if c.info.ProjectID != projectID {
			continue
		}
		if c.info.Connected {
			close(c.closed)
			c.info.Connected = false // no command is sent to it any more
			n++
		}
		delete(r.conns, id)
	}
	return n
}

// DisconnectToken ends every open stream authenticated by the token whose
// hash is tokenHash (it was revoked) and returns how many it ended.
func (r *Registry) DisconnectToken(tokenHash string) int {
	if tokenHash == "" {
		return 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, c := range r.conns {
		if c.token == tokenHash && c.info.Connected {
			close(c.closed)
			c.info.Connected = false
			n++
		}
	}
	return n
}

func (r *Registry) heartbeat(c *conn, hb *pb.Heartbeat) {
	r.mu.Lock()
	c.info.Heartbeat = hb
	c.info.LastSeen = time.Now().UTC()
	pid := c.info.ProjectID
	r.gcLocked()
	r.mu.Unlock()
	if r.OnHeartbeat != nil {
		r.OnHeartbeat(pid, hb)
	}
}

func (r *Registry) gcLocked() {
	for id, c := range r.conns {
		if !c.info.Connected && time.Since(c.info.LastSeen) > r.Forget {
			delete(r.conns, id)
		}
	}
}

// Agents returns the sessions of a project, connected ones first, newest
// first.
func (r *Registry) Agents(projectID string) []Info {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Info
	for _, c := range r.conns {
		if c.info.ProjectID == projectID {
			out = append(out, c.info)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Connected != out[j].Connected {
			return out[i].Connected
		}
		return out[i].LastSeen.After(out[j].LastSeen)
	})
	return out
}

// Connected counts the connected agent sessions.
func (r *Registry) Connected() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, c := range r.conns {
		if c.info.Connected {
			n++
		}
	}
	return n
}

func newCommandID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "cmd_" + hex.EncodeToString(b[:])
}

// send delivers cmd to every connected agent of the project and waits for
// their answers; it returns the highest version answered.
func (r *Registry) send(ctx context.Context, projectID string, cmd *pb.Command) (int64, error) {
	r.mu.Lock()
	var targets []*conn
	var chans []chan *pb.CommandResult
	for _, c := range r.conns {
		if c.info.ProjectID != projectID || !c.info.Connected {
			continue
		}
		ch := make(chan *pb.CommandResult, 1)
		select {
		case c.send <- cmd:
		default:
			r.mu.Unlock()
			return 0, fmt.Errorf("agent %s has too many commands queued", c.info.SessionID)
		}
		c.waiting[cmd.GetId()] = ch
		targets = append(targets, c)
		chans = append(chans, ch)
	}
	r.mu.Unlock()
	if len(targets) == 0 {
		return 0, ErrNoAgent
	}
	var best int64
	for i, ch := range chans {
		select {
		case res, ok := <-ch:
			if !ok {
				return 0, fmt.Errorf("%w: agent %s", ErrAgentGone, targets[i].info.SessionID)
			}
			if res.GetError() != "" {
				return 0, fmt.Errorf("%w: %s", ErrAgentFailed, res.GetError())
			}
			best = max(best, res.GetVersion())
		case <-ctx.Done():
			r.mu.Lock()
			for _, c := range targets {
				delete(c.waiting, cmd.GetId())
			}
			r.mu.Unlock()
			return 0, ctx.Err()
		}
	}
	return best, nil
}

// Flush asks the project's connected agents for a flush barrier.
func (r *Registry) Flush(ctx context.Context, projectID string, timeout time.Duration) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout+5*time.Second)
	defer cancel()
	return r.send(ctx, projectID, &pb.Command{Id: newCommandID(), Kind: &pb.Command_Flush{Flush: &pb.FlushCommand{Timeout: durationpb.New(timeout)}}})
}

// Rollback tells the project's connected agents that the head is now
// version, and waits for them to bring their workspaces there.
func (r *Registry) Rollback(ctx context.Context, projectID string, version int64) (int64, error) {
	return r.send(ctx, projectID, &pb.Command{Id: newCommandID(), Kind: &pb.Command_Rollback{Rollback: &pb.RollbackCommand{Version: version}}})
}
