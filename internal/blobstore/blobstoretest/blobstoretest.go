// Package blobstoretest is the conformance suite every blobstore.Backend
// passes. A backend's tests call Run with a constructor for fresh, empty
// stores:
//
//	func TestConformance(t *testing.T) {
//		blobstoretest.Run(t, func(t *testing.T) blobstore.Backend { ... })
//	}
//
// The suite is deterministic: it never sleeps, and expired URLs are made by
// signing with a negative ttl.
package blobstoretest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sandkeep/sandkeep/internal/blobstore"
)

// Run runs the conformance suite. newStore must return a new, empty store
// for the test it is given (and clean up after it with t.Cleanup); it is
// called once per subtest, from parallel subtests. Signed URLs are exercised
// through a real net/http client, so the store's URLs must be reachable.
func Run(t *testing.T, newStore func(t *testing.T) blobstore.Backend) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s blobstore.Backend)
	}{
		{"Name", testName},
		{"RoundTrip", testRoundTrip},
		{"LongKey", testLongKey},
		{"Ranges", testRanges},
		{"ZeroByte", testZeroByte},
		{"Overwrite", testOverwrite},
		{"SizeMismatch", testSizeMismatch},
		{"ReaderError", testReaderError},
		{"NotFound", testNotFound},
		{"List", testList},
		{"ListStops", testListStops},
		{"HostileKeys", testHostileKeys},
		{"Cancellation", testCancellation},
		{"Concurrency", testConcurrency},
		{"ConcurrentOverwrite", testConcurrentOverwrite},
		{"DeletePrefix", testDeletePrefix},
		{"DeletePrefixMany", testDeletePrefixMany},
		{"SignedURLs", testSignedURLs},
		{"SignedURLExpired", testSignedURLExpired},
		{"SignedPutWrongSize", testSignedPutWrongSize},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.fn(t, newStore(t))
		})
	}
}

