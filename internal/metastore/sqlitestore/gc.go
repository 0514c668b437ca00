package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/metastore/internal/storeutil"
)

// Garbage collection, retention and project deletion. Every write goes
// through the single writer connection, so each of these transactions is
// atomic with respect to CommitVersion's check of its required blobs and to
// AddPack: the serialisation package gc's safety argument relies on.

// inList returns "(?,?,...)" for n values.
func inList(n int) string {
	return "(" + strings.TrimSuffix(strings.Repeat("?,", n), ",") + ")"
}

// liveBlobs returns which of ids the project indexes in a pack that is not
// condemned (packs being deleted no longer index any blob).
func liveBlobs(ctx context.Context, q querier, projectID string, ids []id.ID) (map[id.ID]struct{}, error) {
	have := make(map[id.ID]struct{}, len(ids))
	err := eachChunk(ids, func(chunk []id.ID) error {
		rows, err := q.QueryContext(ctx, `SELECT b.id FROM blobs b
			JOIN packs p ON p.project_id = b.project_id AND p.id = b.pack_id
			WHERE b.project_id = ? AND p.condemned_at IS NULL AND b.id IN `+inList(len(chunk)),
			idArgs(projectID, chunk)...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var b []byte
			if err := rows.Scan(&b); err != nil {
				return err
			}
			x, err := storeutil.ParseID(b, "blob id")
			if err != nil {
				return err
			}
			have[x] = struct{}{}
		}
		return rows.Err()
	})
	return have, err
}

