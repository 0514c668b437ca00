// Package fsstore is a blobstore.Backend on a local directory: the embedded
// default of a single-node coordinator.
//
// Each key is one file under the directory, at the key's path ("a/b/c" is
// dir/a/b/c). All file access goes through an os.Root, so no key and no
// symbolic link inside the directory can reach outside it. Writes go to a
// temporary file in the target directory that is synced and then renamed
// over the key, so readers see the old object or the whole new one. Temporary
// file names contain a backslash, which no valid key does, so they can never
// collide with an object; a crash may leave some behind ("*\\tmp-*"), and List
// ignores them.
//
// Because keys are paths, a key cannot also be a "directory" of another key:
// with "a/b" stored, Put of "a" fails with ErrKeyConflict (and vice versa).
// S3-compatible stores backed by a file system (such as versitygw's posix
// backend) share this restriction; sandkeep's key layout never needs it.
//
// Signed URLs point at the store's own HTTP handler (see Store.Handler), which
// the coordinator mounts on its listener; they are signed with a urlsign.Signer.
package fsstore

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sandkeep/sandkeep/internal/blobstore"
	"github.com/sandkeep/sandkeep/internal/urlsign"
)

// ErrKeyConflict is returned (wrapped) by Put when the key, or one of its
// parent paths, is already used the other way round: as a directory of other
// keys, or as an object.
var ErrKeyConflict = errors.New("key conflicts with another key's path")

// BlobPath is the URL path under which Handler serves objects: a blob URL is
// BaseURL + BlobPath + key.
const BlobPath = "/v1/blobs/"

const (
	filePerm = 0o600
	dirPerm  = 0o700
	// tmpMarker starts every temporary file name; the backslash cannot occur
	// in a valid key.
	tmpMarker = "\\tmp-"
	// mkdirRetries bounds how often Put recreates a parent directory that a
	// concurrent Delete removed as empty.
	mkdirRetries = 10
)

// Options configures a Store. Both BaseURL and URLSigner are needed for
// signed URLs (SignPut, SignGet, Handler); leave both empty for a store that
// is only used directly.
type Options struct {
	// BaseURL is the scheme and host (and optional path prefix) under which
	// the coordinator serves Handler, e.g. "http://127.0.0.1:7421".
	BaseURL string
	// URLSigner signs and verifies the blob URLs.
	URLSigner *urlsign.Signer
	// Logger receives server-side errors from Handler; nil means
	// slog.Default().
	Logger *slog.Logger
	// AllowPut, if set, is asked before Handler stores an object through a
	// signed PUT URL; an error refuses the PUT (403) with its message. The
	// coordinator refuses keys of a deleted project: a URL handed out before
	// the deletion must not store anything after it.
	AllowPut func(ctx context.Context, key string) error
}

// Store is a blobstore.Backend on a local directory. It is safe for
// concurrent use, also by several Stores on the same directory in one
// process; it is not meant to be shared by several processes over a network
// file system.
type Store struct {
	dir     string
	root    *os.Root
	baseURL string
	signer  *urlsign.Signer
	log     *slog.Logger
	allow   func(ctx context.Context, key string) error
}

var (
	_ blobstore.Backend = (*Store)(nil)
)

// New opens (creating it if needed) the store in directory dir.
func New(dir string, opts Options) (*Store, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("fsstore: %w", err)
	}
	if (opts.BaseURL == "") != (opts.URLSigner == nil) {
		return nil, errors.New("fsstore: BaseURL and URLSigner must be set together")
	}
	base := strings.TrimRight(opts.BaseURL, "/")
	if base != "" {
		u, err := url.Parse(base)
		if err != nil {
			return nil, fmt.Errorf("fsstore: base URL: %w", err)
		}
		if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			return nil, fmt.Errorf("fsstore: base URL %q: want http(s)://host[:port][/path]", opts.BaseURL)
		}
	}
	if err := os.MkdirAll(abs, dirPerm); err != nil {
		return nil, fmt.Errorf("fsstore: %w", err)
	}
	if err := os.Chmod(abs, dirPerm); err != nil {
		return nil, fmt.Errorf("fsstore: %w", err)
	}
	root, err := os.OpenRoot(abs)
	if err != nil {
		return nil, fmt.Errorf("fsstore: %w", err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Store{dir: abs, root: root, baseURL: base, signer: opts.URLSigner, log: log, allow: opts.AllowPut}, nil
}

// Close releases the store's directory handle. The Store must not be used
// afterwards.
func (s *Store) Close() error {
	return s.root.Close()
}

// Name returns "fs:" followed by the store's absolute directory.
func (s *Store) Name() string { return "fs:" + s.dir }

// Put stores exactly size bytes from r under key, atomically.
func (s *Store) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	return s.put(ctx, key, r, size, false)
}

