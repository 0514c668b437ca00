package pgstore

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/metastore/internal/storeutil"
)

// Garbage collection, retention and project deletion.
//
// Fencing: every garbage collection transaction that changes packs or the
// blob index takes the project's advisory lock exclusively
// (pg_advisory_xact_lock(gcLockClass, key)); AddPack, and CommitVersion when
// it checks required blobs, take it shared. So an upload or a commit sees a
// pack either before or after a GC change, never in between, and a commit's
// check of its required blobs holds until it commits: the serialisation
// package gc's safety argument relies on. Commits and uploads do not block
// each other; a GC transaction is short (no blob store call inside one).

// gcLockClass is the first key of the per-project advisory locks ("skgc").
const gcLockClass int32 = 0x736b6763

// projectKey is the second key: a hash of the project id. Two projects
// sharing a key only wait for each other needlessly.
func projectKey(projectID string) int32 {
	h := fnv.New32a()
	_, _ = h.Write([]byte(projectID))
	return int32(h.Sum32())
}

// shareProject takes the project's advisory lock in shared mode until the
// transaction ends.
func shareProject(ctx context.Context, tx pgx.Tx, projectID string) error {
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock_shared($1::int4, $2::int4)`, gcLockClass, projectKey(projectID)); err != nil {
		return fmt.Errorf("lock project %s (shared): %w", projectID, err)
	}
	return nil
}

// lockProject takes the project's advisory lock exclusively until the
// transaction ends.
func lockProject(ctx context.Context, tx pgx.Tx, projectID string) error {
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1::int4, $2::int4)`, gcLockClass, projectKey(projectID)); err != nil {
		return fmt.Errorf("lock project %s: %w", projectID, err)
	}
	return nil
}

// gcTx runs fn in a transaction holding the project's lock exclusively,
// after checking that the project exists.
func (s *Store) gcTx(ctx context.Context, projectID string, fn func(pgx.Tx) error) error {
	if !storeutil.Storable(projectID) {
		return storeutil.NotFound("project %q", projectID)
	}
	return s.inTx(ctx, func(tx pgx.Tx) error {
		if err := lockProject(ctx, tx, projectID); err != nil {
			return err
		}
		if err := needProject(ctx, tx, projectID); err != nil {
			return err
		}
		return fn(tx)
	})
}

// liveBlobs returns which of ids the project indexes in a pack that is not
// condemned (packs being deleted no longer index any blob).
func liveBlobs(ctx context.Context, q querier, projectID string, ids []id.ID) (map[id.ID]struct{}, error) {
	have := make(map[id.ID]struct{}, len(ids))
	if len(ids) == 0 {
		return have, nil
	}
	rows, err := q.Query(ctx, `SELECT b.id FROM blobs b
		JOIN packs p ON p.project_id = b.project_id AND p.id = b.pack_id
		WHERE b.project_id = $1 AND b.id = ANY($2) AND p.condemned_at IS NULL`, projectID, storeutil.IDBytes(ids))
	if err != nil {
		return nil, err
	}
	var b []byte
	_, err = pgx.ForEachRow(rows, []any{&b}, func() error {
		x, err := storeutil.ParseID(b, "blob id")
		have[x] = struct{}{}
		return err
	})
	return have, err
}

// claimPack checks p.Epoch against the project's pack epoch and makes p's
// row live: it inserts it, or un-condemns it, or refuses a pack being
// deleted. The caller holds the project's lock (shared or exclusive).
func claimPack(ctx context.Context, tx pgx.Tx, p metastore.Pack) error {
	var epoch int64
	err := tx.QueryRow(ctx, `SELECT pack_epoch FROM projects WHERE id = $1`, p.ProjectID).Scan(&epoch)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%w: project %q", metastore.ErrNotFound, p.ProjectID)
	}
	if err != nil {
		return err
	}
	if epoch > p.Epoch {
		return storeutil.StaleEpochErr(p, epoch)
	}
	var deleting bool
	var condemned *time.Time
	err = tx.QueryRow(ctx, `SELECT deleting, condemned_at FROM packs WHERE project_id = $1 AND id = $2 FOR UPDATE`,
		p.ProjectID, p.ID.Bytes()).Scan(&deleting, &condemned)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		_, err = tx.Exec(ctx, `INSERT INTO packs (project_id, id, type, size, created_at) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (project_id, id) DO NOTHING`, p.ProjectID, p.ID.Bytes(), int16(p.Type), p.Size, p.CreatedAt)
		if hasCode(err, codeForeignKeyViolation) {
			return fmt.Errorf("%w: project %q", metastore.ErrNotFound, p.ProjectID)
		}
		return err
	case err != nil:
		return err
	case deleting:
		return storeutil.DeletingErr(p)
	case condemned != nil:
		_, err = tx.Exec(ctx, `UPDATE packs SET condemned_at = NULL WHERE project_id = $1 AND id = $2`, p.ProjectID, p.ID.Bytes())
		return err
	}
	return nil
}

