// Package metastore is the coordinator's metadata database: projects, tokens,
// the blob index (blob -> pack, offset, length), versions and the head
// version's file listing (project_files).
//
// Two implementations share one schema (see /migrations) and one conformance
// suite (metastoretest): SQLite (pure Go, the embedded default) and
// PostgreSQL (production; several coordinators over one database).
package metastore

import (
	"context"
	"errors"
	"time"

	"github.com/sandkeep/sandkeep/internal/id"
)

var (
	// ErrNotFound: the project, token, version or file does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict: a commit named a parent that is not the current head.
	ErrConflict = errors.New("parent is not the head version")
	// ErrAlreadyExists: a unique name or id is taken.
	ErrAlreadyExists = errors.New("already exists")
	// ErrInvalid: an argument is malformed (empty name, negative limit, ...).
	ErrInvalid = errors.New("invalid argument")
)

// Project is one workspace lineage (one sandbox at a time).
type Project struct {
	ID        string // "prj_" + 20 lowercase base32 characters, assigned by CreateProject
	Name      string
	CreatedAt time.Time
	Head      int64 // head version number, 0 when nothing has been committed
}

// TokenKind says what a token may do.
type TokenKind string

const (
	TokenAdmin   TokenKind = "admin"   // every admin RPC, every project
	TokenSandbox TokenKind = "sandbox" // the agent API, for ProjectID only
)

// Token is a stored credential. The secret itself is never stored: Hash is the
// hex SHA-256 of the bearer string.
type Token struct {
	Hash      string
	Kind      TokenKind
	ProjectID string // empty for admin tokens
	CreatedAt time.Time
	ExpiresAt time.Time // zero: never
	Revoked   bool
	Note      string
}

// BlobType distinguishes file data from tree blobs (values match package pack).
type BlobType uint8

const (
	BlobData BlobType = 1
	BlobTree BlobType = 2
)

// Pack is one stored pack object.
type Pack struct {
	ProjectID string
	ID        id.ID
	Type      BlobType // packs hold one type only
	Size      int64
	CreatedAt time.Time
}

// BlobLocation says where one blob lives.
type BlobLocation struct {
	ID        id.ID
	Type      BlobType
	PackID    id.ID
	Offset    int64 // of the stored bytes within the pack
	Length    int64 // stored (possibly compressed) length
	RawLength int64 // plaintext length
	Codec     uint8 // values of pack.Codec
}

// VersionKind says why a version was made.
type VersionKind string

const (
	KindSync     VersionKind = "sync"
	KindFlush    VersionKind = "flush"
	KindRollback VersionKind = "rollback"
)

// Version is one committed state of a project's workspace.
type Version struct {
	ProjectID string
	Number    int64 // 1, 2, 3, ... per project
	Parent    int64 // the head this was committed on; 0 for the first
	Root      id.ID // root tree id
	Kind      VersionKind
	SandboxID string
	CreatedAt time.Time
	Files     int64 // regular files in the tree
	Bytes     int64 // sum of regular file sizes
	Pinned    bool
}

// ProjectFile is one regular file of the head version (the platform's
// project_files table).
type ProjectFile struct {
	ProjectID    string
	Path         string // slash-separated, relative to the workspace root
	Size         int64
	ContentType  string
	Checksum     string // "blake3:" + hex of the file's content hash
	CreatedAt    time.Time
	UpdatedAt    time.Time // the file's mtime
	UserUploaded bool
}

// FileChanges updates project_files in the same transaction as a commit.
//
// Both stores apply them alike: paths must be clean relative slash-separated
// paths (ErrInvalid otherwise); deletes apply before upserts, so a path in
// both ends up present; of several upserts of one path the last wins;
// deleting an absent path is not an error. An upsert of an existing path
// replaces size, content type, checksum and UpdatedAt but keeps the row's
// CreatedAt, and UserUploaded is sticky (once set, a later sync does not
// clear it). Zero CreatedAt/UpdatedAt mean the commit's time.
type FileChanges struct {
	Upsert []ProjectFile
	Delete []string // paths
}

// ListOptions pages a listing: rows strictly after After (in the listing's
// order), at most Limit rows (0 means the implementation's default, 1000).
type ListOptions struct {
	Limit int
	After string
}

// Store is the metadata database. All methods are safe for concurrent use.
//
// Methods that take a project id return ErrNotFound for an unknown project
// (listings too, rather than an empty list). Times come back in UTC with
// microsecond precision, the precision both databases keep.
type Store interface {
	// CreateProject makes a project with a fresh id.
	CreateProject(ctx context.Context, name string) (Project, error)
	GetProject(ctx context.Context, projectID string) (Project, error)
	ListProjects(ctx context.Context) ([]Project, error)

	CreateToken(ctx context.Context, t Token) error
	// GetToken finds a token by the hex SHA-256 of its secret.
	GetToken(ctx context.Context, hash string) (Token, error)

	// MissingBlobs returns the ids (in input order, deduplicated) that the
	// project's index does not hold.
	MissingBlobs(ctx context.Context, projectID string, ids []id.ID) ([]id.ID, error)
	// AddPack records a verified pack and the blobs in it. It is idempotent:
	// adding the same pack again changes nothing. A blob already indexed in
	// another pack keeps its first location.
	AddPack(ctx context.Context, p Pack, blobs []BlobLocation) error
	// LocateBlobs returns the locations of the ids it knows; unknown ids are
	// absent from the map.
	LocateBlobs(ctx context.Context, projectID string, ids []id.ID) (map[id.ID]BlobLocation, error)

	// CommitVersion makes v the new head if v.Parent equals the current head
	// (0 for a project with no versions), otherwise it returns ErrConflict and
	// changes nothing. It assigns v.Number = head+1 and v.CreatedAt, and
	// applies changes to project_files in the same transaction.
	CommitVersion(ctx context.Context, v Version, changes FileChanges) (Version, error)
	GetVersion(ctx context.Context, projectID string, number int64) (Version, error)
	// HeadVersion returns the newest version, or ErrNotFound if there is none.
	HeadVersion(ctx context.Context, projectID string) (Version, error)
	// ListVersions returns versions newest first. opts.After, if set, is a
	// decimal version number: only older versions are returned.
	ListVersions(ctx context.Context, projectID string, opts ListOptions) ([]Version, error)

	// ListProjectFiles lists the head's files in path order (bytewise);
	// opts.After is a path. prefix is a plain string prefix ("dir/" for a
	// directory): no character in it is a wildcard.
	ListProjectFiles(ctx context.Context, projectID, prefix string, opts ListOptions) ([]ProjectFile, error)
	GetProjectFile(ctx context.Context, projectID, path string) (ProjectFile, error)

	Close() error
}
