package main

import (
	"context"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/sandkeep/sandkeep/internal/dial"
	"github.com/sandkeep/sandkeep/internal/server"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// With -replica, the coordinator keeps a second bucket on a second
// versitygw (--replica-s3-bucket), and the continuous-sync part samples
// the replication lag while each tree syncs and changes: the most objects
// queued, the oldest queued entry's age, and how long the queue takes to
// drain once the changes stop.

// replicaFigures is the replication lag seen during one tree's run.
type replicaFigures struct {
	MaxObjects   int64   `json:"max_objects_queued"`
	MaxBytes     int64   `json:"max_bytes_queued"`
	MaxLagSecs   float64 `json:"max_oldest_seconds"`
	DrainSeconds float64 `json:"drain_seconds"`
	Samples      int     `json:"samples"`
}

// lagSampler polls GetReplicationStatus every 100 ms until stopped.
type lagSampler struct {
	admin pb.AdminServiceClient
	close func()
	stop  chan struct{}
	done  chan struct{}
	mu    sync.Mutex
	f     replicaFigures
}

func (b *bench) startLagSampler(ctx context.Context) (*lagSampler, error) {
	tok, err := os.ReadFile(server.AdminTokenFile(b.coordData))
	if err != nil {
		return nil, err
	}
	conn, err := dial.Dial(b.coord.addr, dial.Options{Token: strings.TrimSpace(string(tok))})
	if err != nil {
		return nil, err
	}
	s := &lagSampler{admin: pb.NewAdminServiceClient(conn), close: func() { conn.Close() }, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			s.sample(ctx)
			select {
			case <-s.stop:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return s, nil
}

func (s *lagSampler) sample(ctx context.Context) int64 {
	st, err := s.admin.GetReplicationStatus(ctx, &pb.GetReplicationStatusRequest{})
	if err != nil {
		return -1
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.f.Samples++
	s.f.MaxObjects = max(s.f.MaxObjects, st.GetObjects())
	s.f.MaxBytes = max(s.f.MaxBytes, st.GetBytes())
	if o := st.GetOldestTime(); o != nil {
		s.f.MaxLagSecs = max(s.f.MaxLagSecs, time.Since(o.AsTime()).Seconds())
	}
	return st.GetObjects()
}

// finish stops sampling, waits (at most a minute) for the queue to drain,
// and returns the figures.
func (s *lagSampler) finish(ctx context.Context) replicaFigures {
	close(s.stop)
	<-s.done
	defer s.close()
	start := time.Now()
	for time.Since(start) < time.Minute {
		if n := s.sample(ctx); n == 0 {
			break
		}
		time.Sleep(100 * time.Millisecond) // polling the coordinator's background copy
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.f.DrainSeconds = time.Since(start).Seconds()
	return s.f
}
