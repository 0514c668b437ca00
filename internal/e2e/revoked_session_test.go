package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sandkeep/sandkeep/internal/agent"
	"github.com/sandkeep/sandkeep/internal/coordtest"
	"github.com/sandkeep/sandkeep/internal/server"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// TestSessionEndsWhenTokenRevokedElsewhere: a token revoked in the
// metadata store without this replica being told (as when another replica
// deletes the project) ends the agent's open session stream at its next
// heartbeat after SessionRecheck; the agent reports its token refused and
// the coordinator lists it as disconnected.
func TestSessionEndsWhenTokenRevokedElsewhere(t *testing.T) {
	c := coordtest.Start(t, coordtest.Options{Config: server.Config{SessionRecheck: time.Nanosecond}})
	pid, token := c.Project(t, "revoked-elsewhere")
	ws := newWorkspace(t)
	writeWS(t, ws, "a.txt", "a")
	a := startAgent(t, c, token, ws, agent.RunOptions{RetryMax: 200 * time.Millisecond, HeartbeatInterval: 50 * time.Millisecond}, "")
	a.flush()

	// Another replica's doing: the rows change, this replica's registry is
	// not told.
	if n, err := c.Server.Meta.RevokeProjectTokens(context.Background(), pid); err != nil || n != 1 {
		t.Fatalf("revoke: %d tokens, %v", n, err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := a.ctl.Status(context.Background())
		if err != nil {
			t.Fatalf("agent status: %v", err)
		}
		agents, err := c.Admin.ListAgents(context.Background(), &pb.ListAgentsRequest{ProjectId: pid})
		if err != nil {
			t.Fatal(err)
		}
		connected := false
		for _, ag := range agents.GetAgents() {
			connected = connected || ag.GetConnected()
		}
		if strings.Contains(st.LastError, "refused this agent's token") && !st.CoordinatorUp && !connected {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the session of a revoked token was not ended: agent %+v, connected %v", st, connected)
		}
		time.Sleep(20 * time.Millisecond) // polling the agent's status, bounded
	}
}
