// Package sqlstoretest holds the tests of the stores built on sqlstore that
// look at the database itself: what migrations leave, what the schema's
// foreign keys cascade. The conformance suite (metastoretest) sees a store
// only through its interfaces.
package sqlstoretest

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/metastore/internal/sqlstore"
	"github.com/sandkeep/sandkeep/internal/metastore/migrate"
	"github.com/sandkeep/sandkeep/migrations"
)

// DB is one database of the store under test.
type DB struct {
	// Open opens a store on the database (the same one at every call) and
	// returns it with a Querier that writes to the database.
	Open func(t *testing.T) (metastore.Store, sqlstore.Querier, error)
	// Migrations is the directory of the dialect's migrations in
	// migrations.FS.
	Migrations string
	// ProjectTables is a query for the names of the tables that have a
	// project_id column.
	ProjectTables string
}

// projectTables are the tables of migrations 0001 and 0002 that hold rows of
// a project.
var projectTables = []string{"tokens", "packs", "blobs", "versions", "project_files", "retention"}

// Run runs the tests, each on a new database that newDB returns.
func Run(t *testing.T, newDB func(t *testing.T) DB) {
	for _, tt := range []struct {
		name string
		fn   func(t *testing.T, db DB)
	}{
		{"Reopen", testReopen},
		{"RefusesNewerSchema", testRefusesNewerSchema},
		{"DeleteProjectCascades", testDeleteProjectCascades},
		{"DeleteProjectLeavesNoRows", testDeleteProjectLeavesNoRows},
		{"DeletePackDeletesItsBlobs", testDeletePackDeletesItsBlobs},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.fn(t, newDB(t))
		})
	}
}

// open opens a store on db that is closed when the test ends.
func open(t *testing.T, db DB) (metastore.Store, sqlstore.Querier) {
	t.Helper()
	s, q, err := db.Open(t)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s, q
}

// CheckMigrated fails the test unless schema_migrations lists every
// migration of dir exactly once.
func CheckMigrated(t *testing.T, q sqlstore.Querier, dir string) {
	t.Helper()
	migs, err := migrate.Load(migrations.FS, dir)
	if err != nil {
		t.Fatal(err)
	}
	if n := count(t, q, `SELECT count(*) FROM schema_migrations`); n != len(migs) {
		t.Fatalf("schema_migrations has %d rows, want %d", n, len(migs))
	}
}

