// Package sqlstore is the metadata store written once for both databases:
// metastore.Store and metastore.SandboxStore on a Driver, which the SQLite
// and PostgreSQL packages implement.
//
// The SQL here is what both dialects accept: $1, $2, ... placeholders
// (modernc.org/sqlite binds $N to the Nth argument, as PostgreSQL does),
// true, false and NOT for booleans (SQLite stores them as 0 and 1), times
// as time.Time and nullable times as *time.Time, both as arguments and as
// Scan targets (the drivers store them in their own form and return them in
// UTC), and "no row" errors that match sql.ErrNoRows (pgx.ErrNoRows does).
// What the databases do differently is the Driver's: lists of ids, bulk
// writes, locks, and the few spellings in Dialect.
package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/metastore/internal/storeutil"
)

// Row is one row of a result.
type Row interface {
	Scan(dest ...any) error
}

// Querier runs SQL on a database handle or inside a transaction.
type Querier interface {
	// Exec runs a statement and returns how many rows it changed.
	Exec(ctx context.Context, sql string, args ...any) (int64, error)
	// QueryRow runs a query for one row. Its Scan fails with an error
	// matching sql.ErrNoRows when there is none.
	QueryRow(ctx context.Context, sql string, args ...any) Row
	// Query runs a query and calls fn for each row; an error from fn stops it.
	Query(ctx context.Context, fn func(Row) error, sql string, args ...any) error
}

// Driver is what the shared code needs from a database.
//
// Read, Write, Reader and Writer never nest: the code that runs inside one
// uses the Querier it was given, so a pool of one connection is enough; the
// one exception is a Read beside a Write where ReadBesideWrite allows it.
type Driver interface {
	// Reader runs single statements that only read; Writer single
	// statements that write.
	Reader() Querier
	Writer() Querier
	// Read runs fn's reads together (SQLite: in one read transaction).
	Read(ctx context.Context, fn func(Querier) error) error
	// Write runs fn in a transaction and commits it, or rolls it back if fn
	// fails.
	Write(ctx context.Context, fn func(Querier) error) error

	// ReadBesideWrite reports whether a Write may run a Read in another
	// goroutine and wait for it: true only where reads have connections of
	// their own that never wait for a writer's, and see every transaction
	// committed before the Write's lock was taken (SQLite in WAL with a read
	// pool). Where it is false, Read and Write never nest (above).
	ReadBesideWrite() bool

	// LockProject takes the project's lock until the transaction of q ends:
	// shared by uploads and by commits that require blobs, exclusive for
	// garbage collection and project deletion. A database that runs one
	// writer at a time needs none.
	LockProject(ctx context.Context, q Querier, projectID string, exclusive bool) error

	// In matches a column against list, a [][]byte, []int64 or []string:
	// it calls fn with the SQL that follows the column ("= ANY($3)" or
	// "IN ($3, $4, ...)") and args followed by the list's arguments, once
	// or once per batch of the list (none for an empty list).
	In(args []any, list any, fn func(in string, args []any) error) error

	// IsUnique and IsForeignKey tell constraint violations apart.
	IsUnique(err error) bool
	IsForeignKey(err error) bool

	// InsertBlobs indexes blobs (sorted by id, all of pack p) in p:
	// INSERT INTO blobs (BlobCols) ... OnBlobConflict.
	InsertBlobs(ctx context.Context, q Querier, p metastore.Pack, blobs []metastore.BlobLocation) error
	// UpsertFiles writes files (sorted by path, all of one project):
	// INSERT INTO project_files (FileCols) ... OnFileConflict.
	UpsertFiles(ctx context.Context, q Querier, files []metastore.ProjectFile) error
	// MoveBlobs points at their location in p the blobs of blobs (sorted by
	// id) of the same type that are indexed in a pack of from (sorted by
	// id) or in a condemned pack, and returns how many it moved.
	MoveBlobs(ctx context.Context, q Querier, p metastore.Pack, blobs []metastore.BlobLocation, from []id.ID) (int64, error)
	// MarkDeleting makes each pack ids[i] of the project deleting if it is
	// not yet and is condemned at exactly at[i].
	MarkDeleting(ctx context.Context, q Querier, projectID string, ids []id.ID, at []time.Time) error
}

