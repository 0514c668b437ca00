package pgstore

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// errClosed is returned by a pool after Close.
var errClosed = errors.New("pgstore: store is closed")

// pool is a small bounded pool of pgx connections.
//
// pgx's own pgxpool needs github.com/jackc/puddle/v2, which this module does
// not require; the store needs little of it: a bound on open connections,
// reuse of idle ones, a ping before reusing one that sat idle for a while,
// and never handing out a connection that is broken or inside a transaction.
type pool struct {
	cfg *pgx.ConnConfig
	sem chan struct{} // one token per open or opening connection in use

	mu     sync.Mutex
	idle   []idleConn // LIFO: the warmest connection first
	closed bool
}

type idleConn struct {
	c     *pgx.Conn
	since time.Time
}

// pingAfter is how long a connection may sit idle before it is checked with
// a ping on reuse.
const pingAfter = 30 * time.Second

func newPool(cfg *pgx.ConnConfig, size int) *pool {
	return &pool{cfg: cfg, sem: make(chan struct{}, size)}
}

// acquire returns a connection ready for use, dialling one if none is idle.
// It waits while size connections are in use, until ctx ends.
func (p *pool) acquire(ctx context.Context) (*pgx.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	select {
	case p.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			<-p.sem
			return nil, errClosed
		}
		if len(p.idle) == 0 {
			p.mu.Unlock()
			break
		}
		ic := p.idle[len(p.idle)-1]
		p.idle = p.idle[:len(p.idle)-1]
		p.mu.Unlock()
		if ic.c.IsClosed() {
			continue
		}
		if time.Since(ic.since) > pingAfter {
			if err := ic.c.Ping(ctx); err != nil {
				closeConn(ic.c)
				if ctx.Err() != nil {
					<-p.sem
					return nil, ctx.Err()
				}
				continue
			}
		}
		return ic.c, nil
	}
	c, err := pgx.ConnectConfig(ctx, p.cfg)
	if err != nil {
		<-p.sem
		return nil, err
	}
	return c, nil
}

// release returns c to the pool, or closes it if it is broken, busy or left
// inside a transaction.
func (p *pool) release(c *pgx.Conn) {
	defer func() { <-p.sem }()
	if c.IsClosed() || c.PgConn().IsBusy() || c.PgConn().TxStatus() != 'I' {
		closeConn(c)
		return
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		closeConn(c)
		return
	}
	p.idle = append(p.idle, idleConn{c: c, since: time.Now()})
	p.mu.Unlock()
}

// close closes the idle connections and makes later acquires fail;
// connections in use are closed when released.
func (p *pool) close() {
	p.mu.Lock()
	idle := p.idle
	p.idle, p.closed = nil, true
	p.mu.Unlock()
	for _, ic := range idle {
		closeConn(ic.c)
	}
}

func closeConn(c *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = c.Close(ctx)
}
