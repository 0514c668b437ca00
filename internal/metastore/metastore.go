// Package metastore is the coordinator's metadata database: projects, tokens,
// the blob index (blob -> pack, offset, length), versions and the head
// version's file listing (project_files).
//
// Two implementations share one schema (see /migrations), one body of code
// (internal/sqlstore, over a driver each) and one conformance suite
// (metastoretest): SQLite (pure Go, the embedded default) and PostgreSQL
// (production; several coordinators over one database).
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
	// ErrMissing: a commit requires a blob (FileChanges.Requires) that the
	// project's index does not hold, or holds only in a condemned pack.
	ErrMissing = errors.New("referenced blob is not stored")
	// ErrStale: AddPack or MoveBlobs was told a pack epoch older than the
	// project's (garbage collection forgot packs since the caller verified
	// the object), or the pack is being deleted by garbage collection.
	// Nothing changed; verify the object again and retry.
	ErrStale = errors.New("pack state changed since the object was verified")
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
	// SandboxID is the lifecycle sandbox the token was made for ("" for a
	// token made with `sandkeep token create`).
	SandboxID string
	// LastUsedAt is when the token last authenticated a call (zero: never),
	// recorded at most about once a minute (TouchToken).
	LastUsedAt time.Time
}

// TokenID is the public name of a token: "tok_" and the first 16 hex
// characters of its hash. It says nothing about the secret and is what
// `sandkeep token list` shows and `token revoke` takes.
func TokenID(hash string) string {
	if len(hash) > 16 {
		hash = hash[:16]
	}
	return "tok_" + hash
}

// DeletedProject is a project DeleteProject removed.
type DeletedProject struct {
	ID        string
	DeletedAt time.Time
}

// Limits bound what one version of a project may expand to. A commit whose
// tree exceeds one is refused; a zero field means the default.
type Limits struct {
	MaxFiles int64 // regular files, symlinks and directories
	MaxBytes int64 // logical bytes: the sum of every file's size
	MaxDepth int   // path components of the deepest entry
}

// Default limits: far beyond any real workspace, far below what a forged
// tree could otherwise make a restore write.
const (
	DefaultMaxFiles = 5_000_000
	DefaultMaxBytes = 256 << 30
	DefaultMaxDepth = 256
)

// WithDefaults fills zero fields with the defaults.
func (l Limits) WithDefaults() Limits {
	if l.MaxFiles <= 0 {
		l.MaxFiles = DefaultMaxFiles
	}
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultMaxBytes
	}
	if l.MaxDepth <= 0 {
		l.MaxDepth = DefaultMaxDepth
	}
	return l
}

// BlobType distinguishes file data from tree blobs (values match package pack).
type BlobType uint8

const (
	BlobData BlobType = 1
	BlobTree BlobType = 2
)

// Pack is one stored pack object.
//
// A pack's life: live (indexed by AddPack or MoveBlobs), condemned by
// garbage collection when none of its indexed blobs is live (CondemnedAt
// set; its blobs still resolve for reads but count as missing for uploads
// and commits), then either un-condemned (a blob turned out live) or, after
// a grace period, deleting (DeletePacks: its blobs leave the index, GC
// deletes the object) and finally forgotten (DropPacks).
type Pack struct {
	ProjectID string
	ID        id.ID
	Type      BlobType // packs hold one type only
	Size      int64
	CreatedAt time.Time
	// CondemnedAt is when garbage collection condemned the pack; zero while
	// it is live. Set by CondemnPacks, cleared by UncondemnPacks and by
	// AddPack/MoveBlobs of the same pack. Ignored by AddPack and MoveBlobs.
	CondemnedAt time.Time
	// Deleting says garbage collection is deleting the pack's object
	// (DeletePacks was called and DropPacks not yet): its blobs are no
	// longer indexed. Ignored by AddPack and MoveBlobs.
	Deleting bool
	// Epoch is an input of AddPack and MoveBlobs (ListPacks leaves it 0): the
	// project's PackEpoch as read before the pack's object was last
	// verified, or written, in the blob store. See PackEpoch.
	Epoch int64
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
	// RawOffset is where a group member (codec pack.Group) starts in the
	// plaintext of its frame, whose stored bytes Offset and Length give;
	// 0 for other blobs.
	RawOffset int64
}

// VersionKind says why a version was made.
type VersionKind string

