package sqlitestore

import (
	"testing"

	"github.com/sandkeep/sandkeep/internal/metastore/metastoretest"
)

func TestSandboxStoreConformance(t *testing.T) {
	metastoretest.RunSandboxStore(t, func(t *testing.T) metastoretest.LifecycleStore { return openTemp(t) })
}

func TestClusterStore(t *testing.T) {
	metastoretest.RunClusterStore(t, func(t *testing.T) metastoretest.ClusterStore { return openTemp(t) })
}

func TestReplicationStore(t *testing.T) {
	metastoretest.RunReplicationStore(t, func(t *testing.T) metastoretest.ReplicationStore { return openTemp(t) })
}