func count(t *testing.T, q sqlstore.Querier, query string, args ...any) int {
	t.Helper()
	var n int
	if err := q.QueryRow(t.Context(), query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

func exec(t *testing.T, q sqlstore.Querier, query string, args ...any) {
	t.Helper()
	if _, err := q.Exec(t.Context(), query, args...); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}

func testReopen(t *testing.T, db DB) {
	s, _ := open(t, db)
	p, err := s.CreateProject(t.Context(), "kept")
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, q := open(t, db)
	if _, err := s.GetProject(t.Context(), p.ID); err != nil {
		t.Fatalf("GetProject after reopen: %v", err)
	}
	CheckMigrated(t, q, db.Migrations)
}

func testRefusesNewerSchema(t *testing.T, db DB) {
	s, q := open(t, db)
	exec(t, q, `INSERT INTO schema_migrations (version, applied_at) VALUES (9999, $1)`, time.Now())
	s.Close()
	s, _, err := db.Open(t)
	if err == nil {
		s.Close()
	}
	if !errors.Is(err, migrate.ErrTooNew) || !strings.Contains(err.Error(), "9999") {
		t.Fatalf("Open of a newer schema: %v, want ErrTooNew naming 9999", err)
	}
}

// tablesWithProject lists every table that has a project_id column.
func tablesWithProject(t *testing.T, db DB, q sqlstore.Querier) []string {
	t.Helper()
	var out []string
	err := q.Query(t.Context(), func(r sqlstore.Row) error {
		var name string
		err := r.Scan(&name)
		out = append(out, name)
		return err
	}, db.ProjectTables)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range projectTables {
		if !slices.Contains(out, want) {
			t.Fatalf("tables with a project_id %v lack %s", out, want)
		}
	}
	return out
}

// testDeleteProjectCascades deletes a project's row by hand: the foreign
// keys take every row of the project with it.
func testDeleteProjectCascades(t *testing.T, db DB) {
	s, q := open(t, db)
	p := newProject(t, s, "doomed")
	exec(t, q, `DELETE FROM projects WHERE id = $1`, p)
	for _, table := range tablesWithProject(t, db, q) {
		if n := count(t, q, `SELECT count(*) FROM `+table); n != 0 {
			t.Errorf("%s: %d rows left", table, n)
		}
	}
}

// testDeleteProjectLeavesNoRows deletes one of two seeded projects with
// DeleteProject: none of its rows is left in any table, and the other
// project's rows all are.
func testDeleteProjectLeavesNoRows(t *testing.T, db DB) {
	s, q := open(t, db)
	doomed, kept := newProject(t, s, "doomed"), newProject(t, s, "kept")
	rows := func(table, projectID string) int {
		t.Helper()
		return count(t, q, `SELECT count(*) FROM `+table+` WHERE project_id = $1`, projectID)
	}
	for _, table := range projectTables {
		if rows(table, doomed) == 0 {
			t.Fatalf("seeded project has no rows in %s", table)
		}
	}
	tables := tablesWithProject(t, db, q)
	before := map[string]int{}
	for _, table := range tables {
		before[table] = rows(table, kept)
	}
	if err := s.DeleteProject(t.Context(), doomed); err != nil {
		t.Fatal(err)
	}
	for _, table := range tables {
		if n := rows(table, doomed); n != 0 {
			t.Errorf("%s: %d rows of the deleted project left", table, n)
		}
		if n := rows(table, kept); n != before[table] {
			t.Errorf("%s: %d rows of the other project, want %d", table, n, before[table])
		}
	}
	if n := count(t, q, `SELECT count(*) FROM projects WHERE id = $1`, doomed); n != 0 {
		t.Errorf("projects: the deleted project's row is left")
	}
}

// testDeletePackDeletesItsBlobs deletes a project's packs by hand: their
// blobs go with them.
func testDeletePackDeletesItsBlobs(t *testing.T, db DB) {
	s, q := open(t, db)
	p := newProject(t, s, "p")
	if n := count(t, q, `SELECT count(*) FROM blobs`); n == 0 {
		t.Fatal("seeded project has no blobs")
	}
	exec(t, q, `DELETE FROM packs WHERE project_id = $1`, p)
	if n := count(t, q, `SELECT count(*) FROM blobs`); n != 0 {
		t.Fatalf("blobs: %d rows left", n)
	}
}

// newProject creates a project with a row in every table of projectTables,
// condemned and deleting packs included, and returns its id.
func newProject(t *testing.T, s metastore.Store, name string) string {
	t.Helper()
	ctx := t.Context()
	p, err := s.CreateProject(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateToken(ctx, metastore.Token{Hash: fmt.Sprintf("%064x", len(name)), Kind: metastore.TokenSandbox, ProjectID: p.ID}); err != nil {
		t.Fatal(err)
	}
	for i := byte(1); i <= 3; i++ {
		pack := metastore.Pack{ProjectID: p.ID, ID: [32]byte{i}, Type: metastore.BlobData, Size: 10}
		if err := s.AddPack(ctx, pack, []metastore.BlobLocation{{ID: [32]byte{i, 2}, Type: metastore.BlobData, Length: 10}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.CondemnPacks(ctx, p.ID, []id.ID{{2}, {3}}, time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	packs, err := s.ListPacks(ctx, p.ID, metastore.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeletePacks(ctx, p.ID, packs[2:]); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CommitVersion(ctx, metastore.Version{ProjectID: p.ID, Root: [32]byte{3}, Kind: metastore.KindSync},
		metastore.FileChanges{Upsert: []metastore.ProjectFile{{Path: "f", Size: 1}}}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetRetention(ctx, p.ID, metastore.Retention{KeepLast: 2}); err != nil {
		t.Fatal(err)
	}
	return p.ID
}