// data returns n deterministic pseudo-random bytes for seed.
func data(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// onlyReader hides every method but Read (notably Seek and WriteTo).
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

// readers returns the two kinds of reader a Put must handle: a seekable
// bytes.Reader and a plain stream.
func readers(b []byte) map[string]func() io.Reader {
	return map[string]func() io.Reader{
		"seekable": func() io.Reader { return bytes.NewReader(b) },
		"stream":   func() io.Reader { return onlyReader{bytes.NewReader(b)} },
	}
}

func put(t *testing.T, s blobstore.Store, key string, b []byte) {
	t.Helper()
	if err := s.Put(t.Context(), key, bytes.NewReader(b), int64(len(b))); err != nil {
		t.Fatalf("Put(%q, %d bytes): %v", key, len(b), err)
	}
}

func get(t *testing.T, s blobstore.Store, key string, off, n int64) []byte {
	t.Helper()
	rc, err := s.Get(t.Context(), key, off, n)
	if err != nil {
		t.Fatalf("Get(%q, %d, %d): %v", key, off, n, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("Get(%q, %d, %d): read: %v", key, off, n, err)
	}
	return b
}

func wantContent(t *testing.T, s blobstore.Store, key string, want []byte) {
	t.Helper()
	if got := get(t, s, key, 0, -1); !bytes.Equal(got, want) {
		t.Fatalf("Get(%q) = %d bytes %s, want %d bytes %s", key, len(got), short(got), len(want), short(want))
	}
	size, err := s.Stat(t.Context(), key)
	if err != nil {
		t.Fatalf("Stat(%q): %v", key, err)
	}
	if size != int64(len(want)) {
		t.Fatalf("Stat(%q) = %d, want %d", key, size, len(want))
	}
}

func wantMissing(t *testing.T, s blobstore.Store, key string) {
	t.Helper()
	if _, err := s.Stat(t.Context(), key); !errors.Is(err, blobstore.ErrNotFound) {
		t.Fatalf("Stat(%q) = %v, want ErrNotFound", key, err)
	}
	rc, err := s.Get(t.Context(), key, 0, -1)
	if err == nil {
		rc.Close()
	}
	if !errors.Is(err, blobstore.ErrNotFound) {
		t.Fatalf("Get(%q) = %v, want ErrNotFound", key, err)
	}
}

func list(t *testing.T, s blobstore.Store, prefix string) []blobstore.Object {
	t.Helper()
	var objs []blobstore.Object
	err := s.List(t.Context(), prefix, func(o blobstore.Object) error {
		// Every listed object says when it was stored (garbage collection
		// deletes orphans older than its grace by it); the tests store
		// everything within minutes.
		if d := time.Since(o.ModTime); o.ModTime.IsZero() || d > time.Hour || d < -time.Hour {
			t.Errorf("List(%q): %s has ModTime %v, want about now", prefix, o.Key, o.ModTime)
		}
		o.ModTime = time.Time{}
		objs = append(objs, o)
		return nil
	})
	if err != nil {
		t.Fatalf("List(%q): %v", prefix, err)
	}
	return objs
}

func short(b []byte) string {
	if len(b) > 16 {
		return fmt.Sprintf("%x…", b[:16])
	}
	return fmt.Sprintf("%x", b)
}

func testName(t *testing.T, s blobstore.Backend) {
	if s.Name() == "" {
		t.Error("Name() is empty")
	}
}

func testRoundTrip(t *testing.T, s blobstore.Backend) {
	ctx := t.Context()
	for i, n := range []int{1, 1000, 1<<20 + 7} {
		for kind, r := range readers(data(uint64(i), n)) {
			key := fmt.Sprintf("projects/p1/packs/%02x/%s-%d", i, kind, n)
			b := data(uint64(i), n)
			if err := s.Put(ctx, key, r(), int64(n)); err != nil {
				t.Fatalf("Put(%q): %v", key, err)
			}
			wantContent(t, s, key, b)
			if err := s.Delete(ctx, key); err != nil {
				t.Fatalf("Delete(%q): %v", key, err)
			}
			wantMissing(t, s, key)
		}
	}
	// Odd but valid characters survive storage and listing.
	key := "odd/sp ace/ünï+cödé/%2F?#&=;,'\"!$()*@[]{}|^`<>/x.y..z"
	put(t, s, key, []byte("odd"))
	wantContent(t, s, key, []byte("odd"))
	if objs := list(t, s, "odd/"); len(objs) != 1 || objs[0].Key != key || objs[0].Size != 3 {
		t.Fatalf("List(odd/) = %v, want [%q 3]", objs, key)
	}
}

func testLongKey(t *testing.T, s blobstore.Backend) {
	// MaxKeyLen bytes in segments a file system accepts (<= 255 bytes).
	var segs []string
	left := blobstore.MaxKeyLen
	for i := 0; left > 0; i++ {
		n := min(200, left)
		if left-n > 0 {
			n = min(n, left-2) // leave room for "/" and one more byte
		}
		segs = append(segs, strings.Repeat(string(rune('a'+i)), n))
		left -= n
		if left > 0 {
			left-- // the "/"
		}
	}
	key := strings.Join(segs, "/")
	if len(key) != blobstore.MaxKeyLen {
		t.Fatalf("test bug: key is %d bytes", len(key))
	}
	put(t, s, key, []byte("long"))
	wantContent(t, s, key, []byte("long"))
	if objs := list(t, s, key[:300]); len(objs) != 1 || objs[0].Key != key {
		t.Fatalf("List = %v, want the long key", objs)
	}
}

func testRanges(t *testing.T, s blobstore.Backend) {
	const key = "ranges/obj"
	b := data(7, 1000)
	put(t, s, key, b)
	tests := []struct {
		off, n int64
		ok     bool
	}{
		{0, 10, true},       // start
		{0, -1, true},       // whole
		{0, 1000, true},     // whole, explicit
		{500, 100, true},    // middle
		{990, -1, true},     // to the end
		{990, 10, true},     // exactly to the end
		{999, 1, true},      // last byte
		{1000, -1, true},    // empty, at the end
		{1000, 0, true},     // empty, at the end
		{0, 0, true},        // empty, at the start
		{990, 11, false},    // one past the end
		{1000, 1, false},    // starting at the end
		{1001, -1, false},   // starting past the end
		{5000, 10, false},   // far past the end
		{-1, 10, false},     // negative offset
		{-1, -1, false},     // negative offset, to the end
		{0, 1 << 40, false}, // huge
	}
	for _, tt := range tests {
		rc, err := s.Get(t.Context(), key, tt.off, tt.n)
		if !tt.ok {
			if err == nil {
				rc.Close()
			}
			if !errors.Is(err, blobstore.ErrInvalidRange) {
				t.Errorf("Get(%d, %d) = %v, want ErrInvalidRange", tt.off, tt.n, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("Get(%d, %d): %v", tt.off, tt.n, err)
			continue
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Errorf("Get(%d, %d): read: %v", tt.off, tt.n, err)
			continue
		}
		end := int64(len(b))
		if tt.n >= 0 {
			end = tt.off + tt.n
		}
		if want := b[tt.off:end]; !bytes.Equal(got, want) {
			t.Errorf("Get(%d, %d) = %d bytes %s, want %d bytes %s", tt.off, tt.n, len(got), short(got), len(want), short(want))
		}
	}
	// A range of a missing object is ErrNotFound, not a range error.
	rc, err := s.Get(t.Context(), "ranges/missing", 10, 10)
	if err == nil {
		rc.Close()
	}
	if !errors.Is(err, blobstore.ErrNotFound) {
		t.Errorf("Get(missing, 10, 10) = %v, want ErrNotFound", err)
	}
}

func testZeroByte(t *testing.T, s blobstore.Backend) {
	for kind, r := range readers(nil) {
		key := "zero/" + kind
		if err := s.Put(t.Context(), key, r(), 0); err != nil {
			t.Fatalf("Put(%q, 0 bytes): %v", key, err)
		}
		wantContent(t, s, key, nil)
		if got := get(t, s, key, 0, 0); len(got) != 0 {
			t.Errorf("Get(%q, 0, 0) = %d bytes", key, len(got))
		}
		rc, err := s.Get(t.Context(), key, 0, 1)
		if err == nil {
			rc.Close()
		}
		if !errors.Is(err, blobstore.ErrInvalidRange) {
			t.Errorf("Get(%q, 0, 1) = %v, want ErrInvalidRange", key, err)
		}
	}
	want := []blobstore.Object{{Key: "zero/seekable", Size: 0}, {Key: "zero/stream", Size: 0}}
	if got := list(t, s, "zero/"); !slices.Equal(got, want) {
		t.Errorf("List(zero/) = %v, want %v", got, want)
	}
}

func testOverwrite(t *testing.T, s blobstore.Backend) {
	const key = "over/write"
	put(t, s, key, data(1, 5000))
	put(t, s, key, data(2, 10))
	wantContent(t, s, key, data(2, 10))
	put(t, s, key, nil)
	wantContent(t, s, key, nil)
	put(t, s, key, data(3, 70000))
	wantContent(t, s, key, data(3, 70000))
	if got := list(t, s, "over/"); len(got) != 1 {
		t.Errorf("List after overwrites = %v, want one object", got)
	}
}

func testSizeMismatch(t *testing.T, s blobstore.Backend) {
	ctx := t.Context()
	b := data(4, 100000)
	for kind, r := range readers(b) {
		for _, tt := range []struct {
			name string
			size int64
		}{
			{"short", int64(len(b)) + 1}, // reader yields fewer bytes
			{"long", int64(len(b)) - 1},  // reader yields more bytes
			{"empty", 0},                 // reader yields bytes for an empty object
		} {
			key := "mismatch/" + kind + "/" + tt.name
			err := s.Put(ctx, key, r(), tt.size)
			if !errors.Is(err, blobstore.ErrSizeMismatch) {
				t.Errorf("Put(%q) of %d bytes as %d = %v, want ErrSizeMismatch", key, len(b), tt.size, err)
			}
			wantMissing(t, s, key)

			// A failed overwrite leaves the old object in place.
			old := data(5, 33)
			put(t, s, key, old)
			if err := s.Put(ctx, key, r(), tt.size); !errors.Is(err, blobstore.ErrSizeMismatch) {
				t.Errorf("overwriting Put(%q) of %d bytes as %d = %v, want ErrSizeMismatch", key, len(b), tt.size, err)
			}
			wantContent(t, s, key, old)
		}
		key := "mismatch/" + kind + "/negative"
		if err := s.Put(ctx, key, r(), -1); err == nil {
			t.Errorf("Put(%q, size -1) succeeded", key)
		}
		wantMissing(t, s, key)
	}
	// Nothing else (no temporary or partial object) is visible.
	for _, o := range list(t, s, "") {
		if !strings.HasSuffix(o.Key, "/short") && !strings.HasSuffix(o.Key, "/long") && !strings.HasSuffix(o.Key, "/empty") {
			t.Errorf("unexpected object after failed puts: %v", o)
		}
	}
}

// failingReader yields n bytes of data and then err.
type failingReader struct {
	b   []byte
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if len(f.b) == 0 {
		return 0, f.err
	}
	n := copy(p, f.b)
	f.b = f.b[n:]
	return n, nil
}

func testReaderError(t *testing.T, s blobstore.Backend) {
	errBoom := errors.New("boom")
	const key = "readerr/x"
	err := s.Put(t.Context(), key, &failingReader{b: data(6, 70000), err: errBoom}, 100000)
	if err == nil {
		t.Fatal("Put with a failing reader succeeded")
	}
	wantMissing(t, s, key)
	if got := list(t, s, ""); len(got) != 0 {
		t.Errorf("List after a failed put = %v, want nothing", got)
	}
}

func testNotFound(t *testing.T, s blobstore.Backend) {
	ctx := t.Context()
	wantMissing(t, s, "nf/missing")
	put(t, s, "nf/file", []byte("x"))
	// Below an object, beside an object, and a "directory" of objects.
	wantMissing(t, s, "nf/file/below")
	wantMissing(t, s, "nf/fil")
	wantMissing(t, s, "nf")
	for _, key := range []string{"nf/missing", "nf/file/below", "nf"} {
		if err := s.Delete(ctx, key); err != nil {
			t.Errorf("Delete(%q) of a missing key = %v, want nil", key, err)
		}
	}
	wantContent(t, s, "nf/file", []byte("x"))
	for range 2 {
		if err := s.Delete(ctx, "nf/file"); err != nil {
			t.Errorf("Delete(nf/file) = %v", err)
		}
	}
	wantMissing(t, s, "nf/file")
}

func testList(t *testing.T, s blobstore.Backend) {
	// Keys whose lexical order differs from a per-directory walk: '-' and
	// '.' sort before '/', which sorts before letters.
	keys := []string{
		"a-c", "a.b", "a/b-x", "a/b.x", "a/b/c", "a/b/d/e", "a/bc", "a/bc.d/e",
		"a0/x", "aa", "b", "z/a b", "z/ä", "z/é/f", "z~",
	}
	sizes := map[string]int64{}
	for i, k := range slices.Backward(keys) { // store in reverse, list sorted
		sizes[k] = int64(i * 3)
		put(t, s, k, data(uint64(i), i*3))
	}
	want := func(prefix string) []blobstore.Object {
		var objs []blobstore.Object
		for _, k := range keys {
			if strings.HasPrefix(k, prefix) {
				objs = append(objs, blobstore.Object{Key: k, Size: sizes[k]})
			}
		}
		return objs
	}
	if !slices.IsSorted(keys) {
		t.Fatal("test bug: keys not sorted")
	}
	for _, prefix := range []string{
		"", "a", "a/", "a/b", "a/b/", "a/bc", "a/bc/", "a/bc.", "a/b/d/", "a/b/d/e", "a/b/d/e/",
		"z/", "z/ä", "z/é/", "nothing", "nothing/", "b/", "a0/x/",
	} {
		if got, want := list(t, s, prefix), want(prefix); !slices.Equal(got, want) {
			t.Errorf("List(%q) =\n\t%v\nwant\n\t%v", prefix, got, want)
		}
	}
}

func testListStops(t *testing.T, s blobstore.Backend) {
	for _, k := range []string{"s/1", "s/2", "s/3"} {
		put(t, s, k, []byte(k))
	}
	errStop := errors.New("stop")
	calls := 0
	err := s.List(t.Context(), "s/", func(o blobstore.Object) error {
		calls++
		return errStop
	})
	if !errors.Is(err, errStop) || calls != 1 {
		t.Errorf("List with a failing fn = %v after %d calls, want errStop after 1", err, calls)
	}
}

// hostileKeys are invalid keys, many of them attempts to leave a directory.
var hostileKeys = []string{
	"", "/", "/etc/passwd", "../x", "..", ".", "a/../../x", "a/..", "a/./b", "./a",
	"a//b", "a/", "//a", "a\\b", "..\\..\\x", "a\x00b", "a/\x00", "a\nb", "a\rb",
	"\xff\xfe", strings.Repeat("k", blobstore.MaxKeyLen+1),
}

// panicReader fails the test if a store reads it.
type panicReader struct{ t *testing.T }

func (p panicReader) Read([]byte) (int, error) {
	p.t.Errorf("store read the body of a Put with an invalid key")
	return 0, io.EOF
}

func testHostileKeys(t *testing.T, s blobstore.Backend) {
	ctx := t.Context()
	isInvalid := func(op, key string, err error) {
		t.Helper()
		if !errors.Is(err, blobstore.ErrInvalidKey) {
			t.Errorf("%s(%q) = %v, want ErrInvalidKey", op, key, err)
		}
	}
	for _, key := range hostileKeys {
		isInvalid("Put", key, s.Put(ctx, key, panicReader{t}, 1))
		rc, err := s.Get(ctx, key, 0, -1)
		if err == nil {
			rc.Close()
		}
		isInvalid("Get", key, err)
		_, err = s.Stat(ctx, key)
		isInvalid("Stat", key, err)
		isInvalid("Delete", key, s.Delete(ctx, key))
		_, err = s.SignPut(ctx, key, 1, time.Minute)
		isInvalid("SignPut", key, err)
		_, err = s.SignGet(ctx, key, time.Minute)
		isInvalid("SignGet", key, err)
	}
	for _, prefix := range []string{"/", "/a", "../", "a/../", "a//", "a\\", "a\x00", "./"} {
		isInvalid("List", prefix, s.List(ctx, prefix, func(blobstore.Object) error {
			t.Errorf("List(%q) listed something", prefix)
			return nil
		}))
		_, _, err := blobstore.DeletePrefix(ctx, s, prefix)
		isInvalid("DeletePrefix", prefix, err)
	}
	if got := list(t, s, ""); len(got) != 0 {
		t.Errorf("store not empty after hostile keys: %v", got)
	}
}

func testCancellation(t *testing.T, s blobstore.Backend) {
	put(t, s, "cancel/x", []byte("x"))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	isCanceled := func(op string, err error) {
		t.Helper()
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a canceled context = %v, want context.Canceled", op, err)
		}
	}
	isCanceled("Put", s.Put(ctx, "cancel/y", bytes.NewReader([]byte("y")), 1))
	rc, err := s.Get(ctx, "cancel/x", 0, -1)
	if err == nil {
		rc.Close()
	}
	isCanceled("Get", err)
	_, err = s.Stat(ctx, "cancel/x")
	isCanceled("Stat", err)
	isCanceled("Delete", s.Delete(ctx, "cancel/x"))
	isCanceled("List", s.List(ctx, "", func(blobstore.Object) error { return nil }))
	_, _, err = blobstore.DeletePrefix(ctx, s, "cancel/")
	isCanceled("DeletePrefix", err)
	wantContent(t, s, "cancel/x", []byte("x"))
	wantMissing(t, s, "cancel/y")

	// Cancellation in the middle of a Put's body stores nothing.
	ctx, cancel = context.WithCancel(t.Context())
	defer cancel()
	r := &cancelReader{b: data(8, 200000), at: 100000, cancel: cancel}
	if err := s.Put(ctx, "cancel/mid", r, 200000); err == nil {
		t.Error("Put canceled half way succeeded")
	}
	wantMissing(t, s, "cancel/mid")

	// Cancellation between listed objects stops the listing.
	put(t, s, "cancel/z", []byte("z"))
	ctx, cancel = context.WithCancel(t.Context())
	defer cancel()
	calls := 0
	err = s.List(ctx, "cancel/", func(blobstore.Object) error {
		calls++
		cancel()
		return nil
	})
	if !errors.Is(err, context.Canceled) || calls != 1 {
		t.Errorf("List canceled in fn = %v after %d calls, want context.Canceled after 1", err, calls)
	}
}

// cancelReader yields b, but cancels the context once at bytes have been
// read and then fails with the context's error.
type cancelReader struct {
	b      []byte
	at     int
	cancel context.CancelFunc
	off    int
}

func (c *cancelReader) Read(p []byte) (int, error) {
	if c.off >= c.at {
		c.cancel()
		return 0, context.Canceled
	}
	n := copy(p, c.b[c.off:c.at])
	c.off += n
	return n, nil
}

func testConcurrency(t *testing.T, s blobstore.Backend) {
	const workers, rounds = 12, 4
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			ctx := t.Context()
			for r := range rounds {
				// Shared parent directories, distinct keys.
				key := fmt.Sprintf("conc/%d/%d", r%2, w)
				b := data(uint64(w*100+r), 1000+w*r*97)
				if err := s.Put(ctx, key, bytes.NewReader(b), int64(len(b))); err != nil {
					errs <- fmt.Errorf("Put(%q): %w", key, err)
					return
				}
				rc, err := s.Get(ctx, key, 0, -1)
				if err != nil {
					errs <- fmt.Errorf("Get(%q): %w", key, err)
					return
				}
				got, err := io.ReadAll(rc)
				rc.Close()
				if err != nil || !bytes.Equal(got, b) {
					errs <- fmt.Errorf("Get(%q) = %d bytes, %v; want %d bytes", key, len(got), err, len(b))
					return
				}
				if r%2 == 1 {
					if err := s.Delete(ctx, key); err != nil {
						errs <- fmt.Errorf("Delete(%q): %w", key, err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := list(t, s, "conc/"); len(got) != workers {
		t.Errorf("List(conc/) = %d objects, want %d", len(got), workers)
	}
}

// testConcurrentOverwrite checks that Put is atomic: readers racing with
// writers of one key see a whole version, never a mix or a prefix.
func testConcurrentOverwrite(t *testing.T, s blobstore.Backend) {
	const key = "atomic/key"
	versions := make([][]byte, 6)
	for i := range versions {
		versions[i] = data(uint64(1000+i), 20000+i*13001)
	}
	put(t, s, key, versions[0])
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := 1; i < len(versions); i++ {
		wg.Go(func() {
			for range 3 {
				if err := s.Put(t.Context(), key, bytes.NewReader(versions[i]), int64(len(versions[i]))); err != nil {
					errs <- fmt.Errorf("put version %d: %w", i, err)
					return
				}
			}
		})
	}
	for range 4 {
		wg.Go(func() {
			for range 10 {
				rc, err := s.Get(t.Context(), key, 0, -1)
				if err != nil {
					errs <- fmt.Errorf("get: %w", err)
					return
				}
				got, err := io.ReadAll(rc)
				rc.Close()
				if err != nil {
					errs <- fmt.Errorf("get: read: %w", err)
					return
				}
				if !slices.ContainsFunc(versions, func(v []byte) bool { return bytes.Equal(v, got) }) {
					errs <- fmt.Errorf("get returned %d bytes that are no version of the object", len(got))
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func testDeletePrefix(t *testing.T, s blobstore.Backend) {
	ctx := t.Context()
	objs := map[string]int{"p/a/1": 10, "p/a/2/x": 20, "p/ab": 5, "p/a.b": 7, "q/a/1": 1}
	for k, n := range objs {
		put(t, s, k, data(1, n))
	}
	n, b, err := blobstore.DeletePrefix(ctx, s, "p/a/")
	if err != nil || n != 2 || b != 30 {
		t.Fatalf("DeletePrefix(p/a/) = %d, %d, %v; want 2, 30, nil", n, b, err)
	}
	want := []blobstore.Object{{Key: "p/a.b", Size: 7}, {Key: "p/ab", Size: 5}, {Key: "q/a/1", Size: 1}}
	if got := list(t, s, ""); !slices.Equal(got, want) {
		t.Fatalf("after DeletePrefix(p/a/): List = %v, want %v", got, want)
	}
	if n, b, err = blobstore.DeletePrefix(ctx, s, "p/a/"); err != nil || n != 0 || b != 0 {
		t.Fatalf("second DeletePrefix(p/a/) = %d, %d, %v; want 0, 0, nil", n, b, err)
	}
	// A partial segment matches like List.
	if n, b, err = blobstore.DeletePrefix(ctx, s, "p/a"); err != nil || n != 2 || b != 12 {
		t.Fatalf("DeletePrefix(p/a) = %d, %d, %v; want 2, 12, nil", n, b, err)
	}
	if _, _, err := blobstore.DeletePrefix(ctx, s, ""); !errors.Is(err, blobstore.ErrInvalidKey) {
		t.Fatalf("DeletePrefix(\"\") = %v, want ErrInvalidKey", err)
	}
	if got := list(t, s, ""); !slices.Equal(got, want[2:]) {
		t.Fatalf("after DeletePrefix(p/a): List = %v, want %v", got, want[2:])
	}
}

// testDeletePrefixMany deletes more objects than one S3 DeleteObjects batch.
func testDeletePrefixMany(t *testing.T, s blobstore.Backend) {
	const count = 1003
	keys := make(chan string)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			for k := range keys {
				if err := s.Put(t.Context(), k, bytes.NewReader([]byte{1, 2}), 2); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	for i := range count {
		keys <- fmt.Sprintf("many/%02x/%d", i%7, i)
	}
	close(keys)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	put(t, s, "manyother", []byte("keep"))
	n, b, err := blobstore.DeletePrefix(t.Context(), s, "many/")
	if err != nil || n != count || b != 2*count {
		t.Fatalf("DeletePrefix(many/) = %d, %d, %v; want %d, %d, nil", n, b, err, count, 2*count)
	}
	want := []blobstore.Object{{Key: "manyother", Size: 4}}
	if got := list(t, s, ""); !slices.Equal(got, want) {
		t.Fatalf("after DeletePrefix: List = %v, want %v", got, want)
	}
}

func do(t *testing.T, u blobstore.SignedURL, body []byte, size int64, rangeHeader string) (int, []byte) {
	t.Helper()
	var r io.Reader
	if body != nil {
		r = onlyReader{bytes.NewReader(body)} // no shortcuts: a plain stream
	}
	req, err := u.NewRequest(t.Context(), r, size)
	if err != nil {
		t.Fatalf("NewRequest: %v", err)
	}
	if rangeHeader != "" {
		req.Header.Set("Range", rangeHeader)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", u.Method, u.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading response: %v", u.Method, u.URL, err)
	}
	return resp.StatusCode, b
}

// refusedByClose is what doPut reports when the server refused a PUT by
// answering and closing before it had read the body: the client sees its
// write fail (connection reset, broken pipe) instead of the answer. The
// object was not replaced either way; the tests check its content after.
const refusedByClose = -1

// doPut is do for a PUT the server may refuse early.
func doPut(t *testing.T, u blobstore.SignedURL, body []byte) (int, []byte) {
	t.Helper()
	req, err := u.NewRequest(t.Context(), onlyReader{bytes.NewReader(body)}, int64(len(body)))
	if err != nil {
		t.Fatalf("NewRequest: %v", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
			return refusedByClose, []byte(err.Error())
		}
		t.Fatalf("%s %s: %v", u.Method, u.URL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func checkSigned(t *testing.T, u blobstore.SignedURL, method string, ttl time.Duration, before, after time.Time) {
	t.Helper()
	if u.Method != method {
		t.Errorf("signed URL method = %q, want %q", u.Method, method)
	}
	if !strings.HasPrefix(u.URL, "http://") && !strings.HasPrefix(u.URL, "https://") {
		t.Errorf("signed URL %q is not an absolute http(s) URL", u.URL)
	}
	lo, hi := before.Add(ttl).Add(-time.Second), after.Add(ttl).Add(time.Second)
	if u.Expires.Before(lo) || u.Expires.After(hi) {
		t.Errorf("signed URL expires at %v, want within [%v, %v]", u.Expires, lo, hi)
	}
}

func testSignedURLs(t *testing.T, s blobstore.Backend) {
	ctx := t.Context()
	const key = "signed/projects/p/packs/ab/pack 1"
	b := data(9, 300000)

	before := time.Now()
	pu, err := s.SignPut(ctx, key, int64(len(b)), 10*time.Minute)
	if err != nil {
		t.Fatalf("SignPut: %v", err)
	}
	checkSigned(t, pu, http.MethodPut, 10*time.Minute, before, time.Now())
	if code, resp := do(t, pu, b, int64(len(b)), ""); code/100 != 2 {
		t.Fatalf("PUT via signed URL: %d %s", code, resp)
	}
	wantContent(t, s, key, b)

	before = time.Now()
	gu, err := s.SignGet(ctx, key, 5*time.Minute)
	if err != nil {
		t.Fatalf("SignGet: %v", err)
	}
	checkSigned(t, gu, http.MethodGet, 5*time.Minute, before, time.Now())
	n := len(b)
	for _, tt := range []struct {
		rng  string
		code int
		want []byte
	}{
		{"", http.StatusOK, b},
		{"bytes=10-19", http.StatusPartialContent, b[10:20]},
		{"bytes=0-0", http.StatusPartialContent, b[:1]},
		{"bytes=150000-", http.StatusPartialContent, b[150000:]},
		{"bytes=-5", http.StatusPartialContent, b[n-5:]},
		{fmt.Sprintf("bytes=%d-%d", n-100, n-1), http.StatusPartialContent, b[n-100:]},
		{fmt.Sprintf("bytes=%d-", n), http.StatusRequestedRangeNotSatisfiable, nil},
	} {
		code, got := do(t, gu, nil, 0, tt.rng)
		if code != tt.code {
			t.Errorf("GET Range %q: status %d, want %d", tt.rng, code, tt.code)
			continue
		}
		if tt.want != nil && !bytes.Equal(got, tt.want) {
			t.Errorf("GET Range %q = %d bytes %s, want %d bytes %s", tt.rng, len(got), short(got), len(tt.want), short(tt.want))
		}
	}

	// A signed PUT never replaces an object: not with a fresh URL, not by
	// replaying the first one, not with the signed headers dropped.
	b2 := data(10, len(b))
	pu2, err := s.SignPut(ctx, key, int64(len(b2)), time.Minute)
	if err != nil {
		t.Fatalf("SignPut: %v", err)
	}
	if code, resp := doPut(t, pu2, b2); code != http.StatusPreconditionFailed && code != refusedByClose {
		t.Errorf("PUT over an existing object via a fresh signed URL: %d %s, want 412", code, resp)
	}
	if code, resp := doPut(t, pu, b2); code != http.StatusPreconditionFailed && code != refusedByClose {
		t.Errorf("PUT over an existing object replaying the first URL: %d %s, want 412", code, resp)
	}
	stripped := pu2
	stripped.Headers = map[string]string{}
	for k, v := range pu2.Headers {
		if !strings.EqualFold(k, "If-None-Match") {
			stripped.Headers[k] = v
		}
	}
	if code, resp := doPut(t, stripped, b2); code/100 == 2 {
		t.Errorf("PUT over an existing object without the signed If-None-Match: %d %s, want a refusal", code, resp)
	}
	if code, got := do(t, gu, nil, 0, ""); code != http.StatusOK || !bytes.Equal(got, b) {
		t.Fatalf("GET after refused overwrites: %d, %d bytes; want 200 and the first object", code, len(got))
	}
	wantContent(t, s, key, b)
	pu, err = s.SignPut(ctx, "signed/empty", 0, time.Minute)
	if err != nil {
		t.Fatalf("SignPut(empty): %v", err)
	}
	if code, resp := do(t, pu, []byte{}, 0, ""); code/100 != 2 {
		t.Fatalf("empty PUT via signed URL: %d %s", code, resp)
	}
	wantContent(t, s, "signed/empty", nil)

	// Keys that need escaping in URLs.
	const odd = "signed/odd/sp ace/ünï+cödé/%2F?#&=;,'\"!$()*@[]{}|^`<>/x.y..z"
	pu, err = s.SignPut(ctx, odd, 3, time.Minute)
	if err != nil {
		t.Fatalf("SignPut(%q): %v", odd, err)
	}
	if code, resp := do(t, pu, []byte("odd"), 3, ""); code/100 != 2 {
		t.Fatalf("PUT of %q via signed URL: %d %s", odd, code, resp)
	}
	wantContent(t, s, odd, []byte("odd"))
	gu, err = s.SignGet(ctx, odd, time.Minute)
	if err != nil {
		t.Fatalf("SignGet(%q): %v", odd, err)
	}
	if code, got := do(t, gu, nil, 0, "bytes=1-"); code != http.StatusPartialContent || string(got) != "dd" {
		t.Fatalf("GET of %q via signed URL: %d %q, want 206 \"dd\"", odd, code, got)
	}

	// A signed GET of a missing object.
	mu, err := s.SignGet(ctx, "signed/missing", time.Minute)
	if err != nil {
		t.Fatalf("SignGet(missing): %v", err)
	}
	if code, _ := do(t, mu, nil, 0, ""); code != http.StatusNotFound {
		t.Errorf("GET of a missing object: status %d, want 404", code)
	}

	if _, err := s.SignPut(ctx, "signed/neg", -1, time.Minute); err == nil {
		t.Error("SignPut with a negative size succeeded")
	}
}

func testSignedURLExpired(t *testing.T, s blobstore.Backend) {
	ctx := t.Context()
	const key = "expired/x"
	put(t, s, key, []byte("secret"))
	for _, ttl := range []time.Duration{-time.Minute, -time.Hour} {
		gu, err := s.SignGet(ctx, key, ttl)
		if err != nil {
			t.Fatalf("SignGet(ttl %v): %v", ttl, err)
		}
		if !gu.Expires.Before(time.Now()) {
			t.Errorf("SignGet(ttl %v) expires at %v, not in the past", ttl, gu.Expires)
		}
		if code, body := do(t, gu, nil, 0, ""); code != http.StatusForbidden {
			t.Errorf("GET with an expired URL (ttl %v): status %d %q, want 403", ttl, code, body)
		}
		pu, err := s.SignPut(ctx, "expired/put", 3, ttl)
		if err != nil {
			t.Fatalf("SignPut(ttl %v): %v", ttl, err)
		}
		if code, body := do(t, pu, []byte("abc"), 3, ""); code != http.StatusForbidden {
			t.Errorf("PUT with an expired URL (ttl %v): status %d %q, want 403", ttl, code, body)
		}
		wantMissing(t, s, "expired/put")
	}
}

func testSignedPutWrongSize(t *testing.T, s blobstore.Backend) {
	ctx := t.Context()
	const key = "wrongsize/x"
	pu, err := s.SignPut(ctx, key, 10, time.Minute)
	if err != nil {
		t.Fatalf("SignPut: %v", err)
	}
	for _, n := range []int{9, 11, 0, 1000} {
		// Bypass NewRequest's own size check: a client could.
		u := pu
		u.Headers = nil
		req, err := u.NewRequest(ctx, bytes.NewReader(data(11, n)), int64(n))
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range pu.Headers {
			if http.CanonicalHeaderKey(k) != "Content-Length" {
				req.Header.Set(k, v)
			}
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			// Refusing by closing the connection is fine too.
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode/100 != 4 {
			t.Errorf("PUT of %d bytes with a URL signed for 10: status %d %q, want 4xx", n, resp.StatusCode, body)
		}
		wantMissing(t, s, key)
	}
	// The right size still works afterwards.
	if code, resp := do(t, pu, data(11, 10), 10, ""); code/100 != 2 {
		t.Fatalf("PUT of the signed size: %d %s", code, resp)
	}
	wantContent(t, s, key, data(11, 10))
}
