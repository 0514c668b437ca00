package metastoretest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/sandkeep/sandkeep/internal/metastore"
)

// ClusterStore is what the cluster suite needs: the replicas' shared state
// and Close.
type ClusterStore interface {
	metastore.ClusterStore
	Close() error
}

// RunClusterStore runs the conformance suite of metastore.ClusterStore.
func RunClusterStore(t *testing.T, open func(t *testing.T) ClusterStore) {
	runGroups(t, open, []group[ClusterStore]{
		{"Replicas", testReplicas},
		{"ForgetReplica", testForgetReplica},
		{"AgentRoutes", testAgentRoutes},
		{"Mailbox", testMailbox},
		{"MailboxErrors", testMailboxErrors},
		{"MailboxTakenOnce", testMailboxTakenOnce},
	})
}

func testReplicas(t *testing.T, s ClusterStore) {
	ctx := context.Background()
	before := time.Now().Add(-time.Second)
	if err := s.BeatReplica(ctx, metastore.Replica{ID: "rep_a", Addr: "10.0.0.1:7420", Agents: 3}); err != nil {
		t.Fatal(err)
	}
	if err := s.BeatReplica(ctx, metastore.Replica{ID: "rep_b", Addr: "10.0.0.2:7420", Leading: true}); err != nil {
		t.Fatal(err)
	}
	if err := s.BeatReplica(ctx, metastore.Replica{ID: "rep_a", Addr: "10.0.0.9:7420", Agents: 5}); err != nil {
		t.Fatal(err)
	}
	rs, err := s.ListReplicas(ctx, before)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 || rs[0].ID != "rep_a" || rs[0].Addr != "10.0.0.9:7420" || rs[0].Agents != 5 || rs[0].Leading || !rs[1].Leading {
		t.Fatalf("replicas = %+v", rs)
	}
	if rs[0].SeenAt.Before(before) || rs[0].StartedAt.After(rs[0].SeenAt) {
		t.Fatalf("replica times: %+v", rs[0])
	}
	if rs, err := s.ListReplicas(ctx, time.Now().Add(time.Hour)); err != nil || len(rs) != 0 {
		t.Fatalf("replicas seen in the future: %v, %v", rs, err)
	}
}