// PackEpoch returns the project's pack epoch.
func (s *Store) PackEpoch(ctx context.Context, projectID string) (int64, error) {
	if !storeutil.Storable(projectID) {
		return 0, storeutil.NotFound("project %q", projectID)
	}
	var epoch int64
	err := s.withConn(ctx, func(c *pgx.Conn) error {
		return c.QueryRow(ctx, `SELECT pack_epoch FROM projects WHERE id = $1`, projectID).Scan(&epoch)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("%w: project %q", metastore.ErrNotFound, projectID)
	}
	if err != nil {
		return 0, fmt.Errorf("pack epoch of %s: %w", projectID, err)
	}
	return epoch, nil
}

// ListPacks lists the project's packs in id order; opts.After is a hex id.
func (s *Store) ListPacks(ctx context.Context, projectID string, opts metastore.ListOptions) ([]metastore.Pack, error) {
	limit, err := storeutil.Limit(opts)
	if err != nil {
		return nil, err
	}
	after, err := storeutil.PacksAfter(opts)
	if err != nil {
		return nil, err
	}
	if !storeutil.Storable(projectID) {
		return nil, storeutil.NotFound("project %q", projectID)
	}
	var out []metastore.Pack
	err = s.withConn(ctx, func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, `SELECT project_id, id, type, size, created_at, condemned_at, deleting
			FROM packs WHERE project_id = $1 AND id > $2 ORDER BY id LIMIT $3`, projectID, after, limit)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (metastore.Pack, error) {
			var p metastore.Pack
			var pid []byte
			var typ int16
			var condemned *time.Time
			if err := r.Scan(&p.ProjectID, &pid, &typ, &p.Size, &p.CreatedAt, &condemned, &p.Deleting); err != nil {
				return p, err
			}
			p.Type, p.CreatedAt = metastore.BlobType(typ), p.CreatedAt.UTC()
			if condemned != nil {
				p.CondemnedAt = condemned.UTC()
			}
			var err error
			p.ID, err = storeutil.ParseID(pid, "pack id")
			return p, err
		})
		if err != nil || len(out) > 0 {
			return err
		}
		return needProject(ctx, c, projectID)
	})
	if err != nil {
		return nil, fmt.Errorf("list packs of %s: %w", projectID, err)
	}
	return out, nil
}

// CondemnPacks marks live packs condemned at time at.
func (s *Store) CondemnPacks(ctx context.Context, projectID string, ids []id.ID, at time.Time) (int, error) {
	at, err := storeutil.Time(at)
	if err != nil {
		return 0, err
	}
	var n int64
	err = s.gcTx(ctx, projectID, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE packs SET condemned_at = $3 WHERE project_id = $1 AND id = ANY($2)
			AND condemned_at IS NULL AND NOT deleting`, projectID, storeutil.IDBytes(storeutil.SortIDs(ids)), at)
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("condemn packs of %s: %w", projectID, err)
	}
	return int(n), nil
}

// UncondemnPacks makes condemned packs live again.
func (s *Store) UncondemnPacks(ctx context.Context, projectID string, ids []id.ID) (int, error) {
	var n int64
	err := s.gcTx(ctx, projectID, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE packs SET condemned_at = NULL WHERE project_id = $1 AND id = ANY($2)
			AND condemned_at IS NOT NULL AND NOT deleting`, projectID, storeutil.IDBytes(storeutil.SortIDs(ids)))
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("un-condemn packs of %s: %w", projectID, err)
	}
	return int(n), nil
}

