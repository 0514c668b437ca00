package pgstore

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/jackc/puddle/v2"

	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/metastore/internal/sqlstore"
	"github.com/sandkeep/sandkeep/internal/metastore/internal/sqlstore/sqlstoretest"
	"github.com/sandkeep/sandkeep/internal/metastore/metastoretest"
	"github.com/sandkeep/sandkeep/internal/testenv"
	"github.com/sandkeep/sandkeep/migrations"
)

func open(t *testing.T, dsn string) *Store {
	t.Helper()
	s, err := Open(t.Context(), dsn)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func TestConformance(t *testing.T) {
	metastoretest.Run(t, func(t *testing.T) metastore.Store { return open(t, testenv.Postgres(t)) })
}

// TestConformanceICU runs the suite on a database whose default collation
// does not order strings bytewise: listings must not depend on it.
func TestConformanceICU(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	metastoretest.Run(t, func(t *testing.T) metastore.Store {
		return open(t, testenv.PostgresWith(t, "TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"))
	})
}

const projectTables = `SELECT table_name::text FROM information_schema.columns
	WHERE column_name = 'project_id' AND table_schema = current_schema() ORDER BY 1`

func TestSchema(t *testing.T) {
	sqlstoretest.Run(t, func(t *testing.T) sqlstoretest.DB {
		dsn := testenv.Postgres(t)
		return sqlstoretest.DB{
			Open: func(t *testing.T) (metastore.Store, sqlstore.Querier, error) {
				s, err := Open(t.Context(), dsn)
				if err != nil {
					return nil, nil, err
				}
				return s, db{s.pool}, nil
			},
			Migrations:    migrations.Postgres,
			ProjectTables: projectTables,
		}
	})
}

// TestConcurrentOpen starts several stores on one new database at once: the
// advisory lock lets exactly one migrate, and every Open succeeds.
func TestConcurrentOpen(t *testing.T) {
	dsn := testenv.Postgres(t)
	const n = 6
	stores := make([]*Store, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			stores[i], errs[i] = Open(t.Context(), dsn)
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Open %d: %v", i, err)
			continue
		}
		stores[i].Close()
	}
	s := open(t, dsn)
	defer s.Close()
	sqlstoretest.CheckMigrated(t, db{s.pool}, migrations.Postgres)
}

func TestOpenErrors(t *testing.T) {
	ctx := context.Background()
	if _, err := Open(ctx, "postgres://h/db?pool_max_conns=zero"); !errors.Is(err, metastore.ErrInvalid) {
		t.Errorf("bad pool_max_conns: %v, want ErrInvalid", err)
	}
	if _, err := Open(ctx, "::not a dsn::"); !errors.Is(err, metastore.ErrInvalid) {
		t.Errorf("bad dsn: %v, want ErrInvalid", err)
	}
}

// TestPoolMaxConns runs the suites on a pool of one connection: no call
// needs a second connection while it holds one.
func TestPoolMaxConns(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	open1 := func(t *testing.T) *Store {
		s := open(t, testenv.Postgres(t)+"&pool_max_conns=1")
		if n := s.pool.Config().MaxConns; n != 1 {
			t.Fatalf("pool size %d, want 1", n)
		}
		return s
	}
	metastoretest.Run(t, func(t *testing.T) metastore.Store { return open1(t) })
	metastoretest.RunSandboxStore(t, func(t *testing.T) metastoretest.LifecycleStore { return open1(t) })
}

func TestClosedStore(t *testing.T) {
	s := open(t, testenv.Postgres(t))
	s.Close()
	if _, err := s.ListProjects(t.Context()); !errors.Is(err, puddle.ErrClosedPool) {
		t.Fatalf("ListProjects after Close: %v, want puddle.ErrClosedPool", err)
	}
}
