package main

import (
	"strings"
	"testing"

	"github.com/sandkeep/sandkeep/internal/testenv"
)

// TestDBScalePlans generates a database of 20,000 projects (small ones:
// the planner chooses by table size, and 20,000 rows is past where a
// sequential scan stops paying) and checks that every statement the
// store's per-project methods send is planned without a sequential scan of
// a table that grows with the fleet, and that each one plans at all.
func TestDBScalePlans(t *testing.T) {
	dsn := testenv.Postgres(t)
	rep, err := runDBScale(t.Context(), dsn, dbscaleOptions{projects: 20000, versions: 2, files: 2, blobs: 2})
	if err != nil {
		t.Fatal(err)
	}
	methods := map[string]bool{}
	for _, s := range rep.Statements {
		methods[strings.TrimSuffix(s.Method, "*")] = true
		if s.PlanError != "" {
			t.Errorf("%s: %s: %s", s.Method, s.SQL, s.PlanError)
		}
		if len(s.SeqScans) > 0 {
			t.Errorf("%s: sequential scan of %v: %s (plan: %v)", s.Method, s.SeqScans, s.SQL, s.Scans)
		}
	}
	for _, m := range []string{"GetProject", "GetToken", "HeadVersion", "ListProjectFiles", "MissingBlobs", "LocateBlobs", "AddPack", "CommitVersion", "LiveSandbox", "AgentRoutes"} {
		if !methods[m] {
			t.Errorf("no statement of %s was traced", m)
		}
	}
	if len(rep.Statements) < 20 {
		t.Fatalf("only %d statements traced", len(rep.Statements))
	}
}
