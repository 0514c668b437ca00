package pgstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/metastore/metastoretest"
	"github.com/sandkeep/sandkeep/internal/metastore/migrate"
	"github.com/sandkeep/sandkeep/internal/testenv"
	"github.com/sandkeep/sandkeep/migrations"
)

func open(t *testing.T, dsn string) *Store {
	t.Helper()
	s, err := Open(t.Context(), dsn)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func TestConformance(t *testing.T) {
	metastoretest.Run(t, func(t *testing.T) metastore.Store { return open(t, testenv.Postgres(t)) })
}

// TestConformanceICU runs the suite on a database whose default collation
// does not order strings bytewise: listings must not depend on it.
func TestConformanceICU(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	metastoretest.Run(t, func(t *testing.T) metastore.Store {
		return open(t, testenv.PostgresWith(t, "TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"))
	})
}

// TestConcurrentOpen starts several stores on one new database at once: the
// advisory lock lets exactly one migrate, and every Open succeeds.
func TestConcurrentOpen(t *testing.T) {
	dsn := testenv.Postgres(t)
	const n = 6
	stores := make([]*Store, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			stores[i], errs[i] = Open(t.Context(), dsn)
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Open %d: %v", i, err)
			continue
		}
		stores[i].Close()
	}
	s := open(t, dsn)
	defer s.Close()
	migs, err := migrate.Load(migrations.FS, migrations.Postgres)
	if err != nil {
		t.Fatal(err)
	}
	if got := count(t, s, "SELECT count(*) FROM schema_migrations"); got != len(migs) {
		t.Fatalf("schema_migrations has %d rows, want %d", got, len(migs))
	}
}

func TestRefusesNewerSchema(t *testing.T) {
	dsn := testenv.Postgres(t)
	s := open(t, dsn)
	exec(t, s, "INSERT INTO schema_migrations (version, applied_at) VALUES (9999, now())")
	s.Close()
	_, err := Open(t.Context(), dsn)
	if !errors.Is(err, migrate.ErrTooNew) || !strings.Contains(err.Error(), "9999") {
		t.Fatalf("Open of a newer schema: %v, want ErrTooNew naming 9999", err)
	}
}

func TestDeleteProjectCascades(t *testing.T) {
	s := open(t, testenv.Postgres(t))
	defer s.Close()
	p, err := s.CreateProject(t.Context(), "doomed")
	if err != nil {
		t.Fatal(err)
	}
	seedProject(t, s, p.ID)
	exec(t, s, "DELETE FROM projects WHERE id = '"+p.ID+"'")
	for _, table := range projectTables {
		if n := count(t, s, "SELECT count(*) FROM "+table); n != 0 {
			t.Errorf("%s: %d rows left", table, n)
		}
	}
}

// projectTables are the tables of 0001 and 0002 holding rows of a project.
var projectTables = []string{"tokens", "packs", "blobs", "versions", "project_files", "retention"}

// tablesWithProject lists every table that has a project_id column.
func tablesWithProject(t *testing.T, s *Store) []string {
	t.Helper()
	var out []string
	err := s.withConn(t.Context(), func(c *pgx.Conn) error {
		rows, err := c.Query(t.Context(), `SELECT table_name::text FROM information_schema.columns
			WHERE column_name = 'project_id' AND table_schema = current_schema() ORDER BY 1`)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
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

// TestDeleteProjectLeavesNoRows deletes one of two seeded projects with
// DeleteProject: none of its rows is left in any table, and the other
// project's rows all are.
func TestDeleteProjectLeavesNoRows(t *testing.T) {
	s := open(t, testenv.Postgres(t))
	defer s.Close()
	ctx := t.Context()
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
		if n := count(t, s, "SELECT count(*) FROM "+table+" WHERE project_id = '"+ids[0]+"'"); n == 0 {
			t.Fatalf("seeded project has no rows in %s", table)
		}
	}
	tables := tablesWithProject(t, s)
	for _, table := range tables {
		before[table] = count(t, s, "SELECT count(*) FROM "+table+" WHERE project_id = '"+ids[1]+"'")
	}
	if err := s.DeleteProject(ctx, ids[0]); err != nil {
		t.Fatal(err)
	}
	for _, table := range tables {
		if n := count(t, s, "SELECT count(*) FROM "+table+" WHERE project_id = '"+ids[0]+"'"); n != 0 {
			t.Errorf("%s: %d rows of the deleted project left", table, n)
		}
		if n := count(t, s, "SELECT count(*) FROM "+table+" WHERE project_id = '"+ids[1]+"'"); n != before[table] {
			t.Errorf("%s: %d rows of the other project, want %d", table, n, before[table])
		}
	}
	if n := count(t, s, "SELECT count(*) FROM projects WHERE id = '"+ids[0]+"'"); n != 0 {
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

func TestOpenErrors(t *testing.T) {
	ctx := context.Background()
	if _, err := Open(ctx, "postgres://h/db?pool_max_conns=zero"); !errors.Is(err, metastore.ErrInvalid) {
		t.Errorf("bad pool_max_conns: %v, want ErrInvalid", err)
	}
	if _, err := Open(ctx, "::not a dsn::"); !errors.Is(err, metastore.ErrInvalid) {
		t.Errorf("bad dsn: %v, want ErrInvalid", err)
	}
}

func TestPoolMaxConns(t *testing.T) {
	dsn := testenv.Postgres(t)
	s := open(t, dsn+"&pool_max_conns=1")
	defer s.Close()
	if cap(s.pool.sem) != 1 {
		t.Fatalf("pool size %d, want 1", cap(s.pool.sem))
	}
	// One connection is enough for everything, one call after the other.
	metastoretestSmoke(t, s)
}

func TestClosedStore(t *testing.T) {
	s := open(t, testenv.Postgres(t))
	s.Close()
	if _, err := s.ListProjects(t.Context()); !errors.Is(err, errClosed) {
		t.Fatalf("ListProjects after Close: %v, want errClosed", err)
	}
}

// metastoretestSmoke exercises a commit and a listing.
func metastoretestSmoke(t *testing.T, s metastore.Store) {
	t.Helper()
	p, err := s.CreateProject(t.Context(), "smoke")
	if err != nil {
		t.Fatal(err)
	}
	seedProject(t, s, p.ID)
	files, err := s.ListProjectFiles(t.Context(), p.ID, "", metastore.ListOptions{})
	if err != nil || len(files) != 1 {
		t.Fatalf("ListProjectFiles = %v, %v", files, err)
	}
}

func exec(t *testing.T, s *Store, sql string) {
	t.Helper()
	if err := s.withConn(t.Context(), func(c *pgx.Conn) error { _, err := c.Exec(t.Context(), sql); return err }); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func count(t *testing.T, s *Store, sql string) int {
	t.Helper()
	var n int
	if err := s.withConn(t.Context(), func(c *pgx.Conn) error { return c.QueryRow(t.Context(), sql).Scan(&n) }); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// seedProject gives a project a row in every table.
func seedProject(t *testing.T, s metastore.Store, projectID string) {
	t.Helper()
	ctx := t.Context()
	if err := s.CreateToken(ctx, metastore.Token{Hash: strings.Repeat("ab", 32), Kind: metastore.TokenSandbox, ProjectID: projectID}); err != nil {
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
