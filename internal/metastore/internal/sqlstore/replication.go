package sqlstore

import (
	"context"
	"fmt"
	"time"

	"github.com/sandkeep/sandkeep/internal/metastore"
)

var _ metastore.ReplicationStore = (*Store)(nil)

// EnqueueReplication implements metastore.ReplicationStore.
func (s *Store) EnqueueReplication(ctx context.Context, ops []metastore.ReplicationOp) error {
	for _, o := range ops {
		if o.Op != metastore.ReplicatePut && o.Op != metastore.ReplicateDelete {
			return fmt.Errorf("%w: replication op %q", metastore.ErrInvalid, o.Op)
		}
		if o.Key == "" || o.Size < 0 {
			return fmt.Errorf("%w: replication of key %q, size %d", metastore.ErrInvalid, o.Key, o.Size)
		}
	}
	now := trunc(time.Now())
	return s.d.Write(ctx, func(q Querier) error {
		for _, o := range ops {
			if o.Op == metastore.ReplicateDelete {
				// A delete supersedes the queued copies of its key.
				if _, err := q.Exec(ctx, `DELETE FROM replication_queue WHERE key = $1 AND op = 'put'`, o.Key); err != nil {
					return err
				}
			}
			if _, err := q.Exec(ctx, `INSERT INTO replication_queue (op, key, size, enqueued_at, next_at) VALUES ($1, $2, $3, $4, $4)`,
				o.Op, o.Key, o.Size, now); err != nil {
				return fmt.Errorf("enqueue replication of %s: %w", o.Key, err)
			}
		}
		return nil
	})
}

const replicationCols = `seq, op, key, size, enqueued_at, attempts, next_at, last_error`

func scanReplicationOp(r Row) (metastore.ReplicationOp, error) {
	var o metastore.ReplicationOp
	err := r.Scan(&o.Seq, &o.Op, &o.Key, &o.Size, &o.EnqueuedAt, &o.Attempts, &o.NextAt, &o.LastError)
	return o, err
}

// DueReplication implements metastore.ReplicationStore.
func (s *Store) DueReplication(ctx context.Context, now time.Time, max int) ([]metastore.ReplicationOp, error) {
	if max <= 0 {
		max = 100
	}
	out, err := collect(ctx, s.d.Reader(), scanReplicationOp, `SELECT `+replicationCols+` FROM replication_queue
		WHERE next_at <= $1 ORDER BY seq LIMIT $2`, trunc(now), max)
	if err != nil {
		return nil, fmt.Errorf("due replication: %w", err)
	}
	return out, nil
}

// DoneReplication implements metastore.ReplicationStore.
func (s *Store) DoneReplication(ctx context.Context, seqs []int64) error {
	if len(seqs) == 0 {
		return nil
	}
	return s.d.Write(ctx, func(q Querier) error {
		return s.d.In(nil, seqs, func(in string, args []any) error {
			_, err := q.Exec(ctx, `DELETE FROM replication_queue WHERE seq `+in, args...)
			return err
		})
	})
}

// FailReplication implements metastore.ReplicationStore.
func (s *Store) FailReplication(ctx context.Context, seq int64, next time.Time, errText string) error {
	if len(errText) > 1000 {
		errText = errText[:1000]
	}
	_, err := s.d.Writer().Exec(ctx, `UPDATE replication_queue SET attempts = attempts + 1, next_at = $2, last_error = $3 WHERE seq = $1`,
		seq, trunc(next), errText)
	return err
}

// ReplicationLag implements metastore.ReplicationStore.
func (s *Store) ReplicationLag(ctx context.Context, prefix string) (metastore.ReplicationLag, error) {
	var l metastore.ReplicationLag
	// Keys of a prefix are a range: prefix <= key < prefix + U+10FFFF.
	hi := prefix + "\U0010FFFF"
	var oldest *time.Time
	err := s.d.Reader().QueryRow(ctx, `SELECT COUNT(*), COALESCE(SUM(size), 0), MIN(enqueued_at), COUNT(CASE WHEN attempts > 0 THEN 1 END)
		FROM replication_queue WHERE key >= $1 AND key < $2`, prefix, hi).Scan(&l.Objects, &l.Bytes, &oldest, &l.Failing)
	if err != nil {
		return l, fmt.Errorf("replication lag: %w", err)
	}
	if oldest != nil {
		l.Oldest = oldest.UTC()
	}
	if l.Failing > 0 {
		err = s.d.Reader().QueryRow(ctx, `SELECT last_error FROM replication_queue WHERE key >= $1 AND key < $2 AND attempts > 0
			ORDER BY next_at DESC LIMIT 1`, prefix, hi).Scan(&l.LastError)
		if err != nil && !noRows(err) {
			return l, err
		}
	}
	return l, nil
}
