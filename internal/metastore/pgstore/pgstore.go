// Package pgstore is the production metadata store on PostgreSQL, through
// pgx/v5. Several coordinators may share one database: commits are
// compare-and-set updates of projects.head, blob index inserts are idempotent
// and take row locks in id order, and schema migrations are serialised with a
// session advisory lock.
//
// The DSN is anything pgx.ParseConfig accepts (a postgres:// URL or
// key=value pairs), plus pool_max_conns, the bound on open connections
// (default: GOMAXPROCS, at least 4).
package pgstore

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/metastore/internal/storeutil"
	"github.com/sandkeep/sandkeep/internal/metastore/migrate"
	"github.com/sandkeep/sandkeep/migrations"
)

// migrationLock is the pg_advisory_lock key that serialises migrations
// ("sandkeep" in ASCII). Advisory locks are per database.
const migrationLock int64 = 0x73616e646b656570

// PostgreSQL error codes the store maps.
const (
	codeUniqueViolation     = "23505"
	codeForeignKeyViolation = "23503"
)

// Store is the PostgreSQL metadata store. It is safe for concurrent use.
type Store struct {
	pool *pool
}

var _ metastore.Store = (*Store)(nil)

// Open connects to the database at dsn and brings its schema up to date,
// holding an advisory lock while it migrates so that coordinators starting
// together do not race.
func Open(ctx context.Context, dsn string) (*Store, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("%w: postgres dsn: %v", metastore.ErrInvalid, err)
	}
	size := max(4, runtime.GOMAXPROCS(0))
	if v, ok := cfg.RuntimeParams["pool_max_conns"]; ok {
		delete(cfg.RuntimeParams, "pool_max_conns")
		if size, err = strconv.Atoi(v); err != nil || size < 1 {
			return nil, fmt.Errorf("%w: postgres dsn: pool_max_conns=%q, want a positive number", metastore.ErrInvalid, v)
		}
	}
	s := &Store{pool: newPool(cfg, size)}
	if err := s.migrate(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("postgres %s@%s:%d/%s: %w", cfg.User, cfg.Host, cfg.Port, cfg.Database, err)
	}
	return s, nil
}

// Close closes the connections.
func (s *Store) Close() error {
	s.pool.close()
	return nil
}

// ---- migrations ----

func (s *Store) migrate(ctx context.Context) error {
	migs, err := migrate.Load(migrations.FS, migrations.Postgres)
	if err != nil {
		return err
	}
	return s.withConn(ctx, func(c *pgx.Conn) error {
		if _, err := c.Exec(ctx, `SELECT pg_advisory_lock($1)`, migrationLock); err != nil {
			return fmt.Errorf("take the migration lock: %w", err)
		}
		defer func() {
			uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if _, err := c.Exec(uctx, `SELECT pg_advisory_unlock($1)`, migrationLock); err != nil {
				_ = c.Close(uctx) // ending the session releases the lock
			}
		}()
		if _, err := migrate.Run(ctx, migrationTarget{c}, migs); err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
		return nil
	})
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

// ---- helpers ----

// withConn runs fn on a pooled connection.
func (s *Store) withConn(ctx context.Context, fn func(*pgx.Conn) error) error {
	c, err := s.pool.acquire(ctx)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer s.pool.release(c)
	return fn(c)
}

// inTx runs fn in a transaction and commits it, or rolls it back if fn fails.
func (s *Store) inTx(ctx context.Context, fn func(pgx.Tx) error) error {
	return s.withConn(ctx, func(c *pgx.Conn) error { return pgx.BeginFunc(ctx, c, fn) })
}

func pgError(err error) *pgconn.PgError {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe
	}
	return nil
}

func hasCode(err error, code string) bool {
	pe := pgError(err)
	return pe != nil && pe.Code == code
}

