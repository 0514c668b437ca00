package server

import (
	"github.com/sandkeep/sandkeep/internal/cluster"
	"github.com/sandkeep/sandkeep/internal/metastore"
)

// buildCluster makes this replica's cluster node (s.Cluster): its agent
// sessions' routes in the database, and commands for agents on other
// replicas through the database's mailbox. With SQLite there is one
// replica; the same code runs, finding every agent here.
func (s *Server) buildCluster() {
	cs, _ := s.Meta.(metastore.ClusterStore)
	notifier, _ := s.Meta.(metastore.Notifier)
	addr := s.cfg.Lifecycle.AgentCoordinator
	if addr == "" {
		addr = s.GRPCAddr()
	}
	leader := s.backgroundLeader()
	s.Cluster = cluster.New(cluster.Config{
		ID: s.cfg.ReplicaID, Addr: addr, Store: cs, Notifier: notifier, Local: s.Sessions, Log: s.log,
		Leading: func() bool {
			if leader == nil {
				return true // the only replica
			}
			l, ok := leader.(interface{ Leading() bool })
			return ok && l.Leading()
		},
		LeaderToken: func() int64 {
			if l, ok := leader.(interface{ Token() int64 }); ok {
				return l.Token()
			}
			return 0
		},
	})
	s.Sessions.OnSession = s.Cluster.OnSession
}
