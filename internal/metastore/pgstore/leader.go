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

// The lifecycle lock's key as pg_locks shows a bigint advisory key: the
// high 32 bits in classid, the low 32 in objid (objsubid 1).
const (
	lifecycleLockClassID = int64(uint64(lifecycleLock) >> 32)
	lifecycleLockObjID   = int64(uint64(lifecycleLock) & 0xffffffff)
)

// lifecycleLockHeld selects, in pg_locks (with the two keys above as $1 and
// $2), the granted lifecycle lock of this database: pg_locks shows every
// database's, and another deployment on the same server holds the same key
// in its own.
const lifecycleLockHeld = `locktype = 'advisory' AND granted
	AND classid::bigint = $1 AND objid::bigint = $2 AND objsubid = 1
	AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`

// LifecycleLeader returns a metastore.Leader on a session advisory lock: the
// replica whose dedicated connection holds pg_try_advisory_lock leads; if
// that connection breaks, PostgreSQL drops the lock and another replica
// takes over on its next TryLead.
func (s *Store) LifecycleLeader() metastore.Leader {
	return &pgLeader{cfg: s.pool.Config().ConnConfig, holder: s.LeaderToken}
}

type pgLeader struct {
	cfg    *pgx.ConnConfig
	holder func(context.Context) (int64, error) // Store.LeaderToken: asked through another connection

	mu   sync.Mutex
	conn *pgx.Conn
	pid  uint32 // the leading connection's backend pid
}

// Fence implements metastore.Fencer: this replica still holds the lock,
// as PostgreSQL sees it through another connection. A leader whose
// session the server ended (terminated, timed out, cut off) is deposed
// even if its process has not noticed: Fence then fails with
// metastore.ErrDeposed and drops the dead session.
func (l *pgLeader) Fence(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn == nil {
		return metastore.ErrDeposed
	}
	pid, err := l.holder(ctx)
	if err != nil {
		return fmt.Errorf("lifecycle leader: fence: %w", err)
	}
	if pid != int64(l.pid) {
		_ = l.conn.Close(context.Background())
		l.conn = nil
		return metastore.ErrDeposed
	}
	return nil
}

// Token is the backend pid of the session holding the lock, while leading
// (0 otherwise): what metastore.Replica.LeaderToken records.
func (l *pgLeader) Token() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn == nil {
		return 0
	}
	return int64(l.pid)
}

var _ metastore.LeaderTokener = (*Store)(nil)

// LeaderToken implements metastore.LeaderTokener: the backend pid holding
// the lifecycle leader's lock in this database, 0 if none does.
func (s *Store) LeaderToken(ctx context.Context) (int64, error) {
	var pid int64
	err := s.pool.QueryRow(ctx, `SELECT COALESCE(max(pid), 0) FROM pg_locks WHERE `+lifecycleLockHeld,
		lifecycleLockClassID, lifecycleLockObjID).Scan(&pid)
	if err != nil {
		return 0, fmt.Errorf("leader token: %w", err)
	}
	return pid, nil
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
	if err := c.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&l.pid); err != nil {
		_ = c.Close(context.Background())
		return false, fmt.Errorf("lifecycle leader: %w", err)
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
