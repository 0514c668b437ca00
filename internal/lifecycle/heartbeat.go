package lifecycle

import (
	"context"
	"errors"
	"time"

	"github.com/sandkeep/sandkeep/internal/metastore"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

var errSkip = errors.New("skip")

// OnHeartbeat records an agent heartbeat on the sandbox it names
// (sandbox_id: sandkeep's id, or the provider's). Heartbeats naming no
// sandbox, an unknown one, or one of another project are ignored. Wire it
// to sessions.Registry.OnHeartbeat: the registry calls it on the stream's
// receiving goroutine, before the results that follow the heartbeat, so a
// flush result is never overtaken by an older heartbeat.
func (m *Manager) OnHeartbeat(projectID string, hb *pb.Heartbeat) {
	sid := hb.GetSandboxId()
	if sid == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	now := m.now()
	_, err := m.st.UpdateSandbox(ctx, sid, func(s *metastore.Sandbox) error {
		if s.ProjectID != projectID || !s.Live() {
			return errSkip
		}
		applyHeartbeat(s, hb, now)
		return nil
	})
	if err != nil && !errors.Is(err, errSkip) && !errors.Is(err, metastore.ErrNotFound) {
		m.log.Warn("lifecycle: record heartbeat", "sandbox", sid, "err", err)
	}
}

// applyHeartbeat is OnHeartbeat's change to the sandbox.
func applyHeartbeat(s *metastore.Sandbox, hb *pb.Heartbeat, now time.Time) {
	if lw := hb.GetLastWriteTime(); lw != nil && lw.IsValid() {
		t := lw.AsTime()
		if t.After(now) {
			t = now // an agent clock ahead of ours must not postpone cleanups
		}
		if t.After(s.LastActivity) {
			s.LastActivity = t
		}
	}
	s.AgentState = agentStateName(hb.GetState())
	s.AgentVersion = hb.GetVersion()
	s.PendingPaths, s.PendingBytes = hb.GetPendingPaths(), hb.GetPendingBytes()
	s.LastHeartbeat = now
	v := hb.GetVersion()
	if hb.GetClean() {
		if v != s.CleanVersion {
			// Committed past the confirmed flush: clean, but a new barrier
			// must confirm it before a destroy.
			s.Flushed = false
		}
		s.CleanVersion = v
		if s.Backup != metastore.BackupFailed || s.Flushed {
			s.Backup = metastore.BackupClean
		}
		return
	}
	if v >= s.CleanVersion {
		s.Flushed = false // a change since the flush (older heartbeats are stale)
	}
	if s.Backup != metastore.BackupFailed {
		s.Backup = metastore.BackupDirty
	}
}

func agentStateName(s pb.AgentState) string {
	switch s {
	case pb.AgentState_AGENT_STATE_RESTORING:
		return "restoring"
	case pb.AgentState_AGENT_STATE_IDLE:
		return "idle"
	case pb.AgentState_AGENT_STATE_SYNCING:
		return "syncing"
	case pb.AgentState_AGENT_STATE_ERROR:
		return "error"
	case pb.AgentState_AGENT_STATE_STOPPING:
		return "stopping"
	}
	return ""
}
