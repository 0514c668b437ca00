package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"iter"
	"slices"
	"strings"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/metastore/internal/sqlstore"
)

// driver is sqlstore.Driver on database/sql: writes on the single writer
// connection (which also makes the project locks unnecessary: writers take
// turns), reads on the read pool, lists of ids and bulk writes in chunks
// that stay under SQLite's limit of host parameters. wc and rc keep the
// prepared statements of w and r (the same cache when w is r).
type driver struct {
	w, r   *sql.DB
	wc, rc *stmtCache
}

func newDriver(w, r *sql.DB) driver {
	d := driver{w: w, r: r, wc: newStmtCache(w)}
	d.rc = d.wc
	if r != w {
		d.rc = newStmtCache(r)
	}
	return d
}

// close closes the prepared statements of both caches.
func (d driver) close() error {
	err := d.wc.close()
	if d.rc != d.wc {
		err = errors.Join(err, d.rc.close())
	}
	return err
}

// db runs SQL on a *sql.DB or *sql.Tx, storing times as text (timeLayout),
// with the statements its cache has prepared.
type db struct {
	q interface {
		ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
		QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
		QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
		PrepareContext(ctx context.Context, query string) (*sql.Stmt, error)
	}
	tx    *sql.Tx    // q, when it is a transaction
	c     *stmtCache // the prepared statements of q's database
	local *txStmts   // with tx: the statements bound to it
}

// txStmts are the statements one transaction uses, bound to it: those of
// the cache, bound once per transaction rather than per run, and its own.
// The cache prepares a text only after a transaction (stmtCache), so a text
// it does not hold yet, run many times in one transaction (the pieces of a
// commit's files, the batches of a long id list), would be parsed each
// time: its second run prepares it on the transaction instead, and later
// runs reuse it. The transaction's end closes them all. Used by the
// transaction's goroutine only.
type txStmts struct {
	seen  map[string]bool
	stmts map[string]*sql.Stmt
}

// get returns query's statement on tx: cached (the cache's, or nil) bound
// to tx, or one prepared on tx if query ran in it before; nil the first
// time, or if it fails to prepare (running it unprepared reports the
// error).
func (l *txStmts) get(ctx context.Context, tx *sql.Tx, query string, cached *sql.Stmt) *sql.Stmt {
	if st, ok := l.stmts[query]; ok {
		return st
	}
	var st *sql.Stmt
	switch {
	case cached != nil:
		st = tx.StmtContext(ctx, cached)
	case !l.seen[query]:
		if l.seen == nil {
			l.seen = make(map[string]bool)
		}
		l.seen[query] = true
		return nil
	default:
		var err error
		if st, err = tx.PrepareContext(ctx, query); err != nil {
			return nil
		}
	}
	if l.stmts == nil {
		l.stmts = make(map[string]*sql.Stmt)
	}
	l.stmts[query] = st
	return st
}

// stmt returns query's prepared statement for d (bound to d's transaction,
// which closes it), or nil if neither the cache nor the transaction has
// one yet.
func (d db) stmt(ctx context.Context, query string) *sql.Stmt {
	st := d.c.get(query)
	if d.tx == nil {
		return st
	}
	return d.local.get(ctx, d.tx, query, st)
}

// ran prepares, outside a transaction, the texts the cache noted.
func (d db) ran(ctx context.Context) {
	if d.tx == nil {
		d.c.prepareNoted(ctx)
	}
}

func (d db) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	var res sql.Result
	var err error
	if st := d.stmt(ctx, query); st != nil {
		res, err = st.ExecContext(ctx, storedArgs(args)...)
	} else {
		res, err = d.q.ExecContext(ctx, query, storedArgs(args)...)
		d.ran(ctx)
	}
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (d db) QueryRow(ctx context.Context, query string, args ...any) sqlstore.Row {
	if st := d.stmt(ctx, query); st != nil {
		return row{st.QueryRowContext(ctx, storedArgs(args)...)}
	}
	// Not d.ran here: the row holds its connection until scanned, and
	// the writer has one.
	return row{d.q.QueryRowContext(ctx, query, storedArgs(args)...)}
}

func (d db) Query(ctx context.Context, fn func(sqlstore.Row) error, query string, args ...any) error {
	var rows *sql.Rows
	var err error
	if st := d.stmt(ctx, query); st != nil {
		rows, err = st.QueryContext(ctx, storedArgs(args)...)
	} else {
		rows, err = d.q.QueryContext(ctx, query, storedArgs(args)...)
		defer d.ran(ctx)
	}
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := fn(row{rows}); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	return rows.Close()
}

// prepare prepares a statement on the writer connection or transaction q
// (a db from this driver), for bulk writes one row at a time.
func prepare(ctx context.Context, q sqlstore.Querier, query string) (*sql.Stmt, error) {
	return q.(db).q.PrepareContext(ctx, query)
}

