package pgstore

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/sandkeep/sandkeep/internal/metastore"
)

var _ metastore.Notifier = (*Store)(nil)

// Notify implements metastore.Notifier (pg_notify).
func (s *Store) Notify(ctx context.Context, channel, payload string) error {
	if _, err := s.pool.Exec(ctx, `SELECT pg_notify($1, $2)`, channel, payload); err != nil {
		return fmt.Errorf("notify %s: %w", channel, err)
	}
	return nil
}

// Listen implements metastore.Notifier: a dedicated connection LISTENs on
// channel until ctx ends or the connection breaks.
func (s *Store) Listen(ctx context.Context, channel string) (<-chan string, error) {
	c, err := pgx.ConnectConfig(ctx, s.pool.Config().ConnConfig)
	if err != nil {
		return nil, fmt.Errorf("listen: connect: %w", err)
	}
	if _, err := c.Exec(ctx, "LISTEN "+pgx.Identifier{channel}.Sanitize()); err != nil {
		_ = c.Close(context.Background())
		return nil, fmt.Errorf("listen %s: %w", channel, err)
	}
	out := make(chan string, 64)
	go func() {
		defer close(out)
		defer c.Close(context.Background())
		for {
			n, err := c.WaitForNotification(ctx)
			if err != nil {
				return
			}
			select {
			case out <- n.Payload:
			default: // a wake-up is enough: the reader looks at the table
			}
		}
	}()
	return out, nil
}
