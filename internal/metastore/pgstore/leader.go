package pgstore

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sandkeep/sandkeep/internal/metastore"
)

// lifecycleLock is the pg_try_advisory_lock key of the lifecycle manager's
// leadership ("sk-lifec" in ASCII). Advisory locks are per database.
const lifecycleLock int64 = 0x736b2d6c69666563

// LifecycleLeader returns a metastore.Leader on a session advisory lock: the
// replica whose dedicated connection holds pg_try_advisory_lock leads; if
// that connection breaks, PostgreSQL drops the lock and another replica
// takes over on its next TryLead.
func (s *Store) LifecycleLeader() metastore.Leader {
	return &pgLeader{cfg: s.pool.Config().ConnConfig}
}

type pgLeader struct {
	cfg *pgx.ConnConfig

	mu   sync.Mutex
	conn *pgx.Conn
}

// Leading reports whether this leader held the lock at its last TryLead.
func (l *pgLeader) Leading() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.conn != nil
}

func (l *pgLeader) TryLead(ctx context.Context) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn != nil {
		// Still leading while the session lives.
		if err := l.conn.Ping(ctx); err == nil {
			return true, nil
		}
		_ = l.conn.Close(context.Background())
		l.conn = nil
	}
	c, err := pgx.ConnectConfig(ctx, l.cfg)
	if err != nil {
		return false, fmt.Errorf("lifecycle leader: connect: %w", err)
	}
	var ok bool
	if err := c.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, lifecycleLock).Scan(&ok); err != nil {
		_ = c.Close(context.Background())
		return false, fmt.Errorf("lifecycle leader: %w", err)
	}
	if !ok {
		_ = c.Close(context.Background())
		return false, nil
	}
	l.conn = c
	return true, nil
}

// Resign gives up the leadership. The lock is released before Resign
// returns (closing the session alone releases it only once the server
// notices), so another replica's next TryLead can take it.
func (l *pgLeader) Resign() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, _ = l.conn.Exec(ctx, `SELECT pg_advisory_unlock($1)`, lifecycleLock)
		_ = l.conn.Close(ctx) // ends the session: the lock goes if the unlock failed
		l.conn = nil
	}
}