// Dialect holds the spellings that differ between the databases.
type Dialect struct {
	// ForUpdate ends a SELECT of a row that the transaction goes on to
	// change: " FOR UPDATE" where writers lock rows (PostgreSQL), "" where
	// they take turns (SQLite).
	ForUpdate string
	// Bytewise follows a text column in ORDER BY to sort it bytewise,
	// whatever the database's collation: ` COLLATE "C"` (PostgreSQL), ""
	// (SQLite compares bytewise).
	Bytewise string
}

// Columns and conflict rules of the bulk writes (see Driver).
const (
	BlobCols = `project_id, id, type, pack_id, "offset", length, raw_length, codec, raw_offset`
	// OnBlobConflict: a blob already indexed keeps its first location,
	// unless its pack is condemned; then it moves to the new pack (an
	// uploader stores it again because MissingBlobs said so).
	OnBlobConflict = `ON CONFLICT (project_id, id) DO UPDATE SET
		pack_id = excluded.pack_id, "offset" = excluded."offset", length = excluded.length,
		raw_length = excluded.raw_length, codec = excluded.codec, raw_offset = excluded.raw_offset
	WHERE blobs.type = excluded.type AND blobs.pack_id IN
		(SELECT c.id FROM packs c WHERE c.project_id = blobs.project_id AND c.condemned_at IS NOT NULL)`

	FileCols = `project_id, path, size, content_type, checksum, created_at, updated_at, user_uploaded`
	// OnFileConflict: an upsert keeps the row's created_at, and
	// user_uploaded is sticky.
	OnFileConflict = `ON CONFLICT (project_id, path) DO UPDATE SET
		size = excluded.size,
		content_type = excluded.content_type,
		checksum = excluded.checksum,
		updated_at = excluded.updated_at,
		user_uploaded = project_files.user_uploaded OR excluded.user_uploaded`
)

// Store implements metastore.Store and metastore.SandboxStore on a Driver.
// The database packages embed it and add Open and Close.
type Store struct {
	d  Driver
	dl Dialect
}

// New returns a Store on d, whose SQL dialect is dl.
func New(d Driver, dl Dialect) *Store { return &Store{d: d, dl: dl} }

// Every method of metastore.Store but Close, which is the database
// package's.
var _ metastore.SandboxStore = (*Store)(nil)

// ---- helpers ----

func noRows(err error) bool { return errors.Is(err, sql.ErrNoRows) }

// needProject returns ErrNotFound unless the project exists.
func needProject(ctx context.Context, q Querier, projectID string) error {
	var ok bool
	if err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM projects WHERE id = $1)`, projectID).Scan(&ok); err != nil {
		return fmt.Errorf("look up project %s: %w", projectID, err)
	}
	if !ok {
		return storeutil.NotFound("project %q", projectID)
	}
	return nil
}

// collect runs a query and returns its rows as scan reads them.
func collect[T any](ctx context.Context, q Querier, scan func(Row) (T, error), sql string, args ...any) ([]T, error) {
	var out []T
	err := q.Query(ctx, func(r Row) error {
		v, err := scan(r)
		if err != nil {
			return err
		}
		out = append(out, v)
		return nil
	}, sql, args...)
	return out, err
}

// listOf runs a listing of one project's rows. An empty listing of an
// unknown project is ErrNotFound.
func listOf[T any](ctx context.Context, s *Store, projectID string, scan func(Row) (T, error), sql string, args ...any) ([]T, error) {
	var out []T
	err := s.d.Read(ctx, func(q Querier) error {
		var err error
		if out, err = collect(ctx, q, scan, sql, args...); err != nil || len(out) > 0 {
			return err
		}
		return needProject(ctx, q, projectID)
	})
	return out, err
}

// scanID reads a row of one stored id.
func scanID(r Row, what string) (id.ID, error) {
	var b []byte
	if err := r.Scan(&b); err != nil {
		return id.ID{}, err
	}
	return storeutil.ParseID(b, what)
}

// nullTime is t as a nullable argument: nil for the zero time.
func nullTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// deref is a scanned nullable time: the zero time for NULL.
func deref(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return *t
}