// querier is a *pgx.Conn or a pgx.Tx.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// needProject returns ErrNotFound unless the project exists.
func needProject(ctx context.Context, q querier, projectID string) error {
	var ok bool
	if err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM projects WHERE id = $1)`, projectID).Scan(&ok); err != nil {
		return fmt.Errorf("look up project %s: %w", projectID, err)
	}
	if !ok {
		return fmt.Errorf("%w: project %q", metastore.ErrNotFound, projectID)
	}
	return nil
}

// ---- projects ----

// CreateProject makes a project with a fresh id.
func (s *Store) CreateProject(ctx context.Context, name string) (metastore.Project, error) {
	if err := storeutil.CheckName(name); err != nil {
		return metastore.Project{}, err
	}
	p := metastore.Project{Name: name, CreatedAt: storeutil.Now()}
	err := s.withConn(ctx, func(c *pgx.Conn) error {
		for attempt := 0; ; attempt++ {
			p.ID = storeutil.NewProjectID()
			_, err := c.Exec(ctx, `INSERT INTO projects (id, name, created_at, head) VALUES ($1, $2, $3, 0)`, p.ID, p.Name, p.CreatedAt)
			if pe := pgError(err); pe != nil && pe.Code == codeUniqueViolation {
				if pe.ConstraintName == "projects_name_key" {
					return fmt.Errorf("%w: a project named %q", metastore.ErrAlreadyExists, name)
				}
				if attempt < 3 {
					continue // an id collision: draw another
				}
			}
			return err
		}
	})
	if err != nil {
		return metastore.Project{}, fmt.Errorf("create project %q: %w", name, err)
	}
	return p, nil
}

const projectCols = `id, name, created_at, head`

func scanProject(row pgx.Row) (metastore.Project, error) {
	var p metastore.Project
	err := row.Scan(&p.ID, &p.Name, &p.CreatedAt, &p.Head)
	p.CreatedAt = p.CreatedAt.UTC()
	return p, err
}

// GetProject returns the project, or ErrNotFound.
func (s *Store) GetProject(ctx context.Context, projectID string) (metastore.Project, error) {
	if !storeutil.Storable(projectID) {
		return metastore.Project{}, storeutil.NotFound("project %q", projectID)
	}
	var p metastore.Project
	err := s.withConn(ctx, func(c *pgx.Conn) error {
		var err error
		p, err = scanProject(c.QueryRow(ctx, `SELECT `+projectCols+` FROM projects WHERE id = $1`, projectID))
		return err
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return p, fmt.Errorf("%w: project %q", metastore.ErrNotFound, projectID)
	}
	if err != nil {
		return p, fmt.Errorf("get project %s: %w", projectID, err)
	}
	return p, nil
}

// ListProjects returns every project, by name (bytewise).
func (s *Store) ListProjects(ctx context.Context) ([]metastore.Project, error) {
	var out []metastore.Project
	err := s.withConn(ctx, func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, `SELECT `+projectCols+` FROM projects ORDER BY name COLLATE "C"`)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (metastore.Project, error) { return scanProject(r) })
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list projects: %w", err)
	}
	return out, nil
}

// ---- tokens ----

// CreateToken stores t. A zero CreatedAt means now.
func (s *Store) CreateToken(ctx context.Context, t metastore.Token) error {
	t, err := storeutil.CheckToken(t, storeutil.Now())
	if err != nil {
		return err
	}
	var expires *time.Time
	if !t.ExpiresAt.IsZero() {
		expires = &t.ExpiresAt
	}
	err = s.withConn(ctx, func(c *pgx.Conn) error {
		_, err := c.Exec(ctx, `INSERT INTO tokens (hash, kind, project_id, created_at, expires_at, revoked, note)
			VALUES ($1, $2, NULLIF($3, ''), $4, $5, $6, $7)`,
			t.Hash, string(t.Kind), t.ProjectID, t.CreatedAt, expires, t.Revoked, t.Note)
		return err
	})
	switch {
	case hasCode(err, codeUniqueViolation):
		return fmt.Errorf("%w: token %.8s…", metastore.ErrAlreadyExists, t.Hash)
	case hasCode(err, codeForeignKeyViolation):
		return fmt.Errorf("%w: project %q", metastore.ErrNotFound, t.ProjectID)
	case err != nil:
		return fmt.Errorf("create token: %w", err)
	}
	return nil
}

// GetToken finds a token by the hex SHA-256 of its secret.
func (s *Store) GetToken(ctx context.Context, hash string) (metastore.Token, error) {
	if !storeutil.Storable(hash) {
		return metastore.Token{}, storeutil.NotFound("token")
	}
	var t metastore.Token
	err := s.withConn(ctx, func(c *pgx.Conn) error {
		var kind string
		var project *string
		var expires *time.Time
		err := c.QueryRow(ctx, `SELECT hash, kind, project_id, created_at, expires_at, revoked, note FROM tokens WHERE hash = $1`, hash).
			Scan(&t.Hash, &kind, &project, &t.CreatedAt, &expires, &t.Revoked, &t.Note)
		if err != nil {
			return err
		}
		t.Kind = metastore.TokenKind(kind)
		t.CreatedAt = t.CreatedAt.UTC()
		if project != nil {
			t.ProjectID = *project
		}
		if expires != nil {
			t.ExpiresAt = expires.UTC()
		}
		return nil
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return metastore.Token{}, fmt.Errorf("%w: token", metastore.ErrNotFound)
	}
	if err != nil {
		return metastore.Token{}, fmt.Errorf("get token: %w", err)
	}
	return t, nil
}

// ---- blob index ----

// MissingBlobs returns the ids (in input order, deduplicated) that the
// project's index does not hold, or holds only in a condemned pack, or
// ErrNotFound for an unknown project. One query whatever the number of ids:
// id = ANY($2).
func (s *Store) MissingBlobs(ctx context.Context, projectID string, ids []id.ID) ([]id.ID, error) {
	if !storeutil.Storable(projectID) {
		return nil, storeutil.NotFound("project %q", projectID)
	}
	ids = storeutil.Dedup(ids)
	var have map[id.ID]struct{}
	err := s.withConn(ctx, func(c *pgx.Conn) error {
		if err := needProject(ctx, c, projectID); err != nil {
			return err
		}
		var err error
		have, err = liveBlobs(ctx, c, projectID, ids)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("missing blobs of %s: %w", projectID, err)
	}
	out := make([]id.ID, 0, len(ids)-len(have))
	for _, x := range ids {
		if _, ok := have[x]; !ok {
			out = append(out, x)
		}
	}
	return out, nil
}

// LocateBlobs returns the locations of the ids the project's index holds, or
// ErrNotFound for an unknown project.
func (s *Store) LocateBlobs(ctx context.Context, projectID string, ids []id.ID) (map[id.ID]metastore.BlobLocation, error) {
	if !storeutil.Storable(projectID) {
		return nil, storeutil.NotFound("project %q", projectID)
	}
	ids = storeutil.Dedup(ids)
	out := make(map[id.ID]metastore.BlobLocation, len(ids))
	err := s.withConn(ctx, func(c *pgx.Conn) error {
		if err := needProject(ctx, c, projectID); err != nil {
			return err
		}
		if len(ids) == 0 {
			return nil
		}
		rows, err := c.Query(ctx, `SELECT id, type, pack_id, "offset", length, raw_length, codec
			FROM blobs WHERE project_id = $1 AND id = ANY($2)`, projectID, storeutil.IDBytes(ids))
		if err != nil {
			return err
		}
		var b, pack []byte
		var typ, codec int16
		var l metastore.BlobLocation
		_, err = pgx.ForEachRow(rows, []any{&b, &typ, &pack, &l.Offset, &l.Length, &l.RawLength, &codec}, func() error {
			var err error
			if l.ID, err = storeutil.ParseID(b, "blob id"); err != nil {
				return err
			}
			if l.PackID, err = storeutil.ParseID(pack, "pack id"); err != nil {
				return err
			}
			l.Type, l.Codec = metastore.BlobType(typ), uint8(codec)
			out[l.ID] = l
			return nil
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("locate blobs of %s: %w", projectID, err)
	}
	return out, nil
}

// AddPack records a verified pack and the blobs in it, in one transaction
// and one INSERT ... SELECT FROM unnest(...) for the blobs. Adding the same
// pack again changes nothing but un-condemning it; a blob already indexed
// keeps its first location unless that pack is condemned. An unknown project
// is ErrNotFound; an old p.Epoch or a pack being deleted is ErrStale.
func (s *Store) AddPack(ctx context.Context, p metastore.Pack, blobs []metastore.BlobLocation) error {
	p, blobs, err := storeutil.CheckPack(p, blobs)
	if err != nil {
		return err
	}
	n := len(blobs)
	ids, types, offsets, lengths, raws, codecs := make([][]byte, n), make([]int16, n), make([]int64, n), make([]int64, n), make([]int64, n), make([]int16, n)
	for i, b := range blobs {
		ids[i], types[i], offsets[i], lengths[i], raws[i], codecs[i] = b.ID.Bytes(), int16(b.Type), b.Offset, b.Length, b.RawLength, int16(b.Codec)
	}
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		if err := shareProject(ctx, tx, p.ProjectID); err != nil {
			return err
		}
		if err := claimPack(ctx, tx, p); err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		// The blobs come sorted by id, so concurrent AddPacks lock rows in
		// the same order and cannot deadlock. A blob indexed in a condemned
		// pack moves to this one: an uploader stores it again because
		// MissingBlobs said so.
		_, err := tx.Exec(ctx, `INSERT INTO blobs (project_id, id, type, pack_id, "offset", length, raw_length, codec)
			SELECT $1, u.id, u.type, $2, u.off, u.len, u.raw, u.codec
			FROM unnest($3::bytea[], $4::smallint[], $5::bigint[], $6::bigint[], $7::bigint[], $8::smallint[])
				AS u(id, type, off, len, raw, codec)
			ON CONFLICT (project_id, id) DO UPDATE SET
				pack_id = excluded.pack_id, "offset" = excluded."offset", length = excluded.length,
				raw_length = excluded.raw_length, codec = excluded.codec
			WHERE blobs.type = excluded.type AND blobs.pack_id IN
				(SELECT c.id FROM packs c WHERE c.project_id = blobs.project_id AND c.condemned_at IS NOT NULL)`,
			p.ProjectID, p.ID.Bytes(), ids, types, offsets, lengths, raws, codecs)
		return err
	})
	if err != nil {
		return fmt.Errorf("add pack %s to %s: %w", p.ID.Short(), p.ProjectID, err)
	}
	return nil
}

// ---- versions ----

// CommitVersion makes v the new head if v.Parent is the current head: a
// compare-and-set on projects.head, the version row and the project_files
// changes in one transaction. A stale parent is ErrConflict, an unknown
// project ErrNotFound; either way nothing changes.
func (s *Store) CommitVersion(ctx context.Context, v metastore.Version, changes metastore.FileChanges) (metastore.Version, error) {
	if err := storeutil.CheckVersion(v); err != nil {
		return metastore.Version{}, err
	}
	now := storeutil.Now()
	ups, dels, err := storeutil.Changes(v.ProjectID, changes, now)
	if err != nil {
		return metastore.Version{}, err
	}
	v.Number = v.Parent + 1
	v.CreatedAt = now
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		if len(changes.Requires) > 0 {
			// Shared with other commits and uploads, exclusive with the
			// garbage collection transactions: the check below and the
			// commit are atomic with respect to CondemnPacks, DeletePacks.
			if err := shareProject(ctx, tx, v.ProjectID); err != nil {
				return err
			}
		}
		// The row lock this UPDATE takes serialises concurrent commits to
		// the project; a loser re-reads the row after the winner commits and
		// matches nothing.
		tag, err := tx.Exec(ctx, `UPDATE projects SET head = $1 WHERE id = $2 AND head = $3`, v.Number, v.ProjectID, v.Parent)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			var head int64
			err := tx.QueryRow(ctx, `SELECT head FROM projects WHERE id = $1`, v.ProjectID).Scan(&head)
			if errors.Is(err, pgx.ErrNoRows) {
				return fmt.Errorf("%w: project %q", metastore.ErrNotFound, v.ProjectID)
			}
			if err != nil {
				return err
			}
			return fmt.Errorf("%w: head is %d, the commit names %d", metastore.ErrConflict, head, v.Parent)
		}
		if len(changes.Requires) > 0 {
			req := storeutil.Dedup(changes.Requires)
			have, err := liveBlobs(ctx, tx, v.ProjectID, req)
			if err != nil {
				return fmt.Errorf("check required blobs: %w", err)
			}
			if first, ok := storeutil.FirstMissing(req, have); ok {
				return storeutil.MissingErr(len(req)-len(have), first)
			}
		}
		if _, err := tx.Exec(ctx, `INSERT INTO versions
			(project_id, number, parent, root, kind, sandbox_id, created_at, files, bytes, pinned)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
			v.ProjectID, v.Number, v.Parent, v.Root.Bytes(), string(v.Kind), v.SandboxID, v.CreatedAt, v.Files, v.Bytes, v.Pinned); err != nil {
			return fmt.Errorf("insert version: %w", err)
		}
		if len(dels) > 0 {
			if _, err := tx.Exec(ctx, `DELETE FROM project_files WHERE project_id = $1 AND path = ANY($2)`, v.ProjectID, dels); err != nil {
				return fmt.Errorf("delete project files: %w", err)
			}
		}
		if len(ups) > 0 {
			n := len(ups)
			paths, sizes, types, sums := make([]string, n), make([]int64, n), make([]string, n), make([]string, n)
			created, updated, uploaded := make([]time.Time, n), make([]time.Time, n), make([]bool, n)
			for i, f := range ups {
				paths[i], sizes[i], types[i], sums[i] = f.Path, f.Size, f.ContentType, f.Checksum
				created[i], updated[i], uploaded[i] = f.CreatedAt, f.UpdatedAt, f.UserUploaded
			}
			if _, err := tx.Exec(ctx, `INSERT INTO project_files
				(project_id, path, size, content_type, checksum, created_at, updated_at, user_uploaded)
				SELECT $1, u.* FROM unnest($2::text[], $3::bigint[], $4::text[], $5::text[], $6::timestamptz[], $7::timestamptz[], $8::boolean[]) AS u
				ON CONFLICT (project_id, path) DO UPDATE SET
					size = excluded.size,
					content_type = excluded.content_type,
					checksum = excluded.checksum,
					updated_at = excluded.updated_at,
					user_uploaded = project_files.user_uploaded OR excluded.user_uploaded`,
				v.ProjectID, paths, sizes, types, sums, created, updated, uploaded); err != nil {
				return fmt.Errorf("upsert project files: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return metastore.Version{}, fmt.Errorf("commit version %d of %s: %w", v.Number, v.ProjectID, err)
	}
	return v, nil
}

const versionCols = `project_id, number, parent, root, kind, sandbox_id, created_at, files, bytes, pinned`

func scanVersion(row pgx.Row) (metastore.Version, error) {
	var v metastore.Version
	var root []byte
	var kind string
	if err := row.Scan(&v.ProjectID, &v.Number, &v.Parent, &root, &kind, &v.SandboxID, &v.CreatedAt, &v.Files, &v.Bytes, &v.Pinned); err != nil {
		return v, err
	}
	v.Kind = metastore.VersionKind(kind)
	v.CreatedAt = v.CreatedAt.UTC()
	var err error
	v.Root, err = storeutil.ParseID(root, "root id")
	return v, err
}

// GetVersion returns one version, or ErrNotFound.
func (s *Store) GetVersion(ctx context.Context, projectID string, number int64) (metastore.Version, error) {
	if !storeutil.Storable(projectID) {
		return metastore.Version{}, storeutil.NotFound("project %q", projectID)
	}
	var v metastore.Version
	err := s.withConn(ctx, func(c *pgx.Conn) error {
		var err error
		v, err = scanVersion(c.QueryRow(ctx, `SELECT `+versionCols+` FROM versions WHERE project_id = $1 AND number = $2`, projectID, number))
		return err
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return v, fmt.Errorf("%w: version %d of project %q", metastore.ErrNotFound, number, projectID)
	}
	if err != nil {
		return v, fmt.Errorf("get version %d of %s: %w", number, projectID, err)
	}
	return v, nil
}

// HeadVersion returns the newest version, or ErrNotFound if there is none
// (or no such project).
func (s *Store) HeadVersion(ctx context.Context, projectID string) (metastore.Version, error) {
	if !storeutil.Storable(projectID) {
		return metastore.Version{}, storeutil.NotFound("project %q", projectID)
	}
	var v metastore.Version
	err := s.withConn(ctx, func(c *pgx.Conn) error {
		var err error
		v, err = scanVersion(c.QueryRow(ctx, `SELECT v.project_id, v.number, v.parent, v.root, v.kind, v.sandbox_id,
				v.created_at, v.files, v.bytes, v.pinned
			FROM projects p JOIN versions v ON v.project_id = p.id AND v.number = p.head
			WHERE p.id = $1`, projectID))
		return err
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return v, fmt.Errorf("%w: no head version of project %q", metastore.ErrNotFound, projectID)
	}
	if err != nil {
		return v, fmt.Errorf("head version of %s: %w", projectID, err)
	}
	return v, nil
}

// ListVersions returns versions newest first; opts.After is a version
// number, and only older versions follow it. An unknown project is
// ErrNotFound.
func (s *Store) ListVersions(ctx context.Context, projectID string, opts metastore.ListOptions) ([]metastore.Version, error) {
	limit, err := storeutil.Limit(opts)
	if err != nil {
		return nil, err
	}
	before, err := storeutil.VersionsBefore(opts)
	if err != nil {
		return nil, err
	}
	if !storeutil.Storable(projectID) {
		return nil, storeutil.NotFound("project %q", projectID)
	}
	var out []metastore.Version
	err = s.withConn(ctx, func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, `SELECT `+versionCols+` FROM versions
			WHERE project_id = $1 AND number < $2 ORDER BY number DESC LIMIT $3`, projectID, before, limit)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (metastore.Version, error) { return scanVersion(r) })
		if err != nil || len(out) > 0 {
			return err
		}
		return needProject(ctx, c, projectID)
	})
	if err != nil {
		return nil, fmt.Errorf("list versions of %s: %w", projectID, err)
	}
	return out, nil
}