// create is Put that never replaces an object: if key exists it fails with
// blobstore.ErrExists and changes nothing (the signed PUT URLs use it).
func (s *Store) create(ctx context.Context, key string, r io.Reader, size int64) error {
	return s.put(ctx, key, r, size, true)
}

func (s *Store) put(ctx context.Context, key string, r io.Reader, size int64, exclusive bool) (err error) {
	if err := blobstore.ValidateKey(key); err != nil {
		return fmt.Errorf("fsstore: put: %w", err)
	}
	if size < 0 {
		return fmt.Errorf("fsstore: put %q: %w: negative size %d", key, blobstore.ErrSizeMismatch, size)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("fsstore: put %q: %w", key, err)
	}
	dir := path.Dir(key)
	f, tmp, err := s.createTemp(dir)
	if err != nil {
		return fmt.Errorf("fsstore: put %q: %w", key, err)
	}
	defer func() {
		if f != nil {
			f.Close()
		}
		if err != nil {
			if rerr := s.root.Remove(tmp); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
				s.log.WarnContext(ctx, "fsstore: removing temporary file", "dir", s.dir, "file", tmp, "err", rerr)
			}
		}
	}()

	cr := ctxReader{ctx: ctx, r: r}
	n, err := io.Copy(f, io.LimitReader(cr, size))
	if err != nil {
		return fmt.Errorf("fsstore: put %q: %w", key, err)
	}
	if n < size {
		return fmt.Errorf("fsstore: put %q: %w: reader yielded %d bytes, want %d", key, blobstore.ErrSizeMismatch, n, size)
	}
	var one [1]byte
	switch _, err := io.ReadFull(cr, one[:]); {
	case err == nil:
		return fmt.Errorf("fsstore: put %q: %w: reader yielded more than %d bytes", key, blobstore.ErrSizeMismatch, size)
	case err != io.EOF:
		return fmt.Errorf("fsstore: put %q: %w", key, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsstore: put %q: %w", key, err)
	}
	cerr := f.Close()
	f = nil
	if cerr != nil {
		return fmt.Errorf("fsstore: put %q: %w", key, cerr)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("fsstore: put %q: %w", key, err)
	}
	if exclusive {
		// A hard link fails if the name exists: the check and the publication
		// are one step. The temporary name is removed afterwards either way.
		if err := s.root.Link(tmp, key); err != nil {
			if errors.Is(err, fs.ErrExist) {
				if st, serr := s.root.Lstat(key); serr == nil && st.IsDir() {
					return fmt.Errorf("fsstore: put %q: %w: %w", key, ErrKeyConflict, err)
				}
				return fmt.Errorf("fsstore: put %q: %w", key, blobstore.ErrExists)
			}
			if isConflict(err) {
				err = fmt.Errorf("%w: %w", ErrKeyConflict, err)
			}
			return fmt.Errorf("fsstore: put %q: %w", key, err)
		}
		if rerr := s.root.Remove(tmp); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			s.log.WarnContext(ctx, "fsstore: removing temporary file", "dir", s.dir, "file", tmp, "err", rerr)
		}
	} else if err := s.root.Rename(tmp, key); err != nil {
		if isConflict(err) {
			err = fmt.Errorf("%w: %w", ErrKeyConflict, err)
		}
		return fmt.Errorf("fsstore: put %q: %w", key, err)
	}
	if err := s.syncDir(dir); err != nil {
		return fmt.Errorf("fsstore: put %q: %w", key, err)
	}
	return nil
}

// createTemp creates a new temporary file in dir (creating dir as needed).
func (s *Store) createTemp(dir string) (*os.File, string, error) {
	for attempt := 0; ; attempt++ {
		if dir != "." {
			if err := s.root.MkdirAll(dir, dirPerm); err != nil {
				// A concurrent Delete may have removed, as empty, a
				// directory MkdirAll had just made or found, before it made
				// the next level (ENOENT) or checked what it found (EEXIST
				// on a name that is gone): make them again. A name that
				// exists and is not a directory is a real conflict.
				if retry := errors.Is(err, fs.ErrNotExist) || (errors.Is(err, syscall.EEXIST) && s.dirOrGone(dir)); retry && attempt < mkdirRetries {
					continue
				}
				if isConflict(err) {
					err = fmt.Errorf("%w: %w", ErrKeyConflict, err)
				}
				return nil, "", err
			}
		}
		tmp := path.Join(dir, tmpMarker+rand.Text())
		f, err := s.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, filePerm)
		if err == nil {
			return f, tmp, nil
		}
		// Likewise, dir itself may have been removed between MkdirAll and
		// OpenFile.
		if !errors.Is(err, fs.ErrNotExist) || attempt >= mkdirRetries {
			return nil, "", err
		}
	}
}

