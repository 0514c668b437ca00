package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"math/bits"
	"sync"
)

// maxCached bounds the statements a stmtCache keeps. The store's statement
// texts are a fixed set, lists included (In and the bulk inserts use a few
// sizes only: see bucket), well under it.
const maxCached = 512

// stmtCache keeps the prepared statements of one *sql.DB by their text, so
// that a statement run again is not parsed again: SQLite's parser was a
// tenth of the coordinator's CPU in an initial sync, most of it spent on
// the long statements of id lists and multi-row inserts.
//
// A statement is prepared on the database, not in a transaction, so that it
// outlives the transaction; but the writer has one connection, which a
// transaction holds. So a text seen in a transaction is only noted there
// (and run unprepared); after the transaction, prepareNoted prepares the
// texts noted twice. Inside a later transaction, Tx.StmtContext reuses the
// statement as prepared on the transaction's connection (database/sql
// prepares it there once, and keeps it).
type stmtCache struct {
	db *sql.DB

	mu     sync.Mutex
	stmts  map[string]*sql.Stmt
	seen   map[string]int // texts not prepared yet: times run
	noted  []string       // texts run twice, to prepare
	closed bool
}

func newStmtCache(db *sql.DB) *stmtCache {
	return &stmtCache{db: db, stmts: make(map[string]*sql.Stmt), seen: make(map[string]int)}
}

// get returns the prepared statement of query, or nil after noting that
// query ran once more.
func (c *stmtCache) get(query string) *sql.Stmt {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st, ok := c.stmts[query]; ok {
		return st
	}
	if c.closed || len(c.stmts)+len(c.noted) >= maxCached {
		return nil
	}
	n := c.seen[query] + 1
	if n >= 2 {
		delete(c.seen, query)
		c.noted = append(c.noted, query)
	} else if len(c.seen) < maxCached {
		c.seen[query] = n
	}
	return nil
}

// prepareNoted prepares the texts noted since the last call. The caller
// holds no connection of c.db (it waits for one). A text that fails to
// prepare is dropped: running it unprepared reports its error where it
// belongs.
func (c *stmtCache) prepareNoted(ctx context.Context) {
	c.mu.Lock()
	noted := c.noted
	c.noted = nil
	c.mu.Unlock()
	for _, q := range noted {
		st, err := c.db.PrepareContext(ctx, q)
		if err != nil {
			continue
		}
		c.mu.Lock()
		if _, dup := c.stmts[q]; dup || c.closed {
			st.Close()
		} else {
			c.stmts[q] = st
		}
		c.mu.Unlock()
	}
}

// close closes the prepared statements; get prepares none after it.
func (c *stmtCache) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	var err error
	for q, st := range c.stmts {
		err = errors.Join(err, st.Close())
		delete(c.stmts, q)
	}
	return err
}

// bucket returns the size of the next piece of a list of n items cut in
// pieces of at most max items each: the largest power of two not above
// min(n, max). Lists cut so come in a few sizes, whose statements the
// cache keeps; max is a power of two.
func bucket(n, max int) int {
	if n >= max {
		return max
	}
	return 1 << (bits.Len(uint(n)) - 1)
}

// padded returns the size an IN list of n ids (0 < n <= max) is padded to:
// the smallest power of two not below n.
func padded(n int) int {
	return 1 << bits.Len(uint(n-1))
}
