package sqlitestore

import (
	"testing"

	"github.com/sandkeep/sandkeep/internal/metastore/metastoretest"
)

func TestSandboxStoreConformance(t *testing.T) {
	metastoretest.RunSandboxStore(t, func(t *testing.T) metastoretest.LifecycleStore { return openTemp(t) })
}