const (
	KindSync     VersionKind = "sync"
	KindFlush    VersionKind = "flush"
	KindRollback VersionKind = "rollback"
	// KindUpload: files put or deleted through the admin API (sandkeep put,
	// the console), without a sandbox.
	KindUpload VersionKind = "upload"
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
//
// Requires is not a file change but a condition checked in the commit's
// transaction: every blob in it must be indexed in a pack that is not
// condemned, otherwise the commit fails with ErrMissing and changes nothing.
// Garbage collection depends on it (see package gc): a commit lists the
// blobs its tree references that its parent's tree does not.
type FileChanges struct {
	Upsert   []ProjectFile
	Delete   []string // paths
	Requires []id.ID
}

// Retention says which versions of a project garbage collection keeps. A
// version is kept if any rule keeps it: it is among the KeepLast newest, it
// is younger than KeepWithin, it is pinned, or it is the head (always).
// Versions are never renumbered: deleting some leaves gaps.
type Retention struct {
	// KeepLast keeps the newest KeepLast versions (the head counts as one).
	// 0 keeps none by count.
	KeepLast int
	// KeepWithin keeps versions created less than KeepWithin ago. 0 keeps
	// none by age. Stored with microsecond precision.
	KeepWithin time.Duration
}

// Default retention of a project that has none set: the last 50 versions
// and every version of the last 30 days (plus pinned ones and the head).
const (
	DefaultKeepLast   = 50
	DefaultKeepWithin = 30 * 24 * time.Hour
)

// DefaultRetention is the retention of a project that has none set.
func DefaultRetention() Retention {
	return Retention{KeepLast: DefaultKeepLast, KeepWithin: DefaultKeepWithin}
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
	// DeleteProject deletes the project's row and with it, in the same
	// transaction, every row of the project (every table that has a
	// project_id cascades: tokens, packs and their blobs, versions, files,
	// retention, ...). The caller deletes the objects (repo.DeleteProject).
	DeleteProject(ctx context.Context, projectID string) error

	CreateToken(ctx context.Context, t Token) error
	// GetToken finds a token by the hex SHA-256 of its secret.
	GetToken(ctx context.Context, hash string) (Token, error)
	// RevokeProjectTokens revokes every token of the project and returns how
	// many were not revoked before.
	RevokeProjectTokens(ctx context.Context, projectID string) (int, error)
	// ListTokens lists the project's sandbox tokens (revoked ones too),
	// oldest first.
	ListTokens(ctx context.Context, projectID string) ([]Token, error)
	// RevokeTokenID revokes the token whose TokenID is tokenID and returns it
	// (revoked); ErrNotFound if no token has that id.
	RevokeTokenID(ctx context.Context, tokenID string) (Token, error)
	// TouchToken records that the token was used at at (no error for an
	// unknown hash).
	TouchToken(ctx context.Context, hash string, at time.Time) error

	// GetLimits returns the project's limits as set (zero fields: default).
	GetLimits(ctx context.Context, projectID string) (Limits, error)
	// SetLimits stores the project's limits (negative values are ErrInvalid).
	SetLimits(ctx context.Context, projectID string, l Limits) error

	// MissingBlobs returns the ids (in input order, deduplicated) that the
	// project's index does not hold, or holds only in a condemned pack (an
	// uploader then stores them again, in a new pack: see AddPack).
	MissingBlobs(ctx context.Context, projectID string, ids []id.ID) ([]id.ID, error)
	// AddPack records a verified pack and the blobs in it. It is idempotent:
	// adding the same pack again changes nothing, except that a condemned
	// pack is un-condemned (its object was just verified). A blob already
	// indexed in another pack keeps its first location, unless that pack is
	// condemned: then the blob moves to p.
	//
	// p.Epoch must be the project's PackEpoch read before the object was
	// verified (or written); if it is older, or the pack is being deleted,
	// AddPack fails with ErrStale and changes nothing.
	AddPack(ctx context.Context, p Pack, blobs []BlobLocation) error
	// LocateBlobs returns the locations of the ids it knows; unknown ids are
	// absent from the map. Blobs in condemned packs are located too.
	LocateBlobs(ctx context.Context, projectID string, ids []id.ID) (map[id.ID]BlobLocation, error)

	// ---- garbage collection (see package gc) ----

	// PackEpoch returns a counter of the project that DropPacks advances.
	// Whoever verifies (or writes) a pack object and then indexes it reads
	// the epoch first and passes it as Pack.Epoch: a pack id reused while
	// garbage collection deleted the same object cannot then be indexed
	// over a deleted object.
	PackEpoch(ctx context.Context, projectID string) (int64, error)
	// GetPacks returns the project's packs (every state) among ids; unknown
	// ids are absent from the map.
	GetPacks(ctx context.Context, projectID string, ids []id.ID) (map[id.ID]Pack, error)
	// ListPacks lists the project's packs in id order, every state; opts.After
	// is a hex pack id.
	ListPacks(ctx context.Context, projectID string, opts ListOptions) ([]Pack, error)
	// CondemnPacks marks the given live packs condemned at time at (packs
	// already condemned or deleting, and unknown ids, are left alone) and
	// returns how many it marked.
	CondemnPacks(ctx context.Context, projectID string, ids []id.ID, at time.Time) (int, error)
	// UncondemnPacks makes condemned packs live again and returns how many
	// it changed. Deleting packs stay deleting.
	UncondemnPacks(ctx context.Context, projectID string, ids []id.ID) (int, error)
	// MoveBlobs records pack p, written by garbage collection, and points
	// each blob of blobs that is currently indexed in one of the packs from
	// (or in a condemned pack) at its location in p. Blobs indexed elsewhere
	// or not at all are left alone. It returns how many blobs it moved.
	// p.Epoch works as for AddPack; a p that exists already is reused, and
	// un-condemned like AddPack does. (So index rows only ever move into a
	// pack that is live: package gc's safety argument relies on it.)
	MoveBlobs(ctx context.Context, p Pack, blobs []BlobLocation, from []id.ID) (int, error)
	// DeletePacks starts deleting each pack of packs (ID and CondemnedAt as
	// ListPacks reported them) that is still condemned, at exactly
	// CondemnedAt: it becomes deleting and its blobs leave the index, all in
	// one transaction. A pack un-condemned or condemned again since is left
	// alone. It returns the ids of packs that are deleting afterwards
	// (including ones that already were); the caller deletes their objects,
	// then calls DropPacks.
	DeletePacks(ctx context.Context, projectID string, packs []Pack) ([]id.ID, error)
	// DropPacks forgets deleting packs (other ids are left alone) and
	// advances the project's PackEpoch.
	DropPacks(ctx context.Context, projectID string, ids []id.ID) error
	// ClaimOrphans records each pack of packs that has no row as deleting
	// (type, size and CreatedAt as given), in one transaction, and returns
	// the ids it recorded: objects no row named, which the caller may now
	// delete and then DropPacks. Until then AddPack of such an id fails with
	// ErrStale, so an upload completed meanwhile cannot be indexed over an
	// object being deleted.
	ClaimOrphans(ctx context.Context, projectID string, packs []Pack) ([]id.ID, error)
	// DeletedProjects lists the projects DeleteProject deleted, with when,
	// oldest first; ForgetDeletedProject drops one from that list.
	DeletedProjects(ctx context.Context) ([]DeletedProject, error)
	ForgetDeletedProject(ctx context.Context, projectID string) error

	// GetRetention returns the project's retention, DefaultRetention() if
	// none was set.
	GetRetention(ctx context.Context, projectID string) (Retention, error)
	// SetRetention stores the project's retention (negative values are
	// ErrInvalid).
	SetRetention(ctx context.Context, projectID string, r Retention) error
	// SetPinned pins or unpins a version; pinned versions are never deleted.
	SetPinned(ctx context.Context, projectID string, number int64, pinned bool) error
	// DeleteVersions deletes the listed versions, except the head and pinned
	// ones, and returns the numbers it deleted, ascending. Unknown numbers
	// are ignored.
	DeleteVersions(ctx context.Context, projectID string, numbers []int64) ([]int64, error)

	// CommitVersion makes v the new head if v.Parent equals the current head
	// (0 for a project with no versions), otherwise it returns ErrConflict and
	// changes nothing. It assigns v.Number = head+1 and v.CreatedAt, and
	// applies changes to project_files in the same transaction. If a blob of
	// changes.Requires is not stored in a live pack it returns ErrMissing and
	// changes nothing; that check is atomic with the commit and with the
	// garbage collection calls (CondemnPacks, DeletePacks, ...).
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

	// ForgetBlobs removes the index rows of ids that point into pack packID
	// (chunks a check found bad there, or whose pack object is gone), under
	// the project's lock like the garbage collection calls: MissingBlobs
	// then reports them missing, so an agent that has them uploads them
	// again, and versions naming them restore once it has. It returns how
	// many rows it removed.
	ForgetBlobs(ctx context.Context, projectID string, packID id.ID, ids []id.ID) (int, error)

	// Rebuilding the database from the bucket (repo.Rebuild). Each call is
	// idempotent, so a rebuild can be run again or resumed.
	//
	// ImportProject creates the project with p's id, name and creation
	// time and head 0, unless a project of that id exists (kept as it is).
	// A name another project holds is ErrAlreadyExists.
	ImportProject(ctx context.Context, p Project) error
	// ImportVersion records v as it was (number, parent, root, kind,
	// sandbox, time, totals, pin) unless the project has that number
	// (kept). It does not move the head. An unknown project is ErrNotFound.
	ImportVersion(ctx context.Context, v Version) error
	// SetHead makes head (an existing version, or 0 with no file) the
	// project's head and files its whole file listing, in one transaction.
	SetHead(ctx context.Context, projectID string, head int64, files []ProjectFile) error

	Close() error
}
