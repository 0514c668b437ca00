// Package pgstore is the production metadata store on PostgreSQL, through
// pgx/v5 and its pool, pgxpool. Several coordinators may share one database:
// commits are compare-and-set updates of projects.head, blob index inserts
// are idempotent and take row locks in id order, garbage collection is
// fenced by per-project advisory locks, and schema migrations are serialised
// with a session advisory lock.
//
// The store's logic is package sqlstore's, shared with the SQLite store;
// this package is the pgx driver under it (driver.go).
//
// The DSN is anything pgxpool.ParseConfig accepts: a postgres:// URL or
// key=value pairs, plus the pool's settings such as pool_max_conns, the
// bound on open connections (default: the greater of 4 and the number of
// CPUs).
package pgstore

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/metastore/internal/sqlstore"
	"github.com/sandkeep/sandkeep/internal/metastore/internal/storeutil"
	"github.com/sandkeep/sandkeep/internal/metastore/migrate"
	"github.com/sandkeep/sandkeep/migrations"
)

// migrationLock is the pg_advisory_lock key that serialises migrations
// ("sandkeep" in ASCII). Advisory locks are per database.
const migrationLock int64 = 0x73616e646b656570

// Store is the PostgreSQL metadata store. It is safe for concurrent use.
type Store struct {
	*sqlstore.Store
	pool *pgxpool.Pool
}

var (
	_ metastore.Store        = (*Store)(nil)
	_ metastore.SandboxStore = (*Store)(nil)
	_ metastore.ClusterStore = (*Store)(nil)
)

// Option tunes Open.
type Option func(*pgxpool.Config)

// WithTracer has t see every statement the store runs (the load harness
// collects them to EXPLAIN them on a large database).
func WithTracer(t pgx.QueryTracer) Option {
	return func(c *pgxpool.Config) { c.ConnConfig.Tracer = t }
}

// Open connects to the database at dsn and brings its schema up to date,
// holding an advisory lock while it migrates so that coordinators starting
// together do not race.
func Open(ctx context.Context, dsn string, opts ...Option) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("%w: postgres dsn: %v", metastore.ErrInvalid, err)
	}
	for _, o := range opts {
		o(cfg)
	}
	cfg.AfterConnect = func(_ context.Context, c *pgx.Conn) error {
		// Times come back in UTC, as sqlstore expects them.
		c.TypeMap().RegisterType(&pgtype.Type{Name: "timestamptz", OID: pgtype.TimestamptzOID,
			Codec: &pgtype.TimestamptzCodec{ScanLocation: time.UTC}})
		return nil
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres pool: %w", err)
	}
	s := &Store{Store: sqlstore.New(driver{pool}, sqlstore.Dialect{ForUpdate: " FOR UPDATE", Bytewise: ` COLLATE "C"`}), pool: pool}
	if err := s.migrate(ctx); err != nil {
		s.Close()
		c := cfg.ConnConfig
		return nil, fmt.Errorf("postgres %s@%s:%d/%s: %w", c.User, c.Host, c.Port, c.Database, err)
	}
	return s, nil
}

// Close closes the connections, waiting for the ones in use.
func (s *Store) Close() error {
	s.pool.Close()
	return nil
}

// ---- migrations ----

func (s *Store) migrate(ctx context.Context) error {
	migs, err := migrate.Load(migrations.FS, migrations.Postgres)
	if err != nil {
		return err
	}
	c, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	if _, err := c.Exec(ctx, `SELECT pg_advisory_lock($1)`, migrationLock); err != nil {
		c.Release()
		return fmt.Errorf("take the migration lock: %w", err)
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, err := c.Exec(uctx, `SELECT pg_advisory_unlock($1)`, migrationLock); err != nil {
			_ = c.Hijack().Close(uctx) // ending the session releases the lock
			return
		}
		c.Release()
	}()
	if _, err := migrate.Run(ctx, migrationTarget{c.Conn()}, migs); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	return nil
}

type migrationTarget struct{ c *pgx.Conn }

func (m migrationTarget) AppliedVersions(ctx context.Context) ([]int, error) {
	if _, err := m.c.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    integer     PRIMARY KEY,
		applied_at timestamptz NOT NULL
	)`); err != nil {
		return nil, fmt.Errorf("create schema_migrations: %w", err)
	}
	rows, err := m.c.Query(ctx, `SELECT version FROM schema_migrations`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[int])
}

func (m migrationTarget) Apply(ctx context.Context, mig migrate.Migration) error {
	return pgx.BeginFunc(ctx, m.c, func(tx pgx.Tx) error {
		var done bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = $1)`, mig.Version).Scan(&done); err != nil {
			return err
		}
		if done {
			return nil
		}
		// No arguments: the simple protocol, which runs a multi-statement script.
		if _, err := tx.Exec(ctx, mig.SQL); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)`, mig.Version, storeutil.Now())
		return err
	})
}
