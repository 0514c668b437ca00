package server

import (
	"context"
	"fmt"

	"github.com/sandkeep/sandkeep/internal/blobstore/s3store"
	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/replication"
)

// openReplica wraps s.Blobs in a replication.Store when a replica bucket
// is configured.
func (s *Server) openReplica(ctx context.Context) error {
	cfg := s.cfg
	if cfg.ReplicaS3Bucket == "" {
		return nil
	}
	queue, ok := s.Meta.(metastore.ReplicationStore)
	if !ok {
		return fmt.Errorf("the metadata store %T keeps no replication queue", s.Meta)
	}
	rep, err := s3store.New(ctx, s3store.Config{
		Bucket: cfg.ReplicaS3Bucket, Endpoint: cfg.ReplicaS3Endpoint, Region: cfg.ReplicaS3Region,
		Prefix: cfg.ReplicaS3Prefix, PathStyle: cfg.ReplicaS3PathStyle, CreateBucket: true, InstanceCredentials: cfg.S3InstanceCredentials,
	})
	if err != nil {
		return fmt.Errorf("open the replica bucket: %w", err)
	}
	s.replicated = replication.New(s.Blobs, rep, queue)
	s.Blobs = s.replicated
	return nil
}

// runReplication drains the replication queue on the leader until ctx
// ends (nothing without a replica bucket); wait waits for it to stop.
func (s *Server) runReplication(ctx context.Context) (wait func()) {
	if s.replicated == nil {
		return func() {}
	}
	w := &replication.Worker{Store: s.replicated, Lead: s.leads, Log: s.log.With("component", "replication")}
	if s.Metrics != nil {
		w.Copied = func(op metastore.ReplicationOp) {
			n := int64(0)
			if op.Op == metastore.ReplicatePut {
				n = op.Size
			}
			s.Metrics.ObserveReplicated(op.Op, n)
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Run(ctx)
	}()
	return func() { <-done }
}