// dirOrGone reports whether dir is a directory or does not exist (it, or
// a parent): what a concurrent Delete and Put may leave, unlike a file in
// the way.
func (s *Store) dirOrGone(dir string) bool {
	fi, err := s.root.Lstat(dir)
	return errors.Is(err, fs.ErrNotExist) || (err == nil && fi.IsDir())
}

func (s *Store) syncDir(dir string) error {
	d, err := s.root.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// open opens key for reading and returns the file and its size.
func (s *Store) open(ctx context.Context, key string) (*os.File, int64, error) {
	if err := blobstore.ValidateKey(key); err != nil {
		return nil, 0, err
	}
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	f, err := s.root.Open(key)
	if err != nil {
		return nil, 0, notFound(err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, 0, blobstore.ErrNotFound
	}
	return f, fi.Size(), nil
}

// Get returns a reader over length bytes of key from offset (a negative
// length reads to the end). The reader fails once ctx is done.
func (s *Store) Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	f, size, err := s.open(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("fsstore: get %q: %w", key, err)
	}
	n, err := blobstore.CheckRange(size, offset, length)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("fsstore: get %q: %w", key, err)
	}
	return &readCloser{
		Reader: ctxReader{ctx: ctx, r: io.NewSectionReader(f, offset, n)},
		Closer: f,
	}, nil
}

// Stat returns the size of key.
func (s *Store) Stat(ctx context.Context, key string) (int64, error) {
	if err := blobstore.ValidateKey(key); err != nil {
		return 0, fmt.Errorf("fsstore: stat: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("fsstore: stat %q: %w", key, err)
	}
	fi, err := s.root.Stat(key)
	if err != nil {
		return 0, fmt.Errorf("fsstore: stat %q: %w", key, notFound(err))
	}
	if !fi.Mode().IsRegular() {
		return 0, fmt.Errorf("fsstore: stat %q: %w", key, blobstore.ErrNotFound)
	}
	return fi.Size(), nil
}

// Delete removes key, and then any parent directories it leaves empty.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := blobstore.ValidateKey(key); err != nil {
		return fmt.Errorf("fsstore: delete: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("fsstore: delete %q: %w", key, err)
	}
	fi, err := s.root.Lstat(key)
	if err != nil {
		if errors.Is(notFound(err), blobstore.ErrNotFound) {
			return nil
		}
		return fmt.Errorf("fsstore: delete %q: %w", key, err)
	}
	if fi.IsDir() {
		return nil // a directory of other keys, not an object
	}
	if err := s.root.Remove(key); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("fsstore: delete %q: %w", key, err)
	}
	// Best effort: remove the parents this left empty. Removing a non-empty
	// directory fails, which ends the loop; Put copes with a directory
	// vanishing under it.
	for d := path.Dir(key); d != "."; d = path.Dir(d) {
		if fi, err := s.root.Lstat(d); err != nil || !fi.IsDir() {
			break
		}
		if err := s.root.Remove(d); err != nil {
			break
		}
	}
	return nil
}

// List calls fn for each object whose key starts with prefix, in lexical
// key order.
func (s *Store) List(ctx context.Context, prefix string, fn func(blobstore.Object) error) error {
	if err := blobstore.ValidatePrefix(prefix); err != nil {
		return fmt.Errorf("fsstore: list: %w", err)
	}
	dir, name := "", prefix
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		dir, name = prefix[:i+1], prefix[i+1:]
	}
	if err := s.walk(ctx, dir, name, fn); err != nil {
		return fmt.Errorf("fsstore: list %q: %w", prefix, err)
	}
	return nil
}