// MoveBlobs records pack p and points at it the blobs of blobs indexed in a
// pack of from or in a condemned pack.
func (s *Store) MoveBlobs(ctx context.Context, p metastore.Pack, blobs []metastore.BlobLocation, from []id.ID) (int, error) {
	p, blobs, err := storeutil.CheckPack(p, blobs)
	if err != nil {
		return 0, err
	}
	n := len(blobs)
	ids, types, offsets, lengths, raws, codecs := make([][]byte, n), make([]int16, n), make([]int64, n), make([]int64, n), make([]int64, n), make([]int16, n)
	for i, b := range blobs {
		ids[i], types[i], offsets[i], lengths[i], raws[i], codecs[i] = b.ID.Bytes(), int16(b.Type), b.Offset, b.Length, b.RawLength, int16(b.Codec)
	}
	var moved int64
	err = s.gcTx(ctx, p.ProjectID, func(tx pgx.Tx) error {
		if err := claimPack(ctx, tx, p); err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		tag, err := tx.Exec(ctx, `UPDATE blobs b SET pack_id = $2, "offset" = u.off, length = u.len, raw_length = u.raw, codec = u.codec
			FROM unnest($3::bytea[], $4::smallint[], $5::bigint[], $6::bigint[], $7::bigint[], $8::smallint[])
				AS u(id, type, off, len, raw, codec)
			WHERE b.project_id = $1 AND b.id = u.id AND b.type = u.type AND b.pack_id <> $2
				AND (b.pack_id = ANY($9) OR b.pack_id IN
					(SELECT c.id FROM packs c WHERE c.project_id = $1 AND c.condemned_at IS NOT NULL))`,
			p.ProjectID, p.ID.Bytes(), ids, types, offsets, lengths, raws, codecs, storeutil.IDBytes(storeutil.SortIDs(from)))
		moved = tag.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("move blobs to pack %s of %s: %w", p.ID.Short(), p.ProjectID, err)
	}
	return int(moved), nil
}

// DeletePacks makes the given packs that are still condemned at exactly
// their CondemnedAt deleting and drops their blobs from the index; it returns
// the given ids that are deleting afterwards.
func (s *Store) DeletePacks(ctx context.Context, projectID string, packs []metastore.Pack) ([]id.ID, error) {
	var ids, stampIDs []id.ID
	var stamps []time.Time
	for _, p := range packs {
		ids = append(ids, p.ID)
		if !p.CondemnedAt.IsZero() {
			at, err := storeutil.Time(p.CondemnedAt)
			if err != nil {
				return nil, err
			}
			stampIDs, stamps = append(stampIDs, p.ID), append(stamps, at)
		}
	}
	idb := storeutil.IDBytes(storeutil.SortIDs(ids))
	var out []id.ID
	err := s.gcTx(ctx, projectID, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE packs p SET deleting = true
			FROM unnest($2::bytea[], $3::timestamptz[]) AS u(id, at)
			WHERE p.project_id = $1 AND p.id = u.id AND NOT p.deleting AND p.condemned_at = u.at`,
			projectID, storeutil.IDBytes(stampIDs), stamps); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM blobs WHERE project_id = $1 AND pack_id IN
			(SELECT id FROM packs WHERE project_id = $1 AND deleting AND id = ANY($2))`, projectID, idb); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT id FROM packs WHERE project_id = $1 AND deleting AND id = ANY($2) ORDER BY id`, projectID, idb)
		if err != nil {
			return err
		}
		var b []byte
		_, err = pgx.ForEachRow(rows, []any{&b}, func() error {
			x, err := storeutil.ParseID(b, "pack id")
			out = append(out, x)
			return err
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("delete packs of %s: %w", projectID, err)
	}
	return out, nil
}

// DropPacks forgets deleting packs and advances the pack epoch.
func (s *Store) DropPacks(ctx context.Context, projectID string, ids []id.ID) error {
	err := s.gcTx(ctx, projectID, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM packs WHERE project_id = $1 AND deleting AND id = ANY($2)`,
			projectID, storeutil.IDBytes(storeutil.SortIDs(ids)))
		if err != nil || tag.RowsAffected() == 0 {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE projects SET pack_epoch = pack_epoch + 1 WHERE id = $1`, projectID)
		return err
	})
	if err != nil {
		return fmt.Errorf("drop packs of %s: %w", projectID, err)
	}
	return nil
}

// ---- retention and pins ----

// GetRetention returns the project's retention or the default.
func (s *Store) GetRetention(ctx context.Context, projectID string) (metastore.Retention, error) {
	if !storeutil.Storable(projectID) {
		return metastore.Retention{}, storeutil.NotFound("project %q", projectID)
	}
	r := metastore.DefaultRetention()
	err := s.withConn(ctx, func(c *pgx.Conn) error {
		var last int32
		var within int64
		err := c.QueryRow(ctx, `SELECT keep_last, keep_within_us FROM retention WHERE project_id = $1`, projectID).Scan(&last, &within)
		if errors.Is(err, pgx.ErrNoRows) {
			return needProject(ctx, c, projectID)
		}
		if err != nil {
			return err
		}
		r = metastore.Retention{KeepLast: int(last), KeepWithin: time.Duration(within) * time.Microsecond}
		return nil
	})
	if err != nil {
		return metastore.Retention{}, fmt.Errorf("retention of %s: %w", projectID, err)
	}
	return r, nil
}

// SetRetention stores the project's retention.
func (s *Store) SetRetention(ctx context.Context, projectID string, r metastore.Retention) error {
	if err := storeutil.CheckRetention(r); err != nil {
		return err
	}
	if !storeutil.Storable(projectID) {
		return storeutil.NotFound("project %q", projectID)
	}
	err := s.withConn(ctx, func(c *pgx.Conn) error {
		_, err := c.Exec(ctx, `INSERT INTO retention (project_id, keep_last, keep_within_us, updated_at) VALUES ($1, $2, $3, $4)
			ON CONFLICT (project_id) DO UPDATE SET keep_last = excluded.keep_last, keep_within_us = excluded.keep_within_us,
				updated_at = excluded.updated_at`,
			projectID, int32(r.KeepLast), r.KeepWithin.Microseconds(), storeutil.Now())
		return err
	})
	if hasCode(err, codeForeignKeyViolation) {
		return fmt.Errorf("%w: project %q", metastore.ErrNotFound, projectID)
	}
	if err != nil {
		return fmt.Errorf("set retention of %s: %w", projectID, err)
	}
	return nil
}

// SetPinned pins or unpins a version.
func (s *Store) SetPinned(ctx context.Context, projectID string, number int64, pinned bool) error {
	if !storeutil.Storable(projectID) {
		return storeutil.NotFound("project %q", projectID)
	}
	var n int64
	err := s.withConn(ctx, func(c *pgx.Conn) error {
		tag, err := c.Exec(ctx, `UPDATE versions SET pinned = $3 WHERE project_id = $1 AND number = $2`, projectID, number, pinned)
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		return fmt.Errorf("pin version %d of %s: %w", number, projectID, err)
	}
	if n == 0 {
		return fmt.Errorf("%w: version %d of project %q", metastore.ErrNotFound, number, projectID)
	}
	return nil
}

// DeleteVersions deletes the listed versions but the head and pinned ones.
func (s *Store) DeleteVersions(ctx context.Context, projectID string, numbers []int64) ([]int64, error) {
	if !storeutil.Storable(projectID) {
		return nil, storeutil.NotFound("project %q", projectID)
	}
	numbers = storeutil.SortNumbers(numbers)
	var out []int64
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if err := needProject(ctx, tx, projectID); err != nil {
			return err
		}
		if len(numbers) == 0 {
			return nil
		}
		rows, err := tx.Query(ctx, `DELETE FROM versions WHERE project_id = $1 AND NOT pinned
			AND number <> (SELECT head FROM projects WHERE id = $1) AND number = ANY($2) RETURNING number`, projectID, numbers)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, pgx.RowTo[int64])
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("delete versions of %s: %w", projectID, err)
	}
	slices.Sort(out)
	return out, nil
}

// ---- project deletion ----

// RevokeProjectTokens revokes every token of the project.
func (s *Store) RevokeProjectTokens(ctx context.Context, projectID string) (int, error) {
	if !storeutil.Storable(projectID) {
		return 0, storeutil.NotFound("project %q", projectID)
	}
	var n int64
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if err := needProject(ctx, tx, projectID); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `UPDATE tokens SET revoked = true WHERE project_id = $1 AND NOT revoked`, projectID)
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("revoke tokens of %s: %w", projectID, err)
	}
	return int(n), nil
}

// DeleteProject deletes the project and, by cascade, all its rows. It takes
// the project's lock so that no upload or commit is half way through.
func (s *Store) DeleteProject(ctx context.Context, projectID string) error {
	var n int64
	err := s.gcTx(ctx, projectID, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM projects WHERE id = $1`, projectID)
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		return fmt.Errorf("delete project %s: %w", projectID, err)
	}
	if n == 0 {
		return fmt.Errorf("%w: project %q", metastore.ErrNotFound, projectID)
	}
	return nil
}
