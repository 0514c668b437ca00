package pgstore

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/metastore/internal/sqlstore"
	"github.com/sandkeep/sandkeep/internal/metastore/internal/storeutil"
)

// driver is sqlstore.Driver on a pgx pool. Lists of ids are arrays (one
// statement whatever their length), bulk writes go through unnest, and
// garbage collection is fenced by advisory locks.
type driver struct{ pool *pgxpool.Pool }

// db runs SQL on the pool or in a transaction.
type db struct {
	q interface {
		Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
		Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
		QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	}
}

func (d db) Exec(ctx context.Context, sql string, args ...any) (int64, error) {
	tag, err := d.q.Exec(ctx, sql, args...)
	return tag.RowsAffected(), err
}

func (d db) QueryRow(ctx context.Context, sql string, args ...any) sqlstore.Row {
	return d.q.QueryRow(ctx, sql, args...)
}

func (d db) Query(ctx context.Context, fn func(sqlstore.Row) error, sql string, args ...any) error {
	rows, err := d.q.Query(ctx, sql, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := fn(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}

func (d driver) Reader() sqlstore.Querier { return db{d.pool} }
func (d driver) Writer() sqlstore.Querier { return db{d.pool} }

// Read runs fn on the pool: each statement reads what is committed when it
// starts.
func (d driver) Read(_ context.Context, fn func(sqlstore.Querier) error) error {
	return fn(db{d.pool})
}

func (d driver) Write(ctx context.Context, fn func(sqlstore.Querier) error) error {
	return pgx.BeginFunc(ctx, d.pool, func(tx pgx.Tx) error { return fn(db{tx}) })
}

// ReadBesideWrite is false: a Write holds one of the pool's connections,
// and commits that each waited for a second one could take the whole pool
// and wait for each other forever.
func (driver) ReadBesideWrite() bool { return false }

// gcLockClass is the first key of the per-project advisory locks ("skgc").
const gcLockClass int32 = 0x736b6763

// projectKey is the second key: a hash of the project id. Two projects
// sharing a key only wait for each other needlessly.
func projectKey(projectID string) int32 {
	h := fnv.New32a()
	_, _ = h.Write([]byte(projectID))
	return int32(h.Sum32())
}

// LockProject takes the project's transaction-scoped advisory lock.
func (driver) LockProject(ctx context.Context, q sqlstore.Querier, projectID string, exclusive bool) error {
	lock, mode := `pg_advisory_xact_lock_shared`, " (shared)"
	if exclusive {
		lock, mode = `pg_advisory_xact_lock`, ""
	}
	if _, err := q.Exec(ctx, `SELECT `+lock+`($1::int4, $2::int4)`, gcLockClass, projectKey(projectID)); err != nil {
		return fmt.Errorf("lock project %s%s: %w", projectID, mode, err)
	}
	return nil
}

// In binds the whole list as one array.
func (driver) In(args []any, list any, fn func(string, []any) error) error {
	return fn(fmt.Sprintf("= ANY($%d)", len(args)+1), append(slices.Clip(args), list))
}

// PostgreSQL error codes the store maps.
const (
	codeUniqueViolation     = "23505"
	codeForeignKeyViolation = "23503"
)

func hasCode(err error, code string) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == code
}

func (driver) IsUnique(err error) bool     { return hasCode(err, codeUniqueViolation) }
func (driver) IsForeignKey(err error) bool { return hasCode(err, codeForeignKeyViolation) }

// blobArrays returns the columns of blobs as arrays, for unnest.
func blobArrays(blobs []metastore.BlobLocation) []any {
	n := len(blobs)
	ids, types, offsets, lengths, raws, codecs, rawOffs := make([][]byte, n), make([]int16, n), make([]int64, n), make([]int64, n), make([]int64, n), make([]int16, n), make([]int64, n)
	for i, b := range blobs {
		ids[i], types[i], offsets[i], lengths[i], raws[i], codecs[i], rawOffs[i] = b.ID.Bytes(), int16(b.Type), b.Offset, b.Length, b.RawLength, int16(b.Codec), b.RawOffset
	}
	return []any{ids, types, offsets, lengths, raws, codecs, rawOffs}
}

// blobsTable is the unnest of blobArrays bound from $3 to $9.
const blobsTable = `unnest($3::bytea[], $4::smallint[], $5::bigint[], $6::bigint[], $7::bigint[], $8::smallint[], $9::bigint[])
	AS u(id, type, off, len, raw, codec, raw_off)`

func (driver) InsertBlobs(ctx context.Context, q sqlstore.Querier, p metastore.Pack, blobs []metastore.BlobLocation) error {
	_, err := q.Exec(ctx, `INSERT INTO blobs (`+sqlstore.BlobCols+`)
		SELECT $1, u.id, u.type, $2, u.off, u.len, u.raw, u.codec, u.raw_off FROM `+blobsTable+`
		`+sqlstore.OnBlobConflict,
		append([]any{p.ProjectID, p.ID.Bytes()}, blobArrays(blobs)...)...)
	return err
}

func (driver) MoveBlobs(ctx context.Context, q sqlstore.Querier, p metastore.Pack, blobs []metastore.BlobLocation, from []id.ID) (int64, error) {
	return q.Exec(ctx, `UPDATE blobs b SET pack_id = $2, "offset" = u.off, length = u.len, raw_length = u.raw, codec = u.codec, raw_offset = u.raw_off
		FROM `+blobsTable+`
		WHERE b.project_id = $1 AND b.id = u.id AND b.type = u.type AND b.pack_id <> $2
			AND (b.pack_id = ANY($10) OR b.pack_id IN
				(SELECT c.id FROM packs c WHERE c.project_id = $1 AND c.condemned_at IS NOT NULL))`,
		append(append([]any{p.ProjectID, p.ID.Bytes()}, blobArrays(blobs)...), storeutil.IDBytes(from))...)
}

func (driver) UpsertFiles(ctx context.Context, q sqlstore.Querier, files []metastore.ProjectFile) error {
	n := len(files)
	paths, sizes, types, sums := make([]string, n), make([]int64, n), make([]string, n), make([]string, n)
	created, updated, uploaded := make([]time.Time, n), make([]time.Time, n), make([]bool, n)
	for i, f := range files {
		paths[i], sizes[i], types[i], sums[i] = f.Path, f.Size, f.ContentType, f.Checksum
		created[i], updated[i], uploaded[i] = f.CreatedAt, f.UpdatedAt, f.UserUploaded
	}
	_, err := q.Exec(ctx, `INSERT INTO project_files (`+sqlstore.FileCols+`)
		SELECT $1, u.* FROM unnest($2::text[], $3::bigint[], $4::text[], $5::text[], $6::timestamptz[], $7::timestamptz[], $8::boolean[]) AS u
		`+sqlstore.OnFileConflict,
		files[0].ProjectID, paths, sizes, types, sums, created, updated, uploaded)
	return err
}

func (driver) MarkDeleting(ctx context.Context, q sqlstore.Querier, projectID string, ids []id.ID, at []time.Time) error {
	_, err := q.Exec(ctx, `UPDATE packs p SET deleting = true
		FROM unnest($2::bytea[], $3::timestamptz[]) AS u(id, at)
		WHERE p.project_id = $1 AND p.id = u.id AND NOT p.deleting AND p.condemned_at = u.at`,
		projectID, storeutil.IDBytes(ids), at)
	return err
}
