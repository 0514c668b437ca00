package agent

import (
	"context"
	"errors"
	"io"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sandkeep/sandkeep/internal/remote"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

var agentStates = map[string]pb.AgentState{
	"restoring": pb.AgentState_AGENT_STATE_RESTORING,
	"idle":      pb.AgentState_AGENT_STATE_IDLE,
	"syncing":   pb.AgentState_AGENT_STATE_SYNCING,
	"error":     pb.AgentState_AGENT_STATE_ERROR,
	"stopping":  pb.AgentState_AGENT_STATE_STOPPING,
	// Not sent (no session exists then), listed for completeness.
	"connecting":    pb.AgentState_AGENT_STATE_RESTORING,
	"token_refused": pb.AgentState_AGENT_STATE_ERROR,
}

func (r *runner) heartbeat() *pb.Heartbeat {
	s := r.Status()
	hb := &pb.Heartbeat{
		SessionId: r.c.Session.GetSessionId(), State: agentStates[s.State], Version: s.Version,
		PendingPaths: s.PendingPaths, PendingBytes: s.PendingBytes, LastError: s.LastError,
		WatchMode: s.WatchMode, Clean: s.Clean, SandboxId: r.cfg.Remote.SandboxID,
	}
	if !s.LastWrite.IsZero() {
		hb.LastWriteTime = timestamppb.New(s.LastWrite)
	}
	if !s.LastCommit.IsZero() {
		hb.LastCommitTime = timestamppb.New(s.LastCommit)
	}
	return hb
}

// sessionLoop keeps the Session stream open (reconnecting with backoff):
// heartbeats every HeartbeatInterval and on every state change; commands
// are handed to the main loop and their results sent back.
func (r *runner) sessionLoop(ctx context.Context) {
	backoff := r.opts.RetryMin
	for ctx.Err() == nil {
		start := time.Now()
		err := r.session(ctx)
		if ctx.Err() != nil {
			return
		}
		r.mu.Lock()
		r.status.CoordinatorUp = false
		r.mu.Unlock()
		if time.Since(start) > time.Minute {
			backoff = r.opts.RetryMin
		}
		if remote.IsTokenRefused(err) {
			// The token was revoked or the project deleted. Nothing on
			// disk is touched; the agent keeps what it has and retries
			// slowly, in case the operator restores access. A stop now
			// exits at once: there is nothing it may still save.
			backoff = r.opts.RetryMax
			r.refuseToken(err)
			r.log.Error("coordinator refused this agent's token (revoked, or the project was deleted); retrying slowly", "err", err, "in", backoff)
		} else {
			r.log.Debug("session stream ended; reconnecting", "err", err, "in", backoff)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, r.opts.RetryMax)
	}
}

func (r *runner) session(ctx context.Context) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := r.c.API().Session(sctx)
	if err != nil {
		return err
	}
	if err := stream.Send(&pb.SessionRequest{Msg: &pb.SessionRequest_Heartbeat{Heartbeat: r.heartbeat()}}); err != nil {
		return err
	}
	r.mu.Lock()
	r.status.CoordinatorUp = true
	r.mu.Unlock()
	r.acceptToken()
	recvErr := make(chan error, 1)
	go func() {
		for {
			msg, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			if cmd := msg.GetCommand(); cmd != nil {
				select {
				case r.cmdCh <- cmd:
				case <-sctx.Done():
					recvErr <- sctx.Err()
					return
				}
			}
		}
	}()
	tick := time.NewTicker(r.opts.HeartbeatInterval)
	defer tick.Stop()
	for {
		var msg *pb.SessionRequest
		select {
		case <-ctx.Done():
			_ = stream.CloseSend()
			return ctx.Err()
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case res := <-r.results:
			msg = &pb.SessionRequest{Msg: &pb.SessionRequest_Result{Result: res}}
		case <-tick.C:
			msg = &pb.SessionRequest{Msg: &pb.SessionRequest_Heartbeat{Heartbeat: r.heartbeat()}}
		case <-r.kick:
			msg = &pb.SessionRequest{Msg: &pb.SessionRequest_Heartbeat{Heartbeat: r.heartbeat()}}
		}
		if err := stream.Send(msg); err != nil {
			return err
		}
	}
}