func testForgetReplica(t *testing.T, s ClusterStore) {
	ctx := context.Background()
	before := time.Now().Add(-time.Second)
	for _, id := range []string{"rep_a", "rep_b"} {
		if err := s.BeatReplica(ctx, metastore.Replica{ID: id, Addr: "10.0.0.1:7420"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SetAgentRoute(ctx, metastore.AgentRoute{SessionID: "ses_1", ProjectID: "prj_x", ReplicaID: "rep_a"}); err != nil {
		t.Fatal(err)
	}
	if err := s.ForgetReplica(ctx, "rep_a"); err != nil {
		t.Fatal(err)
	}
	rs, _ := s.ListReplicas(ctx, before)
	routes, _ := s.AgentRoutes(ctx, "prj_x")
	if len(rs) != 1 || rs[0].ID != "rep_b" || len(routes) != 0 {
		t.Fatalf("after forgetting rep_a: replicas %+v, routes %+v", rs, routes)
	}
	for _, bad := range []metastore.Replica{{ID: "", Addr: "x"}, {ID: "rep", Addr: ""}, {ID: "rep\x00", Addr: "x"}} {
		if err := s.BeatReplica(ctx, bad); !errors.Is(err, metastore.ErrInvalid) {
			t.Errorf("BeatReplica(%+v) = %v, want ErrInvalid", bad, err)
		}
	}
}

func testAgentRoutes(t *testing.T, s ClusterStore) {
	ctx := context.Background()
	t1 := time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)
	for i, r := range []metastore.AgentRoute{
		{SessionID: "ses_1", ProjectID: "prj_x", ReplicaID: "rep_a", ConnectedAt: t1},
		{SessionID: "ses_2", ProjectID: "prj_x", ReplicaID: "rep_b", ConnectedAt: t1.Add(time.Minute)},
		{SessionID: "ses_3", ProjectID: "prj_y", ReplicaID: "rep_a", ConnectedAt: t1},
	} {
		if err := s.SetAgentRoute(ctx, r); err != nil {
			t.Fatalf("route %d: %v", i, err)
		}
	}
	routes, err := s.AgentRoutes(ctx, "prj_x")
	if err != nil || len(routes) != 2 || routes[0].SessionID != "ses_2" || routes[1].ReplicaID != "rep_a" || !routes[1].ConnectedAt.Equal(t1) {
		t.Fatalf("routes = %+v, %v", routes, err)
	}
	// A session that reconnects to another replica moves.
	if err := s.SetAgentRoute(ctx, metastore.AgentRoute{SessionID: "ses_1", ProjectID: "prj_x", ReplicaID: "rep_c", ConnectedAt: t1.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	// The old replica's delete (its stream ended late) does not remove it.
	if err := s.DeleteAgentRoute(ctx, "ses_1", "rep_a"); err != nil {
		t.Fatal(err)
	}
	routes, _ = s.AgentRoutes(ctx, "prj_x")
	if len(routes) != 2 || routes[0].SessionID != "ses_1" || routes[0].ReplicaID != "rep_c" {
		t.Fatalf("after the move: %+v", routes)
	}
	if err := s.DeleteAgentRoute(ctx, "ses_1", "rep_c"); err != nil {
		t.Fatal(err)
	}
	routes, _ = s.AgentRoutes(ctx, "prj_x")
	if len(routes) != 1 || routes[0].SessionID != "ses_2" {
		t.Fatalf("after delete: %+v", routes)
	}
}

func testMailbox(t *testing.T, s ClusterStore) {
	ctx := context.Background()
	now := time.Now()
	post := func(id, replica string, kind metastore.CommandKind, created time.Time, deadline time.Duration) {
		t.Helper()
		if err := s.PostCommand(ctx, metastore.Command{ID: id, ReplicaID: replica, ProjectID: "prj_x", Kind: kind, Arg: 7, CreatedAt: created, Deadline: now.Add(deadline)}); err != nil {
			t.Fatal(err)
		}
	}
	post("cmd_2", "rep_a", metastore.CommandRollback, now.Add(-time.Second), time.Minute)
	post("cmd_1", "rep_a", metastore.CommandFlush, now.Add(-2*time.Second), time.Minute)
	post("cmd_late", "rep_a", metastore.CommandFlush, now.Add(-3*time.Second), -time.Second) // past its deadline
	post("cmd_b", "rep_b", metastore.CommandFlush, now, time.Minute)
	got, err := s.TakeCommands(ctx, "rep_a", 10)
	if err != nil || len(got) != 2 || got[0].ID != "cmd_1" || got[1].ID != "cmd_2" || got[1].Kind != metastore.CommandRollback || got[1].Arg != 7 {
		t.Fatalf("TakeCommands = %+v, %v", got, err)
	}
	if again, err := s.TakeCommands(ctx, "rep_a", 10); err != nil || len(again) != 0 {
		t.Fatalf("taken twice: %+v, %v", again, err)
	}
	if err := s.FinishCommand(ctx, "cmd_1", metastore.OutcomeOK, 42, ""); err != nil {
		t.Fatal(err)
	}
	c, err := s.GetCommand(ctx, "cmd_1")
	if err != nil || !c.Done || c.Outcome != metastore.OutcomeOK || c.Version != 42 {
		t.Fatalf("GetCommand = %+v, %v", c, err)
	}
	if c, _ := s.GetCommand(ctx, "cmd_2"); c.Done {
		t.Fatalf("cmd_2 done before it was finished: %+v", c)
	}
	n, err := s.DeleteCommands(ctx, now.Add(-time.Second/2))
	if err != nil || n != 3 {
		t.Fatalf("DeleteCommands = %d, %v; want the 3 older than half a second", n, err)
	}
	if _, err := s.GetCommand(ctx, "cmd_b"); err != nil {
		t.Fatalf("cmd_b went with the old ones: %v", err)
	}
}

func testMailboxErrors(t *testing.T, s ClusterStore) {
	ctx := context.Background()
	now := time.Now()
	if err := s.FinishCommand(ctx, "cmd_nope", metastore.OutcomeOK, 0, ""); !errors.Is(err, metastore.ErrNotFound) {
		t.Fatalf("FinishCommand of an unknown command: %v", err)
	}
	if _, err := s.GetCommand(ctx, "cmd_nope"); !errors.Is(err, metastore.ErrNotFound) {
		t.Fatalf("GetCommand of an unknown command: %v", err)
	}
	if err := s.PostCommand(ctx, metastore.Command{ID: "cmd_x", ReplicaID: "rep_a", ProjectID: "prj_x", Kind: "rm -rf", Deadline: now}); !errors.Is(err, metastore.ErrInvalid) {
		t.Fatalf("PostCommand of an unknown kind: %v", err)
	}
}

// testMailboxTakenOnce: replicas taking at once each get a command at most
// once, and every command is taken.
func testMailboxTakenOnce(t *testing.T, s ClusterStore) {
	ctx := context.Background()
	const n = 40
	for i := range n {
		if err := s.PostCommand(ctx, metastore.Command{ID: fmt.Sprintf("cmd_%02d", i), ReplicaID: "rep_a", ProjectID: "prj_x", Kind: metastore.CommandFlush, Deadline: time.Now().Add(time.Minute)}); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	seen := map[string]int{}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range n {
				got, err := s.TakeCommands(ctx, "rep_a", 3)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				for _, c := range got {
					seen[c.ID]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(seen) != n {
		t.Fatalf("%d of %d commands taken", len(seen), n)
	}
	for id, k := range seen {
		if k != 1 {
			t.Fatalf("%s taken %d times", id, k)
		}
	}
}