// claimPack checks p.Epoch against the project's pack epoch and makes p's
// row live: it inserts it, or un-condemns it, or refuses a pack being
// deleted.
func claimPack(ctx context.Context, tx *sql.Tx, p metastore.Pack) error {
	var epoch int64
	err := tx.QueryRowContext(ctx, `SELECT pack_epoch FROM projects WHERE id = ?`, p.ProjectID).Scan(&epoch)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%w: project %q", metastore.ErrNotFound, p.ProjectID)
	}
	if err != nil {
		return err
	}
	if epoch > p.Epoch {
		return storeutil.StaleEpochErr(p, epoch)
	}
	var deleting bool
	var condemned sql.NullString
	err = tx.QueryRowContext(ctx, `SELECT deleting, condemned_at FROM packs WHERE project_id = ? AND id = ?`,
		p.ProjectID, p.ID[:]).Scan(&deleting, &condemned)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		_, err = tx.ExecContext(ctx, `INSERT INTO packs (project_id, id, type, size, created_at) VALUES (?, ?, ?, ?, ?)`,
			p.ProjectID, p.ID[:], p.Type, p.Size, fmtTime(p.CreatedAt))
		return err
	case err != nil:
		return err
	case deleting:
		return storeutil.DeletingErr(p)
	case condemned.Valid:
		_, err = tx.ExecContext(ctx, `UPDATE packs SET condemned_at = NULL WHERE project_id = ? AND id = ?`, p.ProjectID, p.ID[:])
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
	err := s.r.QueryRowContext(ctx, `SELECT pack_epoch FROM projects WHERE id = ?`, projectID).Scan(&epoch)
	if errors.Is(err, sql.ErrNoRows) {
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
	err = s.readTx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT project_id, id, type, size, created_at, condemned_at, deleting
			FROM packs WHERE project_id = ? AND id > ? ORDER BY id LIMIT ?`, projectID, after, limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var p metastore.Pack
			var pid []byte
			var created string
			var condemned sql.NullString
			if err := rows.Scan(&p.ProjectID, &pid, &p.Type, &p.Size, &created, &condemned, &p.Deleting); err != nil {
				return err
			}
			if p.ID, err = storeutil.ParseID(pid, "pack id"); err != nil {
				return err
			}
			if p.CreatedAt, err = parseTime(created); err != nil {
				return err
			}
			if condemned.Valid {
				if p.CondemnedAt, err = parseTime(condemned.String); err != nil {
					return err
				}
			}
			out = append(out, p)
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
		return nil, fmt.Errorf("list packs of %s: %w", projectID, err)
	}
	return out, nil
}

// updatePacks runs one UPDATE of packs per chunk of ids (set and cond are
// SQL fragments, setArgs their arguments) and returns the rows changed. An
// unknown project is ErrNotFound.
func (s *Store) updatePacks(ctx context.Context, projectID string, ids []id.ID, set string, setArgs []any, cond string) (int, error) {
	if !storeutil.Storable(projectID) {
		return 0, storeutil.NotFound("project %q", projectID)
	}
	ids = storeutil.SortIDs(ids)
	n := 0
	err := inTx(ctx, s.w, func(tx *sql.Tx) error {
		if err := needProject(ctx, tx, projectID); err != nil {
			return err
		}
		return eachChunk(ids, func(chunk []id.ID) error {
			args := append(slices.Clone(setArgs), idArgs(projectID, chunk)...)
			res, err := tx.ExecContext(ctx, `UPDATE packs SET `+set+` WHERE project_id = ? AND id IN `+inList(len(chunk))+` AND `+cond, args...)
			if err != nil {
				return err
			}
			k, err := res.RowsAffected()
			n += int(k)
			return err
		})
	})
	return n, err
}

// CondemnPacks marks live packs condemned at time at.
func (s *Store) CondemnPacks(ctx context.Context, projectID string, ids []id.ID, at time.Time) (int, error) {
	at, err := storeutil.Time(at)
	if err != nil {
		return 0, err
	}
	n, err := s.updatePacks(ctx, projectID, ids, `condemned_at = ?`, []any{fmtTime(at)}, `condemned_at IS NULL AND deleting = 0`)
	if err != nil {
		return 0, fmt.Errorf("condemn packs of %s: %w", projectID, err)
	}
	return n, nil
}

// UncondemnPacks makes condemned packs live again.
func (s *Store) UncondemnPacks(ctx context.Context, projectID string, ids []id.ID) (int, error) {
	n, err := s.updatePacks(ctx, projectID, ids, `condemned_at = NULL`, nil, `condemned_at IS NOT NULL AND deleting = 0`)
	if err != nil {
		return 0, fmt.Errorf("un-condemn packs of %s: %w", projectID, err)
	}
	return n, nil
}

// MoveBlobs records pack p and points at it the blobs of blobs indexed in a
// pack of from or in a condemned pack.
func (s *Store) MoveBlobs(ctx context.Context, p metastore.Pack, blobs []metastore.BlobLocation, from []id.ID) (int, error) {
	p, blobs, err := storeutil.CheckPack(p, blobs)
	if err != nil {
		return 0, err
	}
	from = storeutil.SortIDs(from)
	moved := 0
	err = inTx(ctx, s.w, func(tx *sql.Tx) error {
		if err := claimPack(ctx, tx, p); err != nil {
			return err
		}
		// The source packs go to a temporary table of the writer
		// connection: there may be more than a statement takes.
		if _, err := tx.ExecContext(ctx, `CREATE TEMP TABLE IF NOT EXISTS move_from (id BLOB NOT NULL PRIMARY KEY)`); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM temp.move_from`); err != nil {
			return err
		}
		for chunk := range slices.Chunk(from, idChunk) {
			args := make([]any, len(chunk))
			for i := range chunk {
				args[i] = chunk[i][:]
			}
			if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO temp.move_from (id) VALUES `+placeholders(len(chunk), 1), args...); err != nil {
				return err
			}
		}
		st, err := tx.PrepareContext(ctx, `UPDATE blobs SET pack_id = ?, "offset" = ?, length = ?, raw_length = ?, codec = ?
			WHERE project_id = ? AND id = ? AND type = ? AND pack_id <> ? AND (pack_id IN (SELECT id FROM temp.move_from)
				OR pack_id IN (SELECT c.id FROM packs c WHERE c.project_id = blobs.project_id AND c.condemned_at IS NOT NULL))`)
		if err != nil {
			return err
		}
		defer st.Close()
		for _, b := range blobs {
			res, err := st.ExecContext(ctx, p.ID[:], b.Offset, b.Length, b.RawLength, b.Codec, p.ProjectID, b.ID[:], b.Type, p.ID[:])
			if err != nil {
				return err
			}
			k, err := res.RowsAffected()
			if err != nil {
				return err
			}
			moved += int(k)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("move blobs to pack %s of %s: %w", p.ID.Short(), p.ProjectID, err)
	}
	return moved, nil
}

// DeletePacks makes the given packs that are still condemned at exactly
// their CondemnedAt deleting and drops their blobs from the index; it returns
// the given ids that are deleting afterwards.
func (s *Store) DeletePacks(ctx context.Context, projectID string, packs []metastore.Pack) ([]id.ID, error) {
	if !storeutil.Storable(projectID) {
		return nil, storeutil.NotFound("project %q", projectID)
	}
	stamps := make(map[id.ID]string, len(packs))
	ids := make([]id.ID, 0, len(packs))
	for _, p := range packs {
		if !p.CondemnedAt.IsZero() {
			at, err := storeutil.Time(p.CondemnedAt)
			if err != nil {
				return nil, err
			}
			stamps[p.ID] = fmtTime(at)
		}
		ids = append(ids, p.ID)
	}
	ids = storeutil.SortIDs(ids)
	var out []id.ID
	err := inTx(ctx, s.w, func(tx *sql.Tx) error {
		if err := needProject(ctx, tx, projectID); err != nil {
			return err
		}
		st, err := tx.PrepareContext(ctx, `UPDATE packs SET deleting = 1
			WHERE project_id = ? AND id = ? AND deleting = 0 AND condemned_at = ?`)
		if err != nil {
			return err
		}
		defer st.Close()
		for _, x := range ids {
			if at, ok := stamps[x]; ok {
				if _, err := st.ExecContext(ctx, projectID, x[:], at); err != nil {
					return err
				}
			}
		}
		return eachChunk(ids, func(chunk []id.ID) error {
			args := idArgs(projectID, chunk)
			if _, err := tx.ExecContext(ctx, `DELETE FROM blobs WHERE project_id = ?1 AND pack_id IN
				(SELECT id FROM packs WHERE project_id = ?1 AND deleting = 1 AND id IN `+inListFrom(2, len(chunk))+`)`, args...); err != nil {
				return err
			}
			rows, err := tx.QueryContext(ctx, `SELECT id FROM packs WHERE project_id = ? AND deleting = 1 AND id IN `+inList(len(chunk))+` ORDER BY id`, args...)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				var b []byte
				if err := rows.Scan(&b); err != nil {
					return err
				}
				x, err := storeutil.ParseID(b, "pack id")
				if err != nil {
					return err
				}
				out = append(out, x)
			}
			return rows.Err()
		})
	})
	if err != nil {
		return nil, fmt.Errorf("delete packs of %s: %w", projectID, err)
	}
	return out, nil
}

// inListFrom returns "(?2,?3,...)": n numbered parameters from first on.
func inListFrom(first, n int) string {
	var b strings.Builder
	b.WriteByte('(')
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "?%d", first+i)
	}
	b.WriteByte(')')
	return b.String()
}

// DropPacks forgets deleting packs and advances the pack epoch.
func (s *Store) DropPacks(ctx context.Context, projectID string, ids []id.ID) error {
	if !storeutil.Storable(projectID) {
		return storeutil.NotFound("project %q", projectID)
	}
	ids = storeutil.SortIDs(ids)
	err := inTx(ctx, s.w, func(tx *sql.Tx) error {
		if err := needProject(ctx, tx, projectID); err != nil {
			return err
		}
		dropped := int64(0)
		err := eachChunk(ids, func(chunk []id.ID) error {
			res, err := tx.ExecContext(ctx, `DELETE FROM packs WHERE project_id = ? AND deleting = 1 AND id IN `+inList(len(chunk)), idArgs(projectID, chunk)...)
			if err != nil {
				return err
			}
			n, err := res.RowsAffected()
			dropped += n
			return err
		})
		if err != nil || dropped == 0 {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE projects SET pack_epoch = pack_epoch + 1 WHERE id = ?`, projectID)
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
	err := s.readTx(ctx, func(tx *sql.Tx) error {
		var last int
		var within int64
		err := tx.QueryRowContext(ctx, `SELECT keep_last, keep_within_us FROM retention WHERE project_id = ?`, projectID).Scan(&last, &within)
		if errors.Is(err, sql.ErrNoRows) {
			return needProject(ctx, tx, projectID)
		}
		if err != nil {
			return err
		}
		r = metastore.Retention{KeepLast: last, KeepWithin: time.Duration(within) * time.Microsecond}
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
	_, err := s.w.ExecContext(ctx, `INSERT INTO retention (project_id, keep_last, keep_within_us, updated_at) VALUES (?, ?, ?, ?)
		ON CONFLICT (project_id) DO UPDATE SET keep_last = excluded.keep_last, keep_within_us = excluded.keep_within_us,
			updated_at = excluded.updated_at`,
		projectID, r.KeepLast, r.KeepWithin.Microseconds(), fmtTime(storeutil.Now()))
	if isForeignKey(err) {
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
	res, err := s.w.ExecContext(ctx, `UPDATE versions SET pinned = ? WHERE project_id = ? AND number = ?`, pinned, projectID, number)
	if err != nil {
		return fmt.Errorf("pin version %d of %s: %w", number, projectID, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("pin version %d of %s: %w", number, projectID, err)
	} else if n == 0 {
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
	err := inTx(ctx, s.w, func(tx *sql.Tx) error {
		if err := needProject(ctx, tx, projectID); err != nil {
			return err
		}
		for chunk := range slices.Chunk(numbers, idChunk) {
			args := make([]any, 0, len(chunk)+2)
			args = append(args, projectID, projectID)
			for _, n := range chunk {
				args = append(args, n)
			}
			rows, err := tx.QueryContext(ctx, `DELETE FROM versions WHERE project_id = ? AND pinned = 0
				AND number <> (SELECT head FROM projects WHERE id = ?) AND number IN `+inList(len(chunk))+` RETURNING number`, args...)
			if err != nil {
				return err
			}
			for rows.Next() {
				var n int64
				if err := rows.Scan(&n); err != nil {
					rows.Close()
					return err
				}
				out = append(out, n)
			}
			if err := rows.Close(); err != nil {
				return err
			}
			if err := rows.Err(); err != nil {
				return err
			}
		}
		return nil
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
	n := 0
	err := inTx(ctx, s.w, func(tx *sql.Tx) error {
		if err := needProject(ctx, tx, projectID); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `UPDATE tokens SET revoked = 1 WHERE project_id = ? AND revoked = 0`, projectID)
		if err != nil {
			return err
		}
		k, err := res.RowsAffected()
		n = int(k)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("revoke tokens of %s: %w", projectID, err)
	}
	return n, nil
}

// DeleteProject deletes the project and, by cascade, all its rows.
func (s *Store) DeleteProject(ctx context.Context, projectID string) error {
	if !storeutil.Storable(projectID) {
		return storeutil.NotFound("project %q", projectID)
	}
	res, err := s.w.ExecContext(ctx, `DELETE FROM projects WHERE id = ?`, projectID)
	if err != nil {
		return fmt.Errorf("delete project %s: %w", projectID, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("delete project %s: %w", projectID, err)
	} else if n == 0 {
		return fmt.Errorf("%w: project %q", metastore.ErrNotFound, projectID)
	}
	return nil
}
