package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/metastore/metastoretest"
	"github.com/sandkeep/sandkeep/internal/metastore/migrate"
	"github.com/sandkeep/sandkeep/migrations"
)

func openTemp(t *testing.T) *Store {
	t.Helper()
	s, err := Open(t.Context(), filepath.Join(t.TempDir(), "meta.db"))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func TestConformance(t *testing.T) {
	metastoretest.Run(t, func(t *testing.T) metastore.Store { return openTemp(t) })
}

// TestConformanceInMemory runs the suite on ":memory:" stores (one
// connection for reads and writes). Not under the race detector: the
// file-backed run covers the same Go code, and the race detector makes
// SQLite very slow.
func TestConformanceInMemory(t *testing.T) {
	if metastoretest.RaceEnabled {
		t.Skip("covered by TestConformance under the race detector")
	}
	metastoretest.Run(t, func(t *testing.T) metastore.Store {
		s, err := Open(t.Context(), ":memory:")
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		return s
	})
}

func TestPragmas(t *testing.T) {
	s := openTemp(t)
	defer s.Close()
	ctx := t.Context()
	for _, tt := range []struct {
		db     *sql.DB
		pragma string
		want   string
	}{
		{s.w, "journal_mode", "wal"},
		{s.w, "foreign_keys", "1"},
		{s.w, "synchronous", "1"}, // NORMAL
		{s.w, "busy_timeout", "10000"},
		{s.r, "query_only", "1"},
		{s.r, "busy_timeout", "10000"},
	} {
		var got string
		if err := tt.db.QueryRowContext(ctx, "PRAGMA "+tt.pragma).Scan(&got); err != nil {
			t.Fatalf("PRAGMA %s: %v", tt.pragma, err)
		}
		if got != tt.want {
			t.Errorf("PRAGMA %s = %q, want %q", tt.pragma, got, tt.want)
		}
	}
}

func TestReopenKeepsDataAndSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "odd ?#% name.db")
	ctx := t.Context()
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	p, err := s.CreateProject(ctx, "kept")
	if err != nil {
		t.Fatal(err)
	}
	s.Close()

	s, err = Open(ctx, path)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s.Close()
	if _, err := s.GetProject(ctx, p.ID); err != nil {
		t.Fatalf("GetProject after reopen: %v", err)
	}
	migs, err := migrate.Load(migrations.FS, migrations.SQLite)
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := s.r.QueryRowContext(ctx, "SELECT count(*) FROM schema_migrations").Scan(&n); err != nil || n != len(migs) {
		t.Fatalf("schema_migrations: %d rows, want %d, %v", n, len(migs), err)
	}
}

func TestRefusesNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meta.db")
	ctx := t.Context()
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.w.ExecContext(ctx, "INSERT INTO schema_migrations (version, applied_at) VALUES (9999, 'x')"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	_, err = Open(ctx, path)
	if !errors.Is(err, migrate.ErrTooNew) || !strings.Contains(err.Error(), "9999") {
		t.Fatalf("Open of a newer schema: %v, want ErrTooNew naming 9999", err)
	}
}

func TestDeleteProjectCascades(t *testing.T) {
	s := openTemp(t)
	defer s.Close()
	ctx := t.Context()
	p, err := s.CreateProject(ctx, "doomed")
	if err != nil {
		t.Fatal(err)
	}
	seedProject(t, s, p.ID)
	if _, err := s.w.ExecContext(ctx, "DELETE FROM projects WHERE id = ?", p.ID); err != nil {
		t.Fatalf("delete project: %v", err)
	}
	for _, table := range projectTables {
		var n int
		if err := s.r.QueryRowContext(ctx, "SELECT count(*) FROM "+table).Scan(&n); err != nil || n != 0 {
			t.Errorf("%s: %d rows left, %v", table, n, err)
		}
	}
}

// projectTables are the tables of 0001 and 0002 holding rows of a project.
var projectTables = []string{"tokens", "packs", "blobs", "versions", "project_files", "retention"}

