package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/metastore/internal/storeutil"
)

// Projects, tokens, the blob index, versions and project files.

// ---- projects ----

// CreateProject makes a project with a fresh id.
func (s *Store) CreateProject(ctx context.Context, name string) (metastore.Project, error) {
	if err := storeutil.CheckName(name); err != nil {
		return metastore.Project{}, err
	}
	p := metastore.Project{Name: name, CreatedAt: storeutil.Now()}
	w := s.d.Writer()
	for attempt := 0; ; attempt++ {
		p.ID = storeutil.NewProjectID()
		_, err := w.Exec(ctx, `INSERT INTO projects (id, name, created_at, head) VALUES ($1, $2, $3, 0)`, p.ID, p.Name, p.CreatedAt)
		if err == nil {
			return p, nil
		}
		if s.d.IsUnique(err) {
			// The name is taken, or (rarely) the id: then draw another.
			var taken bool
			if err := w.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM projects WHERE name = $1)`, name).Scan(&taken); err != nil {
				return metastore.Project{}, fmt.Errorf("create project %q: %w", name, err)
			}
			if taken {
				return metastore.Project{}, fmt.Errorf("%w: a project named %q", metastore.ErrAlreadyExists, name)
			}
			if attempt < 3 {
				continue
			}
		}
		return metastore.Project{}, fmt.Errorf("create project %q: %w", name, err)
	}
}

const projectCols = `id, name, created_at, head`

func scanProject(r Row) (metastore.Project, error) {
	var p metastore.Project
	err := r.Scan(&p.ID, &p.Name, &p.CreatedAt, &p.Head)
	return p, err
}

// GetProject returns the project, or ErrNotFound.
func (s *Store) GetProject(ctx context.Context, projectID string) (metastore.Project, error) {
	if !storeutil.Storable(projectID) {
		return metastore.Project{}, storeutil.NotFound("project %q", projectID)
	}
	p, err := scanProject(s.d.Reader().QueryRow(ctx, `SELECT `+projectCols+` FROM projects WHERE id = $1`, projectID))
	if noRows(err) {
		return p, storeutil.NotFound("project %q", projectID)
	}
	if err != nil {
		return p, fmt.Errorf("get project %s: %w", projectID, err)
	}
	return p, nil
}

// ListProjects returns every project, by name (bytewise).
func (s *Store) ListProjects(ctx context.Context) ([]metastore.Project, error) {
	out, err := collect(ctx, s.d.Reader(), scanProject, `SELECT `+projectCols+` FROM projects ORDER BY name`+s.dl.Bytewise)
	if err != nil {
		return nil, fmt.Errorf("list projects: %w", err)
	}
	return out, nil
}

// ---- tokens ----

// CreateToken stores t. A zero CreatedAt means now.
func (s *Store) CreateToken(ctx context.Context, t metastore.Token) error {
	t, err := storeutil.CheckToken(t, storeutil.Now())
	if err != nil {
		return err
	}
	var project *string
	if t.ProjectID != "" {
		project = &t.ProjectID
	}
	_, err = s.d.Writer().Exec(ctx, `INSERT INTO tokens (hash, kind, project_id, created_at, expires_at, revoked, note, sandbox_id)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, t.Hash, string(t.Kind), project, t.CreatedAt, nullTime(t.ExpiresAt), t.Revoked, t.Note, t.SandboxID)
	switch {
	case s.d.IsUnique(err):
		return fmt.Errorf("%w: token %.8s…", metastore.ErrAlreadyExists, t.Hash)
	case s.d.IsForeignKey(err):
		return storeutil.NotFound("project %q", t.ProjectID)
	case err != nil:
		return fmt.Errorf("create token: %w", err)
	}
	return nil
}

const tokenColumns = `hash, kind, project_id, created_at, expires_at, revoked, note, sandbox_id, last_used_at`

