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
package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/metastore/internal/storeutil"
	"github.com/sandkeep/sandkeep/internal/metastore/migrate"
	"github.com/sandkeep/sandkeep/migrations"
)

const (
	// busyTimeoutMS bounds how long a statement waits for a lock held by
	// another connection or process.
	busyTimeoutMS = 10000
	// idChunk is the number of ids per IN (...) query, well under SQLite's
	// 32766 host parameters.
	idChunk = 1000
	// rowChunk is the number of rows per multi-row INSERT (at most 8
	// columns: 4000 parameters).
	rowChunk = 500
	// timeLayout is how times are stored: UTC, fixed width, so text order is
	// time order.
	timeLayout = "2006-01-02T15:04:05.000000Z"
)

// Store is the SQLite metadata store. It is safe for concurrent use.
type Store struct {
	w *sql.DB // the single writer connection
	r *sql.DB // the read pool (the same as w for ":memory:")
}

var _ metastore.Store = (*Store)(nil)

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
		s := &Store{w: db, r: db}
		if err := s.migrate(ctx); err != nil {
			db.Close()
			return nil, err
		}
		return s, nil
	}

	uri := "file:" + escapePath(filepath.Clean(path)) + "?"
	w, err := sql.Open("sqlite", uri+common+"&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	limitToOne(w)
	s := &Store{w: w}
	// The writer opens first: it creates the file, switches it to WAL (a
	// persistent setting) and migrates it before any reader looks.
	if err := s.migrate(ctx); err != nil {
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
	s.r = r
	return s, nil
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
	err := s.w.Close()
	if s.r != s.w {
		err = errors.Join(err, s.r.Close())
	}
	return err
}

// ---- migrations ----

func (s *Store) migrate(ctx context.Context) error {
	migs, err := migrate.Load(migrations.FS, migrations.SQLite)
	if err != nil {
		return err
	}
	if _, err := migrate.Run(ctx, migrationTarget{s.w}, migs); err != nil {
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

// ---- helpers ----

// inTx runs fn in a transaction on db and commits it, or rolls it back if fn
// fails.
func inTx(ctx context.Context, db *sql.DB, fn func(*sql.Tx) error) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

func fmtTime(t time.Time) string { return t.UTC().Format(timeLayout) }

func parseTime(s string) (time.Time, error) {
	t, err := time.Parse(timeLayout, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("stored time %q: %w", s, err)
	}
	return t, nil
}

// sqliteCode returns the extended result code of err, or 0.
func sqliteCode(err error) int {
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code()
	}
	return 0
}

func isUnique(err error) bool {
	c := sqliteCode(err)
	return c == sqlite3.SQLITE_CONSTRAINT_UNIQUE || c == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
}

func isForeignKey(err error) bool { return sqliteCode(err) == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY }

// placeholders returns "(?,?,...)" rows of n columns, count times,
// comma-separated.
func placeholders(count, n int) string {
	row := "(" + strings.Repeat("?,", n-1) + "?)"
	return strings.Repeat(row+",", count-1) + row
}

// projectExists reports whether the project exists.
func projectExists(ctx context.Context, q querier, projectID string) (bool, error) {
	var n int
	if err := q.QueryRowContext(ctx, `SELECT count(*) FROM projects WHERE id = ?`, projectID).Scan(&n); err != nil {
		return false, fmt.Errorf("look up project %s: %w", projectID, err)
	}
	return n > 0, nil
}

// needProject returns ErrNotFound unless the project exists.
func needProject(ctx context.Context, q querier, projectID string) error {
	ok, err := projectExists(ctx, q, projectID)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w: project %q", metastore.ErrNotFound, projectID)
	}
	return nil
}

// querier is a *sql.DB, *sql.Conn or *sql.Tx.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// ---- projects ----

// CreateProject makes a project with a fresh id.
func (s *Store) CreateProject(ctx context.Context, name string) (metastore.Project, error) {
	if err := storeutil.CheckName(name); err != nil {
		return metastore.Project{}, err
	}
	p := metastore.Project{Name: name, CreatedAt: storeutil.Now()}
	for attempt := 0; ; attempt++ {
		p.ID = storeutil.NewProjectID()
		_, err := s.w.ExecContext(ctx, `INSERT INTO projects (id, name, created_at, head) VALUES (?, ?, ?, 0)`,
			p.ID, p.Name, fmtTime(p.CreatedAt))
		if err == nil {
			return p, nil
		}
		if isUnique(err) {
			if strings.Contains(err.Error(), "projects.name") {
				return metastore.Project{}, fmt.Errorf("%w: a project named %q", metastore.ErrAlreadyExists, name)
			}
			if attempt < 3 {
				continue // an id collision: draw another
			}
		}
		return metastore.Project{}, fmt.Errorf("create project %q: %w", name, err)
	}
}

const projectCols = `id, name, created_at, head`

func scanProject(sc interface{ Scan(...any) error }) (metastore.Project, error) {
	var p metastore.Project
	var created string
	if err := sc.Scan(&p.ID, &p.Name, &created, &p.Head); err != nil {
		return p, err
	}
	var err error
	p.CreatedAt, err = parseTime(created)
	return p, err
}

// GetProject returns the project, or ErrNotFound.
func (s *Store) GetProject(ctx context.Context, projectID string) (metastore.Project, error) {
	if !storeutil.Storable(projectID) {
		return metastore.Project{}, storeutil.NotFound("project %q", projectID)
	}
	p, err := scanProject(s.r.QueryRowContext(ctx, `SELECT `+projectCols+` FROM projects WHERE id = ?`, projectID))
	if errors.Is(err, sql.ErrNoRows) {
		return p, fmt.Errorf("%w: project %q", metastore.ErrNotFound, projectID)
	}
	if err != nil {
		return p, fmt.Errorf("get project %s: %w", projectID, err)
	}
	return p, nil
}

// ListProjects returns every project, by name.
func (s *Store) ListProjects(ctx context.Context) ([]metastore.Project, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+projectCols+` FROM projects ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list projects: %w", err)
	}
	defer rows.Close()
	var out []metastore.Project
	for rows.Next() {
		p, err := scanProject(rows)
		if err != nil {
			return nil, fmt.Errorf("list projects: %w", err)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
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
	var project, expires any
	if t.ProjectID != "" {
		project = t.ProjectID
	}
	if !t.ExpiresAt.IsZero() {
		expires = fmtTime(t.ExpiresAt)
	}
	_, err = s.w.ExecContext(ctx, `INSERT INTO tokens (hash, kind, project_id, created_at, expires_at, revoked, note)
		VALUES (?, ?, ?, ?, ?, ?, ?)`, t.Hash, string(t.Kind), project, fmtTime(t.CreatedAt), expires, t.Revoked, t.Note)
	switch {
	case isUnique(err):
		return fmt.Errorf("%w: token %.8s…", metastore.ErrAlreadyExists, t.Hash)
	case isForeignKey(err):
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
	var kind, created string
	var project, expires sql.NullString
	err := s.r.QueryRowContext(ctx, `SELECT hash, kind, project_id, created_at, expires_at, revoked, note
		FROM tokens WHERE hash = ?`, hash).Scan(&t.Hash, &kind, &project, &created, &expires, &t.Revoked, &t.Note)
	if errors.Is(err, sql.ErrNoRows) {
		return t, fmt.Errorf("%w: token", metastore.ErrNotFound)
	}
	if err != nil {
		return t, fmt.Errorf("get token: %w", err)
	}
	t.Kind = metastore.TokenKind(kind)
	t.ProjectID = project.String
	if t.CreatedAt, err = parseTime(created); err != nil {
		return t, err
	}
	if expires.Valid {
		if t.ExpiresAt, err = parseTime(expires.String); err != nil {
			return t, err
		}
	}
	return t, nil
}

// ---- blob index ----

// MissingBlobs returns the ids (in input order, deduplicated) that the
// project's index does not hold, or holds only in a condemned pack, or
// ErrNotFound for an unknown project.
func (s *Store) MissingBlobs(ctx context.Context, projectID string, ids []id.ID) ([]id.ID, error) {
	if !storeutil.Storable(projectID) {
		return nil, storeutil.NotFound("project %q", projectID)
	}
	ids = storeutil.Dedup(ids)
	var have map[id.ID]struct{}
	err := s.readTx(ctx, func(tx *sql.Tx) error {
		if err := needProject(ctx, tx, projectID); err != nil {
			return err
		}
		var err error
		have, err = liveBlobs(ctx, tx, projectID, ids)
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
	err := s.readTx(ctx, func(tx *sql.Tx) error {
		if err := needProject(ctx, tx, projectID); err != nil {
			return err
		}
		return eachChunk(ids, func(chunk []id.ID) error {
			rows, err := tx.QueryContext(ctx, `SELECT id, type, pack_id, "offset", length, raw_length, codec
				FROM blobs WHERE project_id = ? AND id IN (`+
				strings.TrimSuffix(strings.Repeat("?,", len(chunk)), ",")+`)`, idArgs(projectID, chunk)...)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				var b, pack []byte
				var l metastore.BlobLocation
				if err := rows.Scan(&b, &l.Type, &pack, &l.Offset, &l.Length, &l.RawLength, &l.Codec); err != nil {
					return err
				}
				if l.ID, err = storeutil.ParseID(b, "blob id"); err != nil {
					return err
				}
				if l.PackID, err = storeutil.ParseID(pack, "pack id"); err != nil {
					return err
				}
				out[l.ID] = l
			}
			return rows.Err()
		})
	})
	if err != nil {
		return nil, fmt.Errorf("locate blobs of %s: %w", projectID, err)
	}
	return out, nil
}

func eachChunk(ids []id.ID, fn func([]id.ID) error) error {
	for chunk := range slices.Chunk(ids, idChunk) {
		if err := fn(chunk); err != nil {
			return err
		}
	}
	return nil
}

func idArgs(projectID string, ids []id.ID) []any {
	args := make([]any, 0, len(ids)+1)
	args = append(args, projectID)
	for i := range ids {
		args = append(args, ids[i][:])
	}
	return args
}

// readTx runs fn in a read transaction, so multi-query reads see one
// snapshot.
func (s *Store) readTx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.r.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // read-only: nothing to keep
	return fn(tx)
}

// AddPack records a verified pack and the blobs in it, in one transaction.
// Adding the same pack again changes nothing but un-condemning it; a blob
// already indexed keeps its first location unless that pack is condemned.
// An unknown project is ErrNotFound; an old p.Epoch or a pack being deleted
// is ErrStale.
func (s *Store) AddPack(ctx context.Context, p metastore.Pack, blobs []metastore.BlobLocation) error {
	p, blobs, err := storeutil.CheckPack(p, blobs)
	if err != nil {
		return err
	}
	err = inTx(ctx, s.w, func(tx *sql.Tx) error {
		if err := claimPack(ctx, tx, p); err != nil {
			return err
		}
		for chunk := range slices.Chunk(blobs, rowChunk) {
			args := make([]any, 0, 8*len(chunk))
			for _, b := range chunk {
				args = append(args, p.ProjectID, b.ID[:], b.Type, b.PackID[:], b.Offset, b.Length, b.RawLength, b.Codec)
			}
			// A blob indexed in a condemned pack moves to this one: an
			// uploader stores it again because MissingBlobs said so.
			if _, err := tx.ExecContext(ctx, `INSERT INTO blobs (project_id, id, type, pack_id, "offset", length, raw_length, codec)
				VALUES `+placeholders(len(chunk), 8)+` ON CONFLICT (project_id, id) DO UPDATE SET
					pack_id = excluded.pack_id, "offset" = excluded."offset", length = excluded.length,
					raw_length = excluded.raw_length, codec = excluded.codec
				WHERE blobs.type = excluded.type AND blobs.pack_id IN
					(SELECT c.id FROM packs c WHERE c.project_id = blobs.project_id AND c.condemned_at IS NOT NULL)`, args...); err != nil {
				return err
			}
		}
		return nil
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
	err = inTx(ctx, s.w, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE projects SET head = ? WHERE id = ? AND head = ?`, v.Number, v.ProjectID, v.Parent)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			var head int64
			err := tx.QueryRowContext(ctx, `SELECT head FROM projects WHERE id = ?`, v.ProjectID).Scan(&head)
			if errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("%w: project %q", metastore.ErrNotFound, v.ProjectID)
			}
			if err != nil {
				return err
			}
			return fmt.Errorf("%w: head is %d, the commit names %d", metastore.ErrConflict, head, v.Parent)
		}
		if len(changes.Requires) > 0 {
			// On the single writer connection: atomic with CondemnPacks and
			// DeletePacks, which write through it too.
			req := storeutil.Dedup(changes.Requires)
			have, err := liveBlobs(ctx, tx, v.ProjectID, req)
			if err != nil {
				return fmt.Errorf("check required blobs: %w", err)
			}
			if first, ok := storeutil.FirstMissing(req, have); ok {
				return storeutil.MissingErr(len(req)-len(have), first)
			}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO versions
			(project_id, number, parent, root, kind, sandbox_id, created_at, files, bytes, pinned)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			v.ProjectID, v.Number, v.Parent, v.Root[:], string(v.Kind), v.SandboxID, fmtTime(v.CreatedAt),
			v.Files, v.Bytes, v.Pinned); err != nil {
			return fmt.Errorf("insert version: %w", err)
		}
		for chunk := range slices.Chunk(dels, idChunk) {
			args := make([]any, 0, len(chunk)+1)
			args = append(args, v.ProjectID)
			for _, p := range chunk {
				args = append(args, p)
			}
			if _, err := tx.ExecContext(ctx, `DELETE FROM project_files WHERE project_id = ? AND path IN (`+
				strings.TrimSuffix(strings.Repeat("?,", len(chunk)), ",")+`)`, args...); err != nil {
				return fmt.Errorf("delete project files: %w", err)
			}
		}
		for chunk := range slices.Chunk(ups, rowChunk) {
			args := make([]any, 0, 8*len(chunk))
			for _, f := range chunk {
				args = append(args, f.ProjectID, f.Path, f.Size, f.ContentType, f.Checksum,
					fmtTime(f.CreatedAt), fmtTime(f.UpdatedAt), f.UserUploaded)
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO project_files
				(project_id, path, size, content_type, checksum, created_at, updated_at, user_uploaded)
				VALUES `+placeholders(len(chunk), 8)+`
				ON CONFLICT (project_id, path) DO UPDATE SET
					size = excluded.size,
					content_type = excluded.content_type,
					checksum = excluded.checksum,
					updated_at = excluded.updated_at,
					user_uploaded = project_files.user_uploaded OR excluded.user_uploaded`, args...); err != nil {
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

func scanVersion(sc interface{ Scan(...any) error }) (metastore.Version, error) {
	var v metastore.Version
	var root []byte
	var kind, created string
	if err := sc.Scan(&v.ProjectID, &v.Number, &v.Parent, &root, &kind, &v.SandboxID, &created, &v.Files, &v.Bytes, &v.Pinned); err != nil {
		return v, err
	}
	v.Kind = metastore.VersionKind(kind)
	var err error
	if v.Root, err = storeutil.ParseID(root, "root id"); err != nil {
		return v, err
	}
	v.CreatedAt, err = parseTime(created)
	return v, err
}

// GetVersion returns one version, or ErrNotFound.
func (s *Store) GetVersion(ctx context.Context, projectID string, number int64) (metastore.Version, error) {
	if !storeutil.Storable(projectID) {
		return metastore.Version{}, storeutil.NotFound("project %q", projectID)
	}
	v, err := scanVersion(s.r.QueryRowContext(ctx, `SELECT `+versionCols+` FROM versions WHERE project_id = ? AND number = ?`, projectID, number))
	if errors.Is(err, sql.ErrNoRows) {
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
	v, err := scanVersion(s.r.QueryRowContext(ctx, `SELECT v.project_id, v.number, v.parent, v.root, v.kind, v.sandbox_id,
			v.created_at, v.files, v.bytes, v.pinned
		FROM projects p JOIN versions v ON v.project_id = p.id AND v.number = p.head
		WHERE p.id = ?`, projectID))
	if errors.Is(err, sql.ErrNoRows) {
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
	err = s.readTx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT `+versionCols+` FROM versions
			WHERE project_id = ? AND number < ? ORDER BY number DESC LIMIT ?`, projectID, before, limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			v, err := scanVersion(rows)
			if err != nil {
				return err
			}
			out = append(out, v)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if len(out) == 0 {
			return needProject(ctx, tx, projectID)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list versions of %s: %w", projectID, err)
	}
	return out, nil
}

// ---- project files ----

const fileCols = `project_id, path, size, content_type, checksum, created_at, updated_at, user_uploaded`

func scanFile(sc interface{ Scan(...any) error }) (metastore.ProjectFile, error) {
	var f metastore.ProjectFile
	var created, updated string
	if err := sc.Scan(&f.ProjectID, &f.Path, &f.Size, &f.ContentType, &f.Checksum, &created, &updated, &f.UserUploaded); err != nil {
		return f, err
	}
	var err error
	if f.CreatedAt, err = parseTime(created); err != nil {
		return f, err
	}
	f.UpdatedAt, err = parseTime(updated)
	return f, err
}

// ListProjectFiles lists the head's files under prefix (a plain string
// prefix, no wildcards) in path order; opts.After is a path. An unknown
// project is ErrNotFound.
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
	q := `SELECT ` + fileCols + ` FROM project_files WHERE project_id = ? AND path >= ? AND path > ?`
	args := []any{projectID, prefix, after}
	if end, ok := storeutil.PrefixEnd(prefix); ok {
		q += ` AND path < ?`
		args = append(args, end)
	}
	q += ` ORDER BY path LIMIT ?`
	args = append(args, limit)
	var out []metastore.ProjectFile
	err = s.readTx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, q, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			f, err := scanFile(rows)
			if err != nil {
				return err
			}
			out = append(out, f)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if len(out) == 0 {
			return needProject(ctx, tx, projectID)
		}
		return nil
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
	f, err := scanFile(s.r.QueryRowContext(ctx, `SELECT `+fileCols+` FROM project_files WHERE project_id = ? AND path = ?`, projectID, path))
	if errors.Is(err, sql.ErrNoRows) {
		return f, fmt.Errorf("%w: file %q of project %q", metastore.ErrNotFound, path, projectID)
	}
	if err != nil {
		return f, fmt.Errorf("get file %q of %s: %w", path, projectID, err)
	}
	return f, nil
}