// tablesWithProject lists every table that has a project_id column.
func tablesWithProject(t *testing.T, s *Store) []string {
	t.Helper()
	rows, err := s.r.QueryContext(t.Context(), `SELECT m.name FROM sqlite_master m JOIN pragma_table_info(m.name) p
		WHERE m.type = 'table' AND p.name = 'project_id' ORDER BY m.name`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		out = append(out, n)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	for _, want := range projectTables {
		if !slices.Contains(out, want) {
			t.Fatalf("tables with a project_id %v lack %s", out, want)
		}
	}
	return out
}

// TestDeleteProjectLeavesNoRows deletes one of two seeded projects with
// DeleteProject: none of its rows is left in any table, and the other
// project's rows all are.
func TestDeleteProjectLeavesNoRows(t *testing.T) {
	s := openTemp(t)
	defer s.Close()
	ctx := t.Context()
	count := func(q string, args ...any) int {
		t.Helper()
		var n int
		if err := s.r.QueryRowContext(ctx, q, args...).Scan(&n); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		return n
	}
	var ids []string
	for _, name := range []string{"doomed", "kept"} {
		p, err := s.CreateProject(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, p.ID)
		seedProjectGC(t, s, p.ID, name)
	}
	before := map[string]int{}
	for _, table := range projectTables {
		if n := count("SELECT count(*) FROM "+table+" WHERE project_id = ?", ids[0]); n == 0 {
			t.Fatalf("seeded project has no rows in %s", table)
		}
	}
	tables := tablesWithProject(t, s)
	for _, table := range tables {
		before[table] = count("SELECT count(*) FROM "+table+" WHERE project_id = ?", ids[1])
	}
	if err := s.DeleteProject(ctx, ids[0]); err != nil {
		t.Fatal(err)
	}
	for _, table := range tables {
		if n := count("SELECT count(*) FROM "+table+" WHERE project_id = ?", ids[0]); n != 0 {
			t.Errorf("%s: %d rows of the deleted project left", table, n)
		}
		if n := count("SELECT count(*) FROM "+table+" WHERE project_id = ?", ids[1]); n != before[table] {
			t.Errorf("%s: %d rows of the other project, want %d", table, n, before[table])
		}
	}
	if n := count("SELECT count(*) FROM projects WHERE id = ?", ids[0]); n != 0 {
		t.Errorf("projects: the deleted project's row is left")
	}
}

// seedProjectGC gives a project a row in every table, condemned and
// deleting packs included.
func seedProjectGC(t *testing.T, s metastore.Store, projectID, tag string) {
	t.Helper()
	ctx := t.Context()
	if err := s.CreateToken(ctx, metastore.Token{Hash: fmt.Sprintf("%064x", len(tag)), Kind: metastore.TokenSandbox, ProjectID: projectID}); err != nil {
		t.Fatal(err)
	}
	for i := byte(1); i <= 3; i++ {
		pack := metastore.Pack{ProjectID: projectID, ID: [32]byte{i}, Type: metastore.BlobData, Size: 10}
		if err := s.AddPack(ctx, pack, []metastore.BlobLocation{{ID: [32]byte{i, 2}, Type: metastore.BlobData, Length: 10}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.CondemnPacks(ctx, projectID, []id.ID{{2}, {3}}, time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	packs, err := s.ListPacks(ctx, projectID, metastore.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeletePacks(ctx, projectID, packs[2:]); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CommitVersion(ctx, metastore.Version{ProjectID: projectID, Root: [32]byte{3}, Kind: metastore.KindSync},
		metastore.FileChanges{Upsert: []metastore.ProjectFile{{Path: "f", Size: 1}}}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetRetention(ctx, projectID, metastore.Retention{KeepLast: 2}); err != nil {
		t.Fatal(err)
	}
}

func TestDeletePackDeletesItsBlobs(t *testing.T) {
	s := openTemp(t)
	defer s.Close()
	ctx := t.Context()
	p, err := s.CreateProject(ctx, "p")
	if err != nil {
		t.Fatal(err)
	}
	seedProject(t, s, p.ID)
	if _, err = s.w.ExecContext(ctx, "DELETE FROM packs WHERE project_id = ?", p.ID); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := s.r.QueryRowContext(ctx, "SELECT count(*) FROM blobs").Scan(&n); err != nil || n != 0 {
		t.Fatalf("blobs: %d rows left, %v", n, err)
	}
}

func TestEmptyPath(t *testing.T) {
	if _, err := Open(context.Background(), ""); !errors.Is(err, metastore.ErrInvalid) {
		t.Fatalf("Open(\"\") = %v, want ErrInvalid", err)
	}
}

// seedProject gives a project a row in every table.
func seedProject(t *testing.T, s metastore.Store, projectID string) {
	t.Helper()
	ctx := t.Context()
	hash := strings.Repeat("ab", 32)
	if err := s.CreateToken(ctx, metastore.Token{Hash: hash, Kind: metastore.TokenSandbox, ProjectID: projectID}); err != nil {
		t.Fatal(err)
	}
	pack := metastore.Pack{ProjectID: projectID, ID: [32]byte{1}, Type: metastore.BlobData, Size: 10}
	if err := s.AddPack(ctx, pack, []metastore.BlobLocation{{ID: [32]byte{2}, Type: metastore.BlobData, Length: 10}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CommitVersion(ctx, metastore.Version{ProjectID: projectID, Root: [32]byte{3}, Kind: metastore.KindSync},
		metastore.FileChanges{Upsert: []metastore.ProjectFile{{Path: "f", Size: 1}}}); err != nil {
		t.Fatal(err)
	}
}
