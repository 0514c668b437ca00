package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/sandkeep/sandkeep/internal/testenv"
)

// TestLeaderFailover runs two `sandkeep serve` processes on one PostgreSQL
// database, kills the leader of the background jobs with SIGKILL, and
// checks that the other leads within 10 s (as `sandkeep replicas` shows)
// and that at no time do both say they lead.
func TestLeaderFailover(t *testing.T) {
	coord, _ := buildBinaries(t)
	dsn := testenv.Postgres(t)
	args := []string{"--database-url", dsn} // the default --lifecycle-tick (5s)
	a := serveBinary(t, coord, args...)
	b := serveBinary(t, coord, args...)
	type replica struct {
		ID     string `json:"id"`
		Addr   string `json:"addr"`
		Leader bool   `json:"leader"`
		Self   bool   `json:"self"`
	}
	list := func(s servedCoordinator) []replica {
		t.Helper()
		cmd := exec.Command(coord, "replicas", "--json")
		cmd.Env = append(os.Environ(), "SANDKEEP_COORDINATOR="+s.grpc, "SANDKEEP_DATA="+s.data)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("replicas: %v", err)
		}
		var rs []replica
		if err := json.Unmarshal(out, &rs); err != nil {
			t.Fatalf("replicas --json: %v: %s", err, out)
		}
		return rs
	}
	// waitLeader polls `replicas` on s (bounded) until one leads, among
	// live replicas (0: however many); never two.
	waitLeader := func(s servedCoordinator, within time.Duration, live int) replica {
		t.Helper()
		deadline := time.Now().Add(within)
		for {
			rs := list(s)
			var leaders []replica
			for _, r := range rs {
				if r.Leader {
					leaders = append(leaders, r)
				}
			}
			if len(leaders) > 1 {
				t.Fatalf("two leaders at once: %+v", rs)
			}
			if len(leaders) == 1 && (live == 0 || len(rs) == live) {
				return leaders[0]
			}
			if time.Now().After(deadline) {
				t.Fatalf("no single leader among %d replicas within %s: %+v", live, within, rs)
			}
			time.Sleep(200 * time.Millisecond) // polling other processes' state
		}
	}
	first := waitLeader(a, 30*time.Second, 2)
	leader, survivor := a, b
	if first.Addr == b.grpc {
		leader, survivor = b, a
	}
	if err := syscall.Kill(leader.pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	next := waitLeader(survivor, 15*time.Second, 0)
	took := time.Since(killed)
	if next.Addr != survivor.grpc || took > 10*time.Second {
		t.Fatalf("after killing the leader: %+v leads, %s later (want the survivor within 10 s)", next, took)
	}
	t.Logf("the survivor led %s after the leader was killed", took.Round(100*time.Millisecond))
	// The dead replica leaves the registry once not seen for 10 s.
	deadline := time.Now().Add(30 * time.Second)
	for len(list(survivor)) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("the killed replica is still listed: %+v", list(survivor))
		}
		time.Sleep(500 * time.Millisecond) // polling other processes' state
	}
}