// storedArgs returns args with times as they are stored: time.Time as text,
// *time.Time as text or NULL.
func storedArgs(args []any) []any {
	out := args
	for i, a := range args {
		var v any
		switch a := a.(type) {
		case time.Time:
			v = fmtTime(a)
		case *time.Time:
			if a != nil {
				v = fmtTime(*a)
			}
		default:
			continue
		}
		if len(out) > 0 && &out[0] == &args[0] {
			out = slices.Clone(args) // not the caller's
		}
		out[i] = v
	}
	return out
}

// row scans times from their stored text: into *time.Time from TEXT, into
// **time.Time from TEXT or NULL.
type row struct {
	r interface{ Scan(...any) error }
}

func (r row) Scan(dest ...any) error {
	targets := dest
	var parse []func() error
	for i, d := range dest {
		var target any
		switch d := d.(type) {
		case *time.Time:
			var s string
			target = &s
			parse = append(parse, func() (err error) {
				*d, err = parseTime(s)
				return err
			})
		case **time.Time:
			var s sql.NullString
			target = &s
			parse = append(parse, func() error {
				if !s.Valid {
					*d = nil
					return nil
				}
				t, err := parseTime(s.String)
				*d = &t
				return err
			})
		default:
			continue
		}
		if &targets[0] == &dest[0] {
			targets = slices.Clone(dest) // not the caller's
		}
		targets[i] = target
	}
	if err := r.r.Scan(targets...); err != nil {
		return err
	}
	for _, p := range parse {
		if err := p(); err != nil {
			return err
		}
	}
	return nil
}

func (d driver) Reader() sqlstore.Querier { return db{q: d.r, c: d.rc} }
func (d driver) Writer() sqlstore.Querier { return db{q: d.w, c: d.wc} }

// Read runs fn in a read transaction, so that its reads see one snapshot.
func (d driver) Read(ctx context.Context, fn func(sqlstore.Querier) error) error {
	tx, err := d.r.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer d.rc.prepareNoted(ctx)
	defer tx.Rollback() //nolint:errcheck // read-only: nothing to keep
	return fn(db{q: tx, tx: tx, c: d.rc, local: &txStmts{}})
}

// Write runs fn in a BEGIN IMMEDIATE transaction of the writer.
func (d driver) Write(ctx context.Context, fn func(sqlstore.Querier) error) error {
	defer d.wc.prepareNoted(ctx)
	return inTx(ctx, d.w, func(tx *sql.Tx) error { return fn(db{q: tx, tx: tx, c: d.wc, local: &txStmts{}}) })
}

// ReadBesideWrite is true for a database file: its read pool is not the
// writer's connection, and in WAL a reader never waits for the writer. The
// writer takes its lock at BEGIN (IMMEDIATE), so a read that starts inside a
// Write sees what was committed before it and nothing after. An in-memory
// store has one connection for both.
func (d driver) ReadBesideWrite() bool { return d.r != d.w }

// LockProject needs no lock: the one writer runs the transactions one at a
// time.
func (driver) LockProject(context.Context, sqlstore.Querier, string, bool) error { return nil }

// In spreads the list over host parameters, idChunk at a time (see
// inList for where the statement's own parameters must be).
func (driver) In(args []any, list any, fn func(string, []any) error) error {
	var values []any
	switch l := list.(type) {
	case [][]byte:
		values = anys(l)
	case []int64:
		values = anys(l)
	case []string:
		values = anys(l)
	default:
		return fmt.Errorf("sqlitestore: a list of %T", list)
	}
	for chunk := range slices.Chunk(values, idChunk) {
		// Padded with copies of the last id to a power of two, so that
		// the statements come in a few texts the cache keeps; an IN list
		// ignores the copies.
		for len(chunk) < padded(len(chunk)) {
			chunk = append(chunk, chunk[len(chunk)-1])
		}
		if err := fn(inList(len(chunk)), append(slices.Clip(args), chunk...)); err != nil {
			return err
		}
	}
	return nil
}

// pieces cuts rows into pieces of bucket sizes (at most rowChunk rows),
// largest first, for multi-row statements of a few texts.
func pieces[T any](rows []T) iter.Seq[[]T] {
	return func(yield func([]T) bool) {
		for len(rows) > 0 {
			n := bucket(len(rows), rowChunk)
			if !yield(rows[:n:n]) {
				return
			}
			rows = rows[n:]
		}
	}
}

func anys[T any](xs []T) []any {
	out := make([]any, len(xs))
	for i, x := range xs {
		out[i] = x
	}
	return out
}

// inList returns "IN (?,?,...)", n anonymous parameters. They take the
// arguments after the statement's own: SQLite numbers a "?" one past the
// highest parameter so far, so the statement's own $1..$k must all appear
// before the list (every caller's do). Anonymous parameters, not "$N":
// SQLite looks a named parameter up in a list of the names so far, and the
// driver asks each one's name, which made a list of a thousand ids cost a
// million string comparisons (a tenth of the coordinator's CPU in an
// initial sync).
func inList(n int) string {
	return "IN (" + strings.Repeat("?,", n-1) + "?)"
}

// sqliteCode returns the extended result code of err, or 0.
func sqliteCode(err error) int {
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code()
	}
	return 0
}

