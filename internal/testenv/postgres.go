package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Environment variables Postgres reads.
const (
	// EnvPostgres is the DSN of a database on the test server from which
	// the per-test databases are created (the "admin" database); its
	// database name is replaced by the new one's. Default DefaultPostgres.
	EnvPostgres = "SANDKEEP_TEST_PG"
	// EnvRequirePG, set to 1, makes an unreachable server fail tests
	// instead of skipping them (as does CI being set).
	EnvRequirePG = "SANDKEEP_REQUIRE_PG"
)

// DefaultPostgres is the admin DSN used when EnvPostgres is unset: the
// local server with trust authentication.
const DefaultPostgres = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// Postgres returns the DSN of a new, empty PostgreSQL database that belongs
// to this test alone (named sk_test_ and 16 random hex digits, created with
// the server's defaults). The database is dropped, even if sessions are still
// connected to it, when the test and its subtests end.
//
// The server comes from EnvPostgres (default DefaultPostgres). When it cannot
// be reached the test is skipped, or fails if CI or SANDKEEP_REQUIRE_PG=1 is
// set.
func Postgres(t testing.TB) string {
	t.Helper()
	return PostgresWith(t, "")
}

// PostgresWith is Postgres with extra CREATE DATABASE options, for example
// "TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US'" to test under a
// collation that does not order strings bytewise.
func PostgresWith(t testing.TB, createOptions string) string {
	t.Helper()
	admin := os.Getenv(EnvPostgres)
	if admin == "" {
		admin = DefaultPostgres
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		msg := fmt.Sprintf("testenv: PostgreSQL at %s is not reachable: %v", redact(admin), err)
		if requirePG() {
			t.Fatalf("%s (CI or %s=1 is set)", msg, EnvRequirePG)
		}
		t.Skipf("%s; skipping (start a server or point %s at one; set %s=1 to fail instead)", msg, EnvPostgres, EnvRequirePG)
	}
	defer conn.Close(context.Background())

	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails
	name := "sk_test_" + hex.EncodeToString(b[:])
	ident := pgx.Identifier{name}.Sanitize()
	// CREATE DATABASE syncs the new files to disk: give it time on a busy
	// machine.
	cctx, ccancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer ccancel()
	if _, err := conn.Exec(cctx, "CREATE DATABASE "+ident+" "+createOptions); err != nil {
		t.Fatalf("testenv: create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		conn, err := pgx.Connect(ctx, admin)
		if err != nil {
			t.Errorf("testenv: drop database %s: %v", name, err)
			return
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)"); err != nil {
			t.Errorf("testenv: drop database %s: %v", name, err)
		}
	})
	dsn, err := withDatabase(admin, name)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return dsn
}

func requirePG() bool {
	return os.Getenv("CI") != "" || os.Getenv(EnvRequirePG) == "1"
}

// withDatabase returns dsn (a postgres:// URL or key=value pairs) naming
// database db instead.
func withDatabase(dsn, db string) (string, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", fmt.Errorf("parse %s: %w", EnvPostgres, err)
		}
		u.Path, u.RawPath = "/"+db, ""
		return u.String(), nil
	}
	// key=value form: a later dbname overrides an earlier one.
	return strings.TrimSpace(dsn) + " dbname=" + db, nil
}

// redact hides a password in a URL DSN for messages.
func redact(dsn string) string {
	if u, err := url.Parse(dsn); err == nil && u.User != nil {
		if _, has := u.User.Password(); has {
			return u.Redacted()
		}
	}
	if strings.Contains(dsn, "password") && !strings.Contains(dsn, "://") {
		return "(key=value DSN with a password)"
	}
	return dsn
}