// walk lists dir ("" or ending in "/") recursively, visiting only entries
// whose names start with filter at the top level. Sorting directories by
// their name plus "/" makes the visiting order the lexical order of keys.
func (s *Store) walk(ctx context.Context, dir, filter string, fn func(blobstore.Object) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	d, err := s.root.Open(dirOrDot(dir))
	if err != nil {
		if errors.Is(notFound(err), blobstore.ErrNotFound) {
			return nil
		}
		return err
	}
	entries, err := d.ReadDir(-1)
	d.Close()
	if err != nil {
		return err
	}
	type entry struct {
		sortKey string
		e       fs.DirEntry
	}
	list := make([]entry, 0, len(entries))
	for _, e := range entries {
		n := e.Name()
		if !strings.HasPrefix(n, filter) || strings.Contains(n, tmpMarker) {
			continue
		}
		switch {
		case e.IsDir():
			list = append(list, entry{n + "/", e})
		case e.Type().IsRegular():
			list = append(list, entry{n, e})
		}
	}
	slices.SortFunc(list, func(a, b entry) int { return strings.Compare(a.sortKey, b.sortKey) })
	for _, x := range list {
		if err := ctx.Err(); err != nil {
			return err
		}
		key := dir + x.sortKey
		if x.e.IsDir() {
			if err := s.walk(ctx, key, "", fn); err != nil {
				return err
			}
			continue
		}
		if blobstore.ValidateKey(key) != nil {
			continue // a file that was not put here by a Store
		}
		fi, err := x.e.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // deleted meanwhile
			}
			return err
		}
		if err := fn(blobstore.Object{Key: key, Size: fi.Size(), ModTime: fi.ModTime()}); err != nil {
			return err
		}
	}
	return nil
}

// SignPut returns a URL through which one PUT of exactly size bytes stores
// key, valid for ttl. A ttl <= 0 gives a URL that has already expired.
func (s *Store) SignPut(ctx context.Context, key string, size int64, ttl time.Duration) (blobstore.SignedURL, error) {
	if size < 0 {
		return blobstore.SignedURL{}, fmt.Errorf("fsstore: sign put %q: negative size %d", key, size)
	}
	return s.sign(ctx, "PUT", key, ttl, url.Values{"size": {strconv.FormatInt(size, 10)}})
}

// SignGet returns a URL through which GETs (with an optional Range header)
// read key, valid for ttl. A ttl <= 0 gives a URL that has already expired.
func (s *Store) SignGet(ctx context.Context, key string, ttl time.Duration) (blobstore.SignedURL, error) {
	return s.sign(ctx, "GET", key, ttl, nil)
}

func (s *Store) sign(ctx context.Context, method, key string, ttl time.Duration, extra url.Values) (blobstore.SignedURL, error) {
	if err := blobstore.ValidateKey(key); err != nil {
		return blobstore.SignedURL{}, fmt.Errorf("fsstore: sign %s: %w", method, err)
	}
	if err := ctx.Err(); err != nil {
		return blobstore.SignedURL{}, fmt.Errorf("fsstore: sign %s %q: %w", method, key, err)
	}
	if s.signer == nil {
		return blobstore.SignedURL{}, fmt.Errorf("fsstore: sign %s %q: store has no BaseURL and URLSigner", method, key)
	}
	exp := expiry(time.Now(), ttl)
	q := s.signer.Sign(method, BlobPath+key, exp, extra)
	return blobstore.SignedURL{
		Method:  method,
		URL:     s.baseURL + BlobPath + escapeKey(key) + "?" + q,
		Expires: exp,
	}, nil
}

// expiry returns now+ttl in whole seconds: rounded up for a positive ttl (so
// the URL lives at least ttl), down otherwise (so it is already expired).
func expiry(now time.Time, ttl time.Duration) time.Time {
	e := now.Add(ttl)
	t := e.Truncate(time.Second)
	if ttl > 0 && t.Before(e) {
		t = t.Add(time.Second)
	}
	return t
}

func escapeKey(key string) string {
	segs := strings.Split(key, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return strings.Join(segs, "/")
}

// notFound maps "no such file" errors, including a parent path that is a
// file, to blobstore.ErrNotFound.
func notFound(err error) error {
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return fmt.Errorf("%w: %w", blobstore.ErrNotFound, err)
	}
	return err
}

func isConflict(err error) bool {
	return errors.Is(err, syscall.ENOTDIR) || errors.Is(err, syscall.EISDIR) ||
		errors.Is(err, syscall.EEXIST) || errors.Is(err, syscall.ENOTEMPTY)
}

func dirOrDot(dir string) string {
	if dir == "" {
		return "."
	}
	return dir
}

// ctxReader fails reads once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

type readCloser struct {
	io.Reader
	io.Closer
}