func scanToken(r Row) (metastore.Token, error) {
	var t metastore.Token
	var kind string
	var project *string
	var expires, used *time.Time
	if err := r.Scan(&t.Hash, &kind, &project, &t.CreatedAt, &expires, &t.Revoked, &t.Note, &t.SandboxID, &used); err != nil {
		return t, err
	}
	t.Kind, t.ExpiresAt, t.LastUsedAt = metastore.TokenKind(kind), deref(expires), deref(used)
	if project != nil {
		t.ProjectID = *project
	}
	return t, nil
}

// GetToken finds a token by the hex SHA-256 of its secret.
func (s *Store) GetToken(ctx context.Context, hash string) (metastore.Token, error) {
	if !storeutil.Storable(hash) {
		return metastore.Token{}, storeutil.NotFound("token")
	}
	t, err := scanToken(s.d.Reader().QueryRow(ctx, `SELECT `+tokenColumns+` FROM tokens WHERE hash = $1`, hash))
	if noRows(err) {
		return metastore.Token{}, storeutil.NotFound("token")
	}
	if err != nil {
		return metastore.Token{}, fmt.Errorf("get token: %w", err)
	}
	return t, nil
}

// ListTokens lists the project's sandbox tokens, oldest first.
func (s *Store) ListTokens(ctx context.Context, projectID string) ([]metastore.Token, error) {
	if !storeutil.Storable(projectID) {
		return nil, storeutil.NotFound("project %q", projectID)
	}
	out, err := listOf(ctx, s, projectID, scanToken, `SELECT `+tokenColumns+` FROM tokens
		WHERE project_id = $1 ORDER BY created_at, hash LIMIT 100000`, projectID)
	if err != nil {
		return nil, fmt.Errorf("list tokens of %s: %w", projectID, err)
	}
	return out, nil
}

// RevokeTokenID revokes the token with that public id.
func (s *Store) RevokeTokenID(ctx context.Context, tokenID string) (metastore.Token, error) {
	prefix, ok := strings.CutPrefix(tokenID, "tok_")
	if !ok || len(prefix) != 16 || strings.Trim(prefix, "0123456789abcdef") != "" {
		return metastore.Token{}, fmt.Errorf("%w: token id %q: want tok_ and 16 hex characters", metastore.ErrInvalid, tokenID)
	}
	// The hash is hex, so the prefix range is [prefix, prefix+"g").
	var hashes []string
	err := s.d.Reader().Query(ctx, func(r Row) error {
		var h string
		if err := r.Scan(&h); err != nil {
			return err
		}
		hashes = append(hashes, h)
		return nil
	}, `SELECT hash FROM tokens WHERE hash >= $1 AND hash < $2 LIMIT 2`, prefix, prefix+"g")
	if err != nil {
		return metastore.Token{}, fmt.Errorf("find token %s: %w", tokenID, err)
	}
	switch len(hashes) {
	case 0:
		return metastore.Token{}, storeutil.NotFound("token %s", tokenID)
	case 2:
		return metastore.Token{}, fmt.Errorf("%w: token id %s names two tokens", metastore.ErrConflict, tokenID)
	}
	if _, err := s.d.Writer().Exec(ctx, `UPDATE tokens SET revoked = true WHERE hash = $1`, hashes[0]); err != nil {
		return metastore.Token{}, fmt.Errorf("revoke token %s: %w", tokenID, err)
	}
	return s.GetToken(ctx, hashes[0])
}

// TouchToken records when a token was last used.
func (s *Store) TouchToken(ctx context.Context, hash string, at time.Time) error {
	if !storeutil.Storable(hash) {
		return nil
	}
	at, err := storeutil.Time(at)
	if err != nil {
		return err
	}
	if _, err := s.d.Writer().Exec(ctx, `UPDATE tokens SET last_used_at = $2 WHERE hash = $1`, hash, at); err != nil {
		return fmt.Errorf("touch token: %w", err)
	}
	return nil
}