func (driver) IsUnique(err error) bool {
	c := sqliteCode(err)
	return c == sqlite3.SQLITE_CONSTRAINT_UNIQUE || c == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
}

func (driver) IsForeignKey(err error) bool {
	return sqliteCode(err) == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY
}

// values returns "(?,?,...)" rows of n columns, count times, comma-separated.
func values(count, n int) string {
	row := "(" + strings.Repeat("?,", n-1) + "?)"
	return strings.Repeat(row+",", count-1) + row
}

func (driver) InsertBlobs(ctx context.Context, q sqlstore.Querier, p metastore.Pack, blobs []metastore.BlobLocation) error {
	for chunk := range pieces(blobs) {
		args := make([]any, 0, 9*len(chunk))
		for _, b := range chunk {
			args = append(args, p.ProjectID, b.ID[:], int16(b.Type), p.ID[:], b.Offset, b.Length, b.RawLength, int16(b.Codec), b.RawOffset)
		}
		if _, err := q.Exec(ctx, `INSERT INTO blobs (`+sqlstore.BlobCols+`) VALUES `+values(len(chunk), 9)+`
			`+sqlstore.OnBlobConflict, args...); err != nil {
			return err
		}
	}
	return nil
}

func (driver) UpsertFiles(ctx context.Context, q sqlstore.Querier, files []metastore.ProjectFile) error {
	var times timeText // a file's created and updated times are usually both its mtime
	for chunk := range pieces(files) {
		args := make([]any, 0, 8*len(chunk))
		for _, f := range chunk {
			args = append(args, f.ProjectID, f.Path, f.Size, f.ContentType, f.Checksum, times.of(f.CreatedAt), times.of(f.UpdatedAt), f.UserUploaded)
		}
		if _, err := q.Exec(ctx, `INSERT INTO project_files (`+sqlstore.FileCols+`) VALUES `+values(len(chunk), 8)+`
			`+sqlstore.OnFileConflict, args...); err != nil {
			return err
		}
	}
	return nil
}

func (driver) MoveBlobs(ctx context.Context, q sqlstore.Querier, p metastore.Pack, blobs []metastore.BlobLocation, from []id.ID) (int64, error) {
	// The source packs go to a temporary table of the writer connection:
	// there may be more than a statement takes.
	if _, err := q.Exec(ctx, `CREATE TEMP TABLE IF NOT EXISTS move_from (id BLOB NOT NULL PRIMARY KEY)`); err != nil {
		return 0, err
	}
	if _, err := q.Exec(ctx, `DELETE FROM temp.move_from`); err != nil {
		return 0, err
	}
	for chunk := range slices.Chunk(from, idChunk) {
		args := make([]any, len(chunk))
		for i := range chunk {
			args[i] = chunk[i][:]
		}
		if _, err := q.Exec(ctx, `INSERT OR IGNORE INTO temp.move_from (id) VALUES `+values(len(chunk), 1), args...); err != nil {
			return 0, err
		}
	}
	st, err := prepare(ctx, q, `UPDATE blobs SET pack_id = ?1, "offset" = ?2, length = ?3, raw_length = ?4, codec = ?5, raw_offset = ?9
		WHERE project_id = ?6 AND id = ?7 AND type = ?8 AND pack_id <> ?1 AND (pack_id IN (SELECT id FROM temp.move_from)
			OR pack_id IN (SELECT c.id FROM packs c WHERE c.project_id = blobs.project_id AND c.condemned_at IS NOT NULL))`)
	if err != nil {
		return 0, err
	}
	defer st.Close()
	var moved int64
	for _, b := range blobs {
		res, err := st.ExecContext(ctx, p.ID[:], b.Offset, b.Length, b.RawLength, int16(b.Codec), p.ProjectID, b.ID[:], int16(b.Type), b.RawOffset)
		if err != nil {
			return 0, err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return 0, err
		}
		moved += n
	}
	return moved, nil
}

func (driver) MarkDeleting(ctx context.Context, q sqlstore.Querier, projectID string, ids []id.ID, at []time.Time) error {
	st, err := prepare(ctx, q, `UPDATE packs SET deleting = 1 WHERE project_id = ? AND id = ? AND deleting = 0 AND condemned_at = ?`)
	if err != nil {
		return err
	}
	defer st.Close()
	for i, x := range ids {
		if _, err := st.ExecContext(ctx, projectID, x[:], fmtTime(at[i])); err != nil {
			return err
		}
	}
	return nil
}

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

// timeText is fmtTime that formats a time once when it comes again, as the
// created and updated times of a commit's files do.
type timeText struct {
	t    time.Time
	text string
}

func (c *timeText) of(t time.Time) string {
	if c.text == "" || !t.Equal(c.t) {
		c.t, c.text = t, fmtTime(t)
	}
	return c.text
}

func parseTime(s string) (time.Time, error) {
	t, err := time.Parse(timeLayout, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("stored time %q: %w", s, err)
	}
	return t, nil
}
