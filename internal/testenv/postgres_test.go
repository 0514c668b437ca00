package testenv

import (
	"context"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestPostgresWithDatabase(t *testing.T) {
	tests := []struct{ dsn, want string }{
		{"postgres://postgres@127.0.0.1:5432/test?sslmode=disable", "postgres://postgres@127.0.0.1:5432/sk_x?sslmode=disable"},
		{"postgresql://u:p%40ss@db.example:6543?sslmode=require", "postgresql://u:p%40ss@db.example:6543/sk_x?sslmode=require"},
		{"postgres://h/a%2Fb", "postgres://h/sk_x"},
		{"host=127.0.0.1 user=postgres dbname=test sslmode=disable", "host=127.0.0.1 user=postgres dbname=test sslmode=disable dbname=sk_x"},
		{"host=/tmp ", "host=/tmp dbname=sk_x"},
	}
	for _, tt := range tests {
		got, err := withDatabase(tt.dsn, "sk_x")
		if err != nil || got != tt.want {
			t.Errorf("withDatabase(%q) = %q, %v; want %q", tt.dsn, got, err, tt.want)
		}
	}
}

func TestPostgresRedact(t *testing.T) {
	for dsn, want := range map[string]string{
		"postgres://u:secret@h/db":      "postgres://u:xxxxx@h/db",
		"postgres://u@h/db":             "postgres://u@h/db",
		"host=h password=secret user=u": "(key=value DSN with a password)",
		"host=h user=u":                 "host=h user=u",
	} {
		if got := redact(dsn); got != want {
			t.Errorf("redact(%q) = %q, want %q", dsn, got, want)
		}
	}
}

// TestPostgres creates a database in a subtest, uses it, and checks that it
// is gone once the subtest has ended.
func TestPostgres(t *testing.T) {
	var dsn string
	t.Run("use", func(t *testing.T) {
		dsn = Postgres(t)
		other := Postgres(t)
		if other == dsn {
			t.Fatalf("two calls returned the same database %s", dsn)
		}
		conn, err := pgx.Connect(t.Context(), dsn)
		if err != nil {
			t.Fatalf("connect to %s: %v", dsn, err)
		}
		// A session left open must not keep the database from being dropped.
		if _, err := conn.Exec(t.Context(), "CREATE TABLE t (x int); INSERT INTO t VALUES (1)"); err != nil {
			t.Fatal(err)
		}
	})
	if dsn == "" {
		t.Skip("no database was created")
	}
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	admin := os.Getenv(EnvPostgres)
	if admin == "" {
		admin = DefaultPostgres
	}
	conn, err := pgx.Connect(t.Context(), admin)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(t.Context(), "SELECT count(*) FROM pg_database WHERE datname = $1", cfg.Database).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("database %s still exists after its test ended", cfg.Database)
	}
}
