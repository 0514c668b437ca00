// Package migrate applies the numbered SQL migrations of package
// /migrations to a metadata database. It is shared by the SQLite and the
// PostgreSQL store: the dialect-specific parts (how to run a transaction, how
// schema_migrations is declared, locking) live behind Target.
//
// The rules:
//
//   - files are named NNNN_description.sql, numbered from 1 without gaps and
//     with the same numbers in every dialect;
//   - each migration runs in its own transaction together with the insert of
//     its number into schema_migrations(version, applied_at), so a failed
//     migration leaves no trace and is retried on the next start;
//   - a database that records a version newer than the newest file this binary
//     embeds is refused with ErrTooNew: an old binary must not write to a
//     schema it does not know.
//
// Concurrent runners are the target's business: the PostgreSQL store holds a
// session advisory lock around Run, the SQLite store has a single writer
// connection and re-checks the version inside each migration's transaction.
package migrate

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"
)

// ErrTooNew is returned (wrapped) when the database records a schema version
// newer than the binary knows.
var ErrTooNew = errors.New("database schema is newer than this binary")

// Migration is one numbered schema change.
type Migration struct {
	Version int    // the NNNN of the file name, from 1
	Name    string // the file name, for messages
	SQL     string // the statements, run as one script
}

// Target is a database the migrations are applied to.
type Target interface {
	// AppliedVersions creates schema_migrations if it does not exist and
	// returns the versions it records, in any order.
	AppliedVersions(ctx context.Context) ([]int, error)
	// Apply runs m.SQL and records m.Version in schema_migrations, in one
	// transaction. If m.Version is already recorded when the transaction
	// starts (another process applied it meanwhile), Apply changes nothing
	// and returns nil.
	Apply(ctx context.Context, m Migration) error
}

// Load reads the *.sql files of dir in fsys, sorted by version. It fails on a
// badly named file, a duplicate number or a gap in the numbering.
func Load(fsys fs.FS, dir string) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("read migrations %s: %w", dir, err)
	}
	var out []Migration
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, ".sql") {
			continue
		}
		v, err := parseVersion(name)
		if err != nil {
			return nil, fmt.Errorf("migrations %s: %w", dir, err)
		}
		b, err := fs.ReadFile(fsys, path.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("read migration %s/%s: %w", dir, name, err)
		}
		out = append(out, Migration{Version: v, Name: name, SQL: string(b)})
	}
	slices.SortFunc(out, func(a, b Migration) int { return a.Version - b.Version })
	for i, m := range out {
		if m.Version != i+1 {
			if i > 0 && out[i-1].Version == m.Version {
				return nil, fmt.Errorf("migrations %s: %s and %s have the same number", dir, out[i-1].Name, m.Name)
			}
			return nil, fmt.Errorf("migrations %s: %s: want number %d (numbers start at 1, without gaps)", dir, m.Name, i+1)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("migrations %s: no .sql files", dir)
	}
	return out, nil
}

// parseVersion returns the NNNN of "NNNN_description.sql".
func parseVersion(name string) (int, error) {
	num, _, ok := strings.Cut(strings.TrimSuffix(name, ".sql"), "_")
	if !ok || num == "" {
		return 0, fmt.Errorf("%s: want NNNN_description.sql", name)
	}
	v, err := strconv.Atoi(num)
	if err != nil || v <= 0 || strings.TrimLeft(num, "0123456789") != "" {
		return 0, fmt.Errorf("%s: want NNNN_description.sql with NNNN > 0", name)
	}
	return v, nil
}

// Run applies the migrations t lacks, in order, each in its own transaction,
// and returns how many it applied. migs must be as Load returns them. It
// returns an error wrapping ErrTooNew, and applies nothing, if t records a
// version newer than the last of migs.
func Run(ctx context.Context, t Target, migs []Migration) (int, error) {
	if len(migs) == 0 {
		return 0, errors.New("migrate: no migrations")
	}
	applied, err := t.AppliedVersions(ctx)
	if err != nil {
		return 0, fmt.Errorf("read schema_migrations: %w", err)
	}
	latest := migs[len(migs)-1].Version
	done := make(map[int]bool, len(applied))
	for _, v := range applied {
		if v > latest {
			return 0, fmt.Errorf("%w: the database is at schema version %d, this binary knows versions up to %d; run a newer sandkeep", ErrTooNew, slices.Max(applied), latest)
		}
		done[v] = true
	}
	n := 0
	for _, m := range migs {
		if done[m.Version] {
			continue
		}
		if err := t.Apply(ctx, m); err != nil {
			return n, fmt.Errorf("apply migration %s: %w", m.Name, err)
		}
		n++
	}
	return n, nil
}