// GetLimits returns the project's limits as set.
func (s *Store) GetLimits(ctx context.Context, projectID string) (metastore.Limits, error) {
	if !storeutil.Storable(projectID) {
		return metastore.Limits{}, storeutil.NotFound("project %q", projectID)
	}
	// One statement for both answers (it runs on every commit): no row
	// for an unknown project, NULLs for one without limits set.
	var files, bytes, depth *int64
	err := s.d.Reader().QueryRow(ctx, `SELECT l.max_files, l.max_bytes, l.max_depth
		FROM projects p LEFT JOIN project_limits l ON l.project_id = p.id WHERE p.id = $1`, projectID).Scan(&files, &bytes, &depth)
	if noRows(err) {
		err = storeutil.NotFound("project %q", projectID)
	}
	if err != nil {
		return metastore.Limits{}, fmt.Errorf("limits of %s: %w", projectID, err)
	}
	if files == nil || bytes == nil || depth == nil {
		return metastore.Limits{}, nil
	}
	return metastore.Limits{MaxFiles: *files, MaxBytes: *bytes, MaxDepth: int(*depth)}, nil
}

// SetLimits stores the project's limits.
func (s *Store) SetLimits(ctx context.Context, projectID string, l metastore.Limits) error {
	if l.MaxFiles < 0 || l.MaxBytes < 0 || l.MaxDepth < 0 {
		return fmt.Errorf("%w: negative limit", metastore.ErrInvalid)
	}
	if !storeutil.Storable(projectID) {
		return storeutil.NotFound("project %q", projectID)
	}
	_, err := s.d.Writer().Exec(ctx, `INSERT INTO project_limits (project_id, max_files, max_bytes, max_depth, updated_at) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (project_id) DO UPDATE SET max_files = excluded.max_files, max_bytes = excluded.max_bytes,
			max_depth = excluded.max_depth, updated_at = excluded.updated_at`,
		projectID, l.MaxFiles, l.MaxBytes, l.MaxDepth, storeutil.Now())
	if s.d.IsForeignKey(err) {
		return storeutil.NotFound("project %q", projectID)
	}
	if err != nil {
		return fmt.Errorf("set limits of %s: %w", projectID, err)
	}
	return nil
}

