package sqlitestore

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/metastore/internal/sqlstore"
)

func TestBucketAndPadded(t *testing.T) {
	for _, tt := range []struct{ n, bucket, padded int }{
		{1, 1, 1}, {2, 2, 2}, {3, 2, 4}, {5, 4, 8}, {500, 256, 512},
		{512, 512, 512}, {513, 512, 1024}, {1000, 512, 1024}, {1024, 512, 1024},
	} {
		if got := bucket(tt.n, rowChunk); got != tt.bucket {
			t.Errorf("bucket(%d, %d) = %d, want %d", tt.n, rowChunk, got, tt.bucket)
		}
		if got := padded(tt.n); got != tt.padded {
			t.Errorf("padded(%d) = %d, want %d", tt.n, got, tt.padded)
		}
	}
}

// TestPieces checks that bulk rows are cut into pieces of a few sizes that
// together hold every row once, in order.
func TestPieces(t *testing.T) {
	for _, n := range []int{0, 1, 7, 512, 700, 1500} {
		rows := make([]int, n)
		for i := range rows {
			rows[i] = i
		}
		var got []int
		for p := range pieces(rows) {
			if len(p) > rowChunk || len(p)&(len(p)-1) != 0 {
				t.Errorf("%d rows: a piece of %d", n, len(p))
			}
			got = append(got, p...)
		}
		if !slices.Equal(got, rows) {
			t.Errorf("%d rows: pieces hold %v", n, got)
		}
	}
}

// TestStatementsPreparedOnceAndReused runs one statement in three write
// transactions and on the reader: the cache prepares it after its second
// run and the third runs it prepared, with the same results.
func TestStatementsPreparedOnceAndReused(t *testing.T) {
	ctx := context.Background()
	for _, path := range []string{filepath.Join(t.TempDir(), "m.db"), ":memory:"} {
		t.Run(filepath.Base(path), func(t *testing.T) {
			s, err := Open(ctx, path)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			const q = `INSERT INTO projects (id, name, created_at) VALUES ($1, $2, $3)`
			cached := func(c *stmtCache) bool {
				c.mu.Lock()
				defer c.mu.Unlock()
				_, ok := c.stmts[q]
				return ok
			}
			for i := range 3 {
				if i == 2 && !cached(s.d.wc) {
					t.Fatalf("not prepared after two runs")
				}
				err := s.d.Write(ctx, func(tx sqlstore.Querier) error {
					_, err := tx.Exec(ctx, q, fmt.Sprintf("p%d", i), fmt.Sprintf("n%d", i), time.Now())
					return err
				})
				if err != nil {
					t.Fatalf("run %d: %v", i, err)
				}
			}
			// The prepared statement in a transaction that fails keeps
			// its error and its rollback.
			err = s.d.Write(ctx, func(tx sqlstore.Querier) error {
				_, err := tx.Exec(ctx, q, "p0", "again", time.Now())
				return err
			})
			if err == nil || !s.d.IsUnique(err) {
				t.Fatalf("duplicate insert: %v, want a unique violation", err)
			}
			ps, err := s.ListProjects(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(ps) != 3 {
				t.Fatalf("%d projects, want 3", len(ps))
			}
		})
	}
}

// TestPaddedListsFindEveryID looks up lists of sizes that are padded (and
// one longer than a statement takes) and checks each id is found once,
// and that an id not stored is not.
func TestPaddedListsFindEveryID(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	p, err := s.CreateProject(ctx, "p")
	if err != nil {
		t.Fatal(err)
	}
	var blobs []metastore.BlobLocation
	for i := range idChunk + 3 {
		blobs = append(blobs, metastore.BlobLocation{
			ID: id.Sum(fmt.Appendf(nil, "blob %d", i)), Type: metastore.BlobData,
			Offset: int64(i) * 10, Length: 10, RawLength: 10,
		})
	}
	pk := metastore.Pack{ID: id.Sum([]byte("pack")), ProjectID: p.ID, Type: metastore.BlobData, Size: int64(len(blobs)) * 10}
	if err := s.AddPack(ctx, pk, blobs); err != nil {
		t.Fatal(err)
	}
	absent := id.Sum([]byte("absent"))
	for _, n := range []int{1, 3, 5, 100, idChunk, idChunk + 3} {
		ids := []id.ID{absent}
		for _, b := range blobs[:n] {
			ids = append(ids, b.ID)
		}
		got, err := s.LocateBlobs(ctx, p.ID, ids)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != n {
			t.Errorf("%d ids: located %d", n, len(got))
		}
		if _, ok := got[absent]; ok {
			t.Errorf("%d ids: an absent id located", n)
		}
		missing, err := s.MissingBlobs(ctx, p.ID, ids)
		if err != nil {
			t.Fatal(err)
		}
		if len(missing) != 1 || missing[0] != absent {
			t.Errorf("%d ids: missing %v, want only the absent one", n, missing)
		}
	}
}

// TestTextRepeatedInOneTransactionPreparedThere runs one text the cache
// does not hold four times in one transaction: the second run prepares it
// on the transaction and the later runs reuse that statement, every run
// writes its row, and the transaction's end closes the statement. In a
// later transaction the cache's statement is bound once; a failure in it
// still rolls the whole transaction back.
func TestTextRepeatedInOneTransactionPreparedThere(t *testing.T) {
	ctx := context.Background()
	for _, path := range []string{filepath.Join(t.TempDir(), "m.db"), ":memory:"} {
		t.Run(filepath.Base(path), func(t *testing.T) {
			s, err := Open(ctx, path)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			const q = `INSERT INTO projects (id, name, created_at) VALUES ($1, $2, $3)`
			var kept *sql.Stmt
			err = s.d.Write(ctx, func(tx sqlstore.Querier) error {
				d := tx.(db)
				for i := range 4 {
					if _, err := tx.Exec(ctx, q, fmt.Sprintf("p%d", i), fmt.Sprintf("n%d", i), time.Now()); err != nil {
						return err
					}
					st := d.local.stmts[q]
					switch {
					case i == 0 && st != nil:
						t.Errorf("prepared after one run")
					case i >= 1 && st == nil:
						t.Errorf("run %d: not prepared on the transaction", i)
					case i >= 2 && st != kept:
						t.Errorf("run %d: prepared again", i)
					}
					kept = st
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := kept.ExecContext(ctx, "late", "late", fmtTime(time.Now())); err == nil {
				t.Error("the transaction's statement outlived it")
			}
			// The cache holds q now: a later transaction binds the
			// cache's statement at its first run, once.
			err = s.d.Write(ctx, func(tx sqlstore.Querier) error {
				d := tx.(db)
				var bound *sql.Stmt
				for i, p := range []string{"q0", "q1", "p0"} { // p0 exists: the third run fails
					if _, err := tx.Exec(ctx, q, p, p, time.Now()); err != nil {
						return err
					}
					if st := d.local.stmts[q]; st == nil || (i > 0 && st != bound) {
						t.Errorf("run %d: the cache's statement bound %p, before %p", i, st, bound)
					} else {
						bound = st
					}
				}
				return nil
			})
			if err == nil || !s.d.IsUnique(err) {
				t.Fatalf("duplicate insert: %v, want a unique violation", err)
			}
			ps, err := s.ListProjects(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(ps) != 4 {
				t.Fatalf("%d projects, want the first transaction's 4", len(ps))
			}
		})
	}
}