// ---- project files ----

const fileCols = `project_id, path, size, content_type, checksum, created_at, updated_at, user_uploaded`

func scanFile(row pgx.Row) (metastore.ProjectFile, error) {
	var f metastore.ProjectFile
	err := row.Scan(&f.ProjectID, &f.Path, &f.Size, &f.ContentType, &f.Checksum, &f.CreatedAt, &f.UpdatedAt, &f.UserUploaded)
	f.CreatedAt, f.UpdatedAt = f.CreatedAt.UTC(), f.UpdatedAt.UTC()
	return f, err
}

// ListProjectFiles lists the head's files under prefix (a plain string
// prefix: a range scan, no LIKE) in path order; opts.After is a path. An
// unknown project is ErrNotFound.
func (s *Store) ListProjectFiles(ctx context.Context, projectID, prefix string, opts metastore.ListOptions) ([]metastore.ProjectFile, error) {
	limit, err := storeutil.Limit(opts)
	if err != nil {
		return nil, err
	}
	if err := storeutil.CheckPrefix(prefix); err != nil {
		return nil, err
	}
	after, err := storeutil.FilesAfter(opts)
	if err != nil {
		return nil, err
	}
	if !storeutil.Storable(projectID) {
		return nil, storeutil.NotFound("project %q", projectID)
	}
	q := `SELECT ` + fileCols + ` FROM project_files WHERE project_id = $1 AND path >= $2 AND path > $3`
	args := []any{projectID, prefix, after}
	if end, ok := storeutil.PrefixEnd(prefix); ok {
		q += ` AND path < $5`
		args = append(args, limit, end)
	} else {
		args = append(args, limit)
	}
	q += ` ORDER BY path LIMIT $4`
	var out []metastore.ProjectFile
	err = s.withConn(ctx, func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, q, args...)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (metastore.ProjectFile, error) { return scanFile(r) })
		if err != nil || len(out) > 0 {
			return err
		}
		return needProject(ctx, c, projectID)
	})
	if err != nil {
		return nil, fmt.Errorf("list files of %s: %w", projectID, err)
	}
	return out, nil
}

// GetProjectFile returns one file of the head, or ErrNotFound.
func (s *Store) GetProjectFile(ctx context.Context, projectID, path string) (metastore.ProjectFile, error) {
	if !storeutil.Storable(projectID) || !storeutil.Storable(path) {
		return metastore.ProjectFile{}, storeutil.NotFound("file %q of project %q", path, projectID)
	}
	var f metastore.ProjectFile
	err := s.withConn(ctx, func(c *pgx.Conn) error {
		var err error
		f, err = scanFile(c.QueryRow(ctx, `SELECT `+fileCols+` FROM project_files WHERE project_id = $1 AND path = $2`, projectID, path))
		return err
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return f, fmt.Errorf("%w: file %q of project %q", metastore.ErrNotFound, path, projectID)
	}
	if err != nil {
		return f, fmt.Errorf("get file %q of %s: %w", path, projectID, err)
	}
	return f, nil
}