// RevokeProjectTokens revokes every token of the project.
func (s *Store) RevokeProjectTokens(ctx context.Context, projectID string) (int, error) {
	if !storeutil.Storable(projectID) {
		return 0, storeutil.NotFound("project %q", projectID)
	}
	var n int64
	err := s.d.Write(ctx, func(q Querier) error {
		if err := needProject(ctx, q, projectID); err != nil {
			return err
		}
		var err error
		n, err = q.Exec(ctx, `UPDATE tokens SET revoked = true WHERE project_id = $1 AND NOT revoked`, projectID)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("revoke tokens of %s: %w", projectID, err)
	}
	return int(n), nil
}

// ---- blob index ----

// liveBlobs returns which of ids the project indexes in a pack that is not
// condemned (packs being deleted no longer index any blob).
func (s *Store) liveBlobs(ctx context.Context, q Querier, projectID string, ids []id.ID) (map[id.ID]struct{}, error) {
	have := make(map[id.ID]struct{}, len(ids))
	if len(ids) == 0 {
		return have, nil
	}
	err := s.d.In([]any{projectID}, storeutil.IDBytes(ids), func(in string, args []any) error {
		return q.Query(ctx, func(r Row) error {
			x, err := scanID(r, "blob id")
			have[x] = struct{}{}
			return err
		}, `SELECT b.id FROM blobs b
			JOIN packs p ON p.project_id = b.project_id AND p.id = b.pack_id
			WHERE b.project_id = $1 AND p.condemned_at IS NULL AND b.id `+in, args...)
	})
	return have, err
}

// requireLive returns nil if the project indexes every one of ids (distinct)
// in a live pack, else the ErrMissing that names the first one it lacks. It
// counts rather than lists: a commit requires every chunk it adds, and on
// success no id needs to come back.
func (s *Store) requireLive(ctx context.Context, q Querier, projectID string, ids []id.ID) error {
	n := 0
	err := s.d.In([]any{projectID}, storeutil.IDBytes(ids), func(in string, args []any) error {
		var c int
		err := q.QueryRow(ctx, `SELECT count(*) FROM blobs
			WHERE project_id = $1 AND id `+in+`
			AND pack_id NOT IN (SELECT id FROM packs WHERE project_id = $1 AND condemned_at IS NOT NULL)`, args...).Scan(&c)
		n += c
		return err
	})
	if err != nil {
		return fmt.Errorf("check required blobs: %w", err)
	}
	if n == len(ids) {
		return nil
	}
	have, err := s.liveBlobs(ctx, q, projectID, ids)
	if err != nil {
		return fmt.Errorf("check required blobs: %w", err)
	}
	first, _ := storeutil.FirstMissing(ids, have)
	return storeutil.MissingErr(len(ids)-len(have), first)
}

// MissingBlobs returns the ids (in input order, deduplicated) that the
// project's index does not hold, or holds only in a condemned pack, or
// ErrNotFound for an unknown project.
func (s *Store) MissingBlobs(ctx context.Context, projectID string, ids []id.ID) ([]id.ID, error) {
	if !storeutil.Storable(projectID) {
		return nil, storeutil.NotFound("project %q", projectID)
	}
	ids = storeutil.Dedup(ids)
	var have map[id.ID]struct{}
	err := s.d.Read(ctx, func(q Querier) error {
		var err error
		if have, err = s.liveBlobs(ctx, q, projectID, ids); err != nil || len(have) > 0 {
			return err // a blob row names the project: it exists
		}
		return needProject(ctx, q, projectID)
	})
	if err != nil {
		return nil, fmt.Errorf("missing blobs of %s: %w", projectID, err)
	}
	out := make([]id.ID, 0, len(ids)-len(have))
	for _, x := range ids {
		if _, ok := have[x]; !ok {
			out = append(out, x)
		}
	}
	return out, nil
}

// LocateBlobs returns the locations of the ids the project's index holds, or
// ErrNotFound for an unknown project.
func (s *Store) LocateBlobs(ctx context.Context, projectID string, ids []id.ID) (map[id.ID]metastore.BlobLocation, error) {
	if !storeutil.Storable(projectID) {
		return nil, storeutil.NotFound("project %q", projectID)
	}
	ids = storeutil.Dedup(ids)
	out := make(map[id.ID]metastore.BlobLocation, len(ids))
	err := s.d.Read(ctx, func(q Querier) error {
		if len(ids) == 0 {
			return needProject(ctx, q, projectID)
		}
		err := s.d.In([]any{projectID}, storeutil.IDBytes(ids), func(in string, args []any) error {
			return q.Query(ctx, func(r Row) error {
				var b, pack []byte
				var typ, codec int16
				var l metastore.BlobLocation
				if err := r.Scan(&b, &typ, &pack, &l.Offset, &l.Length, &l.RawLength, &codec, &l.RawOffset); err != nil {
					return err
				}
				var err error
				if l.ID, err = storeutil.ParseID(b, "blob id"); err != nil {
					return err
				}
				if l.PackID, err = storeutil.ParseID(pack, "pack id"); err != nil {
					return err
				}
				l.Type, l.Codec = metastore.BlobType(typ), uint8(codec)
				out[l.ID] = l
				return nil
			}, `SELECT id, type, pack_id, "offset", length, raw_length, codec, raw_offset
				FROM blobs WHERE project_id = $1 AND id `+in, args...)
		})
		if err != nil || len(out) > 0 {
			return err // a blob row names the project: it exists
		}
		return needProject(ctx, q, projectID)
	})
	if err != nil {
		return nil, fmt.Errorf("locate blobs of %s: %w", projectID, err)
	}
	return out, nil
}

// AddPack records a verified pack and the blobs in it, in one transaction.
// Adding the same pack again changes nothing but un-condemning it; a blob
// already indexed keeps its first location unless that pack is condemned.
// An unknown project is ErrNotFound; an old p.Epoch or a pack being deleted
// is ErrStale.
func (s *Store) AddPack(ctx context.Context, p metastore.Pack, blobs []metastore.BlobLocation) error {
	p, blobs, err := storeutil.CheckPack(p, blobs)
	if err != nil {
		return err
	}
	err = s.d.Write(ctx, func(q Querier) error {
		if err := s.d.LockProject(ctx, q, p.ProjectID, false); err != nil {
			return err
		}
		if err := s.claimPack(ctx, q, p); err != nil {
			return err
		}
		if len(blobs) == 0 {
			return nil
		}
		// The blobs come sorted by id, so concurrent AddPacks lock rows in
		// the same order and cannot deadlock.
		return s.d.InsertBlobs(ctx, q, p, blobs)
	})
	if err != nil {
		return fmt.Errorf("add pack %s to %s: %w", p.ID.Short(), p.ProjectID, err)
	}
	return nil
}

// ---- versions ----

// CommitVersion makes v the new head if v.Parent is the current head: a
// compare-and-set on projects.head, the version row and the project_files
// changes in one transaction. A stale parent is ErrConflict, an unknown
// project ErrNotFound; either way nothing changes.
func (s *Store) CommitVersion(ctx context.Context, v metastore.Version, changes metastore.FileChanges) (metastore.Version, error) {
	if err := storeutil.CheckVersion(v); err != nil {
		return metastore.Version{}, err
	}
	now := storeutil.Now()
	ups, dels, err := storeutil.Changes(v.ProjectID, changes, now)
	if err != nil {
		return metastore.Version{}, err
	}
	v.Number = v.Parent + 1
	v.CreatedAt = now
	err = s.d.Write(ctx, func(q Querier) error {
		if len(changes.Requires) > 0 {
			// Shared with other commits and uploads, exclusive with the
			// garbage collection transactions: the check below and the
			// commit are atomic with respect to CondemnPacks, DeletePacks.
			if err := s.d.LockProject(ctx, q, v.ProjectID, false); err != nil {
				return err
			}
		}
		// The compare-and-set serialises concurrent commits to the project
		// (a row lock, or the one writer): a loser matches nothing.
		n, err := q.Exec(ctx, `UPDATE projects SET head = $1 WHERE id = $2 AND head = $3`, v.Number, v.ProjectID, v.Parent)
		if err != nil {
			return err
		}
		if n == 0 {
			var head int64
			err := q.QueryRow(ctx, `SELECT head FROM projects WHERE id = $1`, v.ProjectID).Scan(&head)
			if noRows(err) {
				return storeutil.NotFound("project %q", v.ProjectID)
			}
			if err != nil {
				return err
			}
			return fmt.Errorf("%w: head is %d, the commit names %d", metastore.ErrConflict, head, v.Parent)
		}
		var live <-chan error // the check of Requires, running beside the writes
		if len(changes.Requires) > 0 {
			req := storeutil.Dedup(changes.Requires)
			if !s.d.ReadBesideWrite() {
				if err := s.requireLive(ctx, q, v.ProjectID, req); err != nil {
					return err
				}
			} else {
				// The lock held since BEGIN keeps garbage collection
				// out until this transaction ends, so the reader sees
				// the packs as they are for the commit. Checking there
				// takes another core, while this one writes the files.
				ctx, cancel := context.WithCancel(ctx)
				defer cancel()
				ch := make(chan error, 1)
				go func() {
					ch <- s.d.Read(ctx, func(rq Querier) error { return s.requireLive(ctx, rq, v.ProjectID, req) })
				}()
				live = ch
			}
		}
		if err := s.commitFiles(ctx, q, v, dels, ups); err != nil {
			return err
		}
		if live != nil {
			return <-live
		}
		return nil
	})
	if err != nil {
		return metastore.Version{}, fmt.Errorf("commit version %d of %s: %w", v.Number, v.ProjectID, err)
	}
	return v, nil
}

// commitFiles writes a commit's version row and its project_files changes.
func (s *Store) commitFiles(ctx context.Context, q Querier, v metastore.Version, dels []string, ups []metastore.ProjectFile) error {
	if _, err := q.Exec(ctx, `INSERT INTO versions (`+versionCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
		v.ProjectID, v.Number, v.Parent, v.Root.Bytes(), string(v.Kind), v.SandboxID, v.CreatedAt, v.Files, v.Bytes, v.Pinned); err != nil {
		return fmt.Errorf("insert version: %w", err)
	}
	if len(dels) > 0 {
		if err := s.d.In([]any{v.ProjectID}, dels, func(in string, args []any) error {
			_, err := q.Exec(ctx, `DELETE FROM project_files WHERE project_id = $1 AND path `+in, args...)
			return err
		}); err != nil {
			return fmt.Errorf("delete project files: %w", err)
		}
	}
	if len(ups) > 0 {
		if err := s.d.UpsertFiles(ctx, q, ups); err != nil {
			return fmt.Errorf("upsert project files: %w", err)
		}
	}
	return nil
}

const versionCols = `project_id, number, parent, root, kind, sandbox_id, created_at, files, bytes, pinned`

func scanVersion(r Row) (metastore.Version, error) {
	var v metastore.Version
	var root []byte
	var kind string
	if err := r.Scan(&v.ProjectID, &v.Number, &v.Parent, &root, &kind, &v.SandboxID, &v.CreatedAt, &v.Files, &v.Bytes, &v.Pinned); err != nil {
		return v, err
	}
	v.Kind = metastore.VersionKind(kind)
	var err error
	v.Root, err = storeutil.ParseID(root, "root id")
	return v, err
}

// noVersion is the ErrNotFound of a version number the project lacks; it
// says which numbers the project has, so the user can pick one.
func (s *Store) noVersion(ctx context.Context, projectID string, number int64) error {
	var lo, hi sql.NullInt64
	var n int64
	err := s.d.Reader().QueryRow(ctx, `SELECT MIN(number), MAX(number), COUNT(*) FROM versions WHERE project_id = $1`, projectID).Scan(&lo, &hi, &n)
	switch {
	case err != nil || !lo.Valid:
		return storeutil.NotFound("version %d of project %s (it has no versions yet)", number, projectID)
	case n == hi.Int64-lo.Int64+1:
		return storeutil.NotFound("version %d of project %s (it has versions %d..%d)", number, projectID, lo.Int64, hi.Int64)
	}
	return storeutil.NotFound("version %d of project %s (it has %d versions between %d and %d; older ones fell out of retention: see `sandkeep versions`)", number, projectID, n, lo.Int64, hi.Int64)
}

// GetVersion returns one version, or ErrNotFound.
func (s *Store) GetVersion(ctx context.Context, projectID string, number int64) (metastore.Version, error) {
	if !storeutil.Storable(projectID) {
		return metastore.Version{}, storeutil.NotFound("project %q", projectID)
	}
	v, err := scanVersion(s.d.Reader().QueryRow(ctx, `SELECT `+versionCols+` FROM versions WHERE project_id = $1 AND number = $2`, projectID, number))
	if noRows(err) {
		return v, s.noVersion(ctx, projectID, number)
	}
	if err != nil {
		return v, fmt.Errorf("get version %d of %s: %w", number, projectID, err)
	}
	return v, nil
}

// HeadVersion returns the newest version, or ErrNotFound if there is none
// (or no such project).
func (s *Store) HeadVersion(ctx context.Context, projectID string) (metastore.Version, error) {
	if !storeutil.Storable(projectID) {
		return metastore.Version{}, storeutil.NotFound("project %q", projectID)
	}
	v, err := scanVersion(s.d.Reader().QueryRow(ctx, `SELECT v.project_id, v.number, v.parent, v.root, v.kind, v.sandbox_id,
			v.created_at, v.files, v.bytes, v.pinned
		FROM projects p JOIN versions v ON v.project_id = p.id AND v.number = p.head
		WHERE p.id = $1`, projectID))
	if noRows(err) {
		return v, storeutil.NotFound("no head version of project %q", projectID)
	}
	if err != nil {
		return v, fmt.Errorf("head version of %s: %w", projectID, err)
	}
	return v, nil
}

// ListVersions returns versions newest first; opts.After is a version
// number, and only older versions follow it. An unknown project is
// ErrNotFound.
func (s *Store) ListVersions(ctx context.Context, projectID string, opts metastore.ListOptions) ([]metastore.Version, error) {
	limit, err := storeutil.Limit(opts)
	if err != nil {
		return nil, err
	}
	before, err := storeutil.VersionsBefore(opts)
	if err != nil {
		return nil, err
	}
	if !storeutil.Storable(projectID) {
		return nil, storeutil.NotFound("project %q", projectID)
	}
	out, err := listOf(ctx, s, projectID, scanVersion, `SELECT `+versionCols+` FROM versions
		WHERE project_id = $1 AND number < $2 ORDER BY number DESC LIMIT $3`, projectID, before, limit)
	if err != nil {
		return nil, fmt.Errorf("list versions of %s: %w", projectID, err)
	}
	return out, nil
}

// ---- project files ----

func scanFile(r Row) (metastore.ProjectFile, error) {
	var f metastore.ProjectFile
	err := r.Scan(&f.ProjectID, &f.Path, &f.Size, &f.ContentType, &f.Checksum, &f.CreatedAt, &f.UpdatedAt, &f.UserUploaded)
	return f, err
}

// ListProjectFiles lists the head's files under prefix (a plain string
// prefix: a range scan, no LIKE) in path order; opts.After is a path. An
// unknown project is ErrNotFound.
func (s *Store) ListProjectFiles(ctx context.Context, projectID, prefix string, opts metastore.ListOptions) ([]metastore.ProjectFile, error) {
	limit, err := storeutil.Limit(opts)
	if err != nil {
		return nil, err
	}
	if err := storeutil.CheckPrefix(prefix); err != nil {
		return nil, err
	}
	after, err := storeutil.FilesAfter(opts)
	if err != nil {
		return nil, err
	}
	if !storeutil.Storable(projectID) {
		return nil, storeutil.NotFound("project %q", projectID)
	}
	// Paths compare bytewise: the column's collation (PostgreSQL) or the
	// default one (SQLite).
	q := `SELECT ` + FileCols + ` FROM project_files WHERE project_id = $1 AND path >= $2 AND path > $3`
	args := []any{projectID, prefix, after, limit}
	if end, ok := storeutil.PrefixEnd(prefix); ok {
		q += ` AND path < $5`
		args = append(args, end)
	}
	out, err := listOf(ctx, s, projectID, scanFile, q+` ORDER BY path LIMIT $4`, args...)
	if err != nil {
		return nil, fmt.Errorf("list files of %s: %w", projectID, err)
	}
	return out, nil
}

// GetProjectFile returns one file of the head, or ErrNotFound.
func (s *Store) GetProjectFile(ctx context.Context, projectID, path string) (metastore.ProjectFile, error) {
	if !storeutil.Storable(projectID) || !storeutil.Storable(path) {
		return metastore.ProjectFile{}, storeutil.NotFound("file %q of project %q", path, projectID)
	}
	f, err := scanFile(s.d.Reader().QueryRow(ctx, `SELECT `+FileCols+` FROM project_files WHERE project_id = $1 AND path = $2`, projectID, path))
	if noRows(err) {
		return f, storeutil.NotFound("file %q of project %q", path, projectID)
	}
	if err != nil {
		return f, fmt.Errorf("get file %q of %s: %w", path, projectID, err)
	}
	return f, nil
}
