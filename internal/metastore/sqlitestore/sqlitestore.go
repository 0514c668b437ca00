// Package sqlitestore is the embedded metadata store: SQLite through the pure
// Go driver modernc.org/sqlite, one file in the coordinator's data directory.
//
// Connections: every write goes through one dedicated connection (a
// *sql.DB limited to one connection, transactions started with BEGIN
// IMMEDIATE), so writers of this process queue in Go instead of failing with
// SQLITE_BUSY; reads use a separate pool of query-only connections that WAL
// lets run beside the writer. busy_timeout (10 s) covers the remaining cases:
// another process holding the file, WAL checkpoints.
//
// Durability: journal_mode=WAL with synchronous=NORMAL. A committed
// transaction survives a crash of the process; after a power loss or an OS
// crash the last transactions before it may be rolled back, but the database
// stays consistent. The bucket keeps a record of every version, from which
// the metadata can be rebuilt; deployments that need every commit on disk
// before it is acknowledged should use PostgreSQL.
//
// Times are stored as fixed-width UTC text (2006-01-02T15:04:05.000000Z).
//
// The store's logic is package sqlstore's, shared with the PostgreSQL store;
// this package is the database/sql driver under it (driver.go).
package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/metastore/internal/sqlstore"
	"github.com/sandkeep/sandkeep/internal/metastore/internal/storeutil"
	"github.com/sandkeep/sandkeep/internal/metastore/migrate"
	"github.com/sandkeep/sandkeep/migrations"
)

const (
	// busyTimeoutMS bounds how long a statement waits for a lock held by
	// another connection or process.
	busyTimeoutMS = 10000
	// idChunk is the number of ids per IN (...) query, well under SQLite's
	// 32766 host parameters; a power of two (see padded).
	idChunk = 1024
	// rowChunk is the number of rows per multi-row INSERT (at most 9
	// columns: 4608 parameters); a power of two (see bucket).
	rowChunk = 512
	// timeLayout is how times are stored: UTC, fixed width, so text order is
	// time order.
	timeLayout = "2006-01-02T15:04:05.000000Z"
)

// Store is the SQLite metadata store. It is safe for concurrent use.
type Store struct {
	*sqlstore.Store
	w *sql.DB // the single writer connection
	r *sql.DB // the read pool (the same as w for ":memory:")
	d driver
}

var (
	_ metastore.Store        = (*Store)(nil)
	_ metastore.SandboxStore = (*Store)(nil)
	_ metastore.ClusterStore = (*Store)(nil)
)

// newStore returns the store on the writer w and the read pool r.
func newStore(w, r *sql.DB) *Store {
	d := newDriver(w, r)
	return &Store{Store: sqlstore.New(d, sqlstore.Dialect{}), w: w, r: r, d: d}
}

// ownerOnly creates path (if missing) with mode 0600 and makes it and its
// -wal and -shm companions, where they exist, 0600.
func ownerOnly(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("open sqlite %s: %w", path, err)
	}
	f.Close()
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if err := os.Chmod(p, 0o600); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("open sqlite %s: %w", path, err)
		}
	}
	return nil
}

// Open opens (creating if needed) the SQLite database at path and brings its
// schema up to date. path ":memory:" makes a private in-memory database with
// a single connection, for tests.
func Open(ctx context.Context, path string) (*Store, error) {
	if path == "" {
		return nil, fmt.Errorf("%w: empty database path", metastore.ErrInvalid)
	}
	common := fmt.Sprintf("_pragma=busy_timeout(%d)&_pragma=foreign_keys(1)", busyTimeoutMS)
	if path == ":memory:" {
		db, err := sql.Open("sqlite", "file::memory:?"+common+"&_txlock=immediate")
		if err != nil {
			return nil, fmt.Errorf("open sqlite in memory: %w", err)
		}
		limitToOne(db)
		if err := migrateDB(ctx, db); err != nil {
			db.Close()
			return nil, err
		}
		return newStore(db, db), nil
	}

	// The database holds token hashes and every project's index: owner
	// only, whatever the umask (SQLite would create it, and its -wal and
	// -shm files, with the umask's bits).
	if err := ownerOnly(path); err != nil {
		return nil, err
	}
	uri := "file:" + escapePath(filepath.Clean(path)) + "?"
	w, err := sql.Open("sqlite", uri+common+"&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=cache_size(-65536)&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	limitToOne(w)
	// The writer opens first: it creates the file, switches it to WAL (a
	// persistent setting) and migrates it before any reader looks.
	if err := migrateDB(ctx, w); err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlite %s: %w", path, err)
	}
	r, err := sql.Open("sqlite", uri+common+"&_pragma=query_only(1)")
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	n := max(4, runtime.GOMAXPROCS(0))
	r.SetMaxOpenConns(n)
	r.SetMaxIdleConns(n)
	if err := r.PingContext(ctx); err != nil {
		w.Close()
		r.Close()
		return nil, fmt.Errorf("open sqlite %s for reading: %w", path, err)
	}
	// The -wal and -shm files exist now (WAL mode): owner only too.
	if err := ownerOnly(path); err != nil {
		w.Close()
		r.Close()
		return nil, err
	}
	return newStore(w, r), nil
}

func limitToOne(db *sql.DB) {
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
}

// escapePath makes path safe inside a file: URI.
func escapePath(path string) string {
	return strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(filepath.ToSlash(path))
}

// Close closes the database.
func (s *Store) Close() error {
	err := errors.Join(s.d.close(), s.w.Close())
	if s.r != s.w {
		err = errors.Join(err, s.r.Close())
	}
	return err
}

// ---- migrations ----

func migrateDB(ctx context.Context, w *sql.DB) error {
	migs, err := migrate.Load(migrations.FS, migrations.SQLite)
	if err != nil {
		return err
	}
	if _, err := migrate.Run(ctx, migrationTarget{w}, migs); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	return nil
}

type migrationTarget struct{ db *sql.DB }

func (m migrationTarget) AppliedVersions(ctx context.Context) ([]int, error) {
	if _, err := m.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER NOT NULL PRIMARY KEY,
		applied_at TEXT    NOT NULL
	) STRICT`); err != nil {
		return nil, fmt.Errorf("create schema_migrations: %w", err)
	}
	rows, err := m.db.QueryContext(ctx, `SELECT version FROM schema_migrations`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []int
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

func (m migrationTarget) Apply(ctx context.Context, mig migrate.Migration) error {
	return inTx(ctx, m.db, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations WHERE version = ?`, mig.Version).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return nil // applied by another process meanwhile
		}
		if _, err := tx.ExecContext(ctx, mig.SQL); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`,
			mig.Version, fmtTime(storeutil.Now()))
		return err
	})
}
