package migrations_test

import (
	"testing"

	"github.com/sandkeep/sandkeep/internal/metastore/migrate"
	"github.com/sandkeep/sandkeep/migrations"
)

// TestDialectsInStep checks that both dialects load and carry the same
// migration numbers under the same names.
func TestDialectsInStep(t *testing.T) {
	lite, err := migrate.Load(migrations.FS, migrations.SQLite)
	if err != nil {
		t.Fatal(err)
	}
	pg, err := migrate.Load(migrations.FS, migrations.Postgres)
	if err != nil {
		t.Fatal(err)
	}
	if len(lite) != len(pg) {
		t.Fatalf("sqlite has %d migrations, postgres %d", len(lite), len(pg))
	}
	for i := range lite {
		if lite[i].Name != pg[i].Name {
			t.Errorf("migration %d: sqlite %s, postgres %s", i+1, lite[i].Name, pg[i].Name)
		}
		if lite[i].SQL == "" || pg[i].SQL == "" {
			t.Errorf("migration %s is empty", lite[i].Name)
		}
	}
}
