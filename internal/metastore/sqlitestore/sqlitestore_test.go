package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"testing"

	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/metastore/internal/sqlstore"
	"github.com/sandkeep/sandkeep/internal/metastore/internal/sqlstore/sqlstoretest"
	"github.com/sandkeep/sandkeep/internal/metastore/metastoretest"
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

const projectTables = `SELECT m.name FROM sqlite_master m JOIN pragma_table_info(m.name) p
	WHERE m.type = 'table' AND p.name = 'project_id' ORDER BY m.name`

func TestSchema(t *testing.T) {
	sqlstoretest.Run(t, func(t *testing.T) sqlstoretest.DB {
		path := filepath.Join(t.TempDir(), "odd ?#% name.db") // escaped in the URI
		return sqlstoretest.DB{
			Open: func(t *testing.T) (metastore.Store, sqlstore.Querier, error) {
				s, err := Open(t.Context(), path)
				if err != nil {
					return nil, nil, err
				}
				return s, s.d.Writer(), nil
			},
			Migrations:    migrations.SQLite,
			ProjectTables: projectTables,
		}
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

func TestEmptyPath(t *testing.T) {
	if _, err := Open(context.Background(), ""); !errors.Is(err, metastore.ErrInvalid) {
		t.Fatalf("Open(\"\") = %v, want ErrInvalid", err)
	}
}
