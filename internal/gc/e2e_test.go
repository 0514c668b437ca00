package gc_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sandkeep/sandkeep/internal/agent"
	"github.com/sandkeep/sandkeep/internal/coordtest"
	"github.com/sandkeep/sandkeep/internal/gc"
	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/pack"
	"github.com/sandkeep/sandkeep/internal/remote"
	"github.com/sandkeep/sandkeep/internal/repo"
	"github.com/sandkeep/sandkeep/internal/server"
	"github.com/sandkeep/sandkeep/internal/testenv"
	"github.com/sandkeep/sandkeep/internal/tree"
	"github.com/sandkeep/sandkeep/internal/workspacetest"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

func agentConfig(c *coordtest.Coordinator, token, ws, cache string) agent.Config {
	return agent.Config{
		Remote:    remote.Config{Addr: c.Addr, Token: token, Version: "test"},
		Workspace: ws,
		CacheDir:  cache,
		Logger:    slog.New(slog.DiscardHandler),
	}
}

// snapshot reads a workspace like workspacetest.Snapshot, returning errors
// instead of failing the test (it runs on other goroutines).
func snapshot(dir string) (map[string]workspacetest.Entry, error) {
	out := make(map[string]workspacetest.Entry)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "." {
			return nil
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		e := workspacetest.Entry{Type: fi.Mode().Type(), Mode: fi.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky), MtimeNs: fi.ModTime().UnixNano()}
		if fi.Mode().IsRegular() {
			e.Size = fi.Size()
			if e.Content, err = os.ReadFile(p); err != nil {
				return err
			}
		}
		out[filepath.ToSlash(rel)] = e
		return nil
	})
	return out, err
}

// writer changes a workspace at random: new files of assorted sizes,
// rewrites, deletions, whole directories removed, and files brought back
// to an older content (whose chunks GC may have condemned or deleted).
type writer struct {
	rng     *rand.Rand
	ws      string
	history [][]byte
}

func (w *writer) content() []byte {
	if len(w.history) > 0 && w.rng.IntN(5) == 0 {
		return w.history[w.rng.IntN(len(w.history))]
	}
	var n int
	switch x := w.rng.IntN(20); {
	case x < 10:
		n = 1 + w.rng.IntN(3000)
	case x < 17:
		n = 5<<10 + w.rng.IntN(60<<10)
	default:
		n = 300<<10 + w.rng.IntN(1200<<10)
	}
	b := make([]byte, n)
	if w.rng.IntN(2) == 0 {
		for i := range b {
			b[i] = byte(w.rng.Uint32())
		}
	} else {
		word := []byte(fmt.Sprintf("line %d of some text; ", w.rng.IntN(1000)))
		for i := range b {
			b[i] = word[i%len(word)]
		}
	}
	w.history = append(w.history, b)
	return b
}

func (w *writer) files() []string {
	var out []string
	_ = filepath.WalkDir(w.ws, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			out = append(out, p)
		}
		return nil
	})
	return out
}

func (w *writer) mutate() error {
	for range 1 + w.rng.IntN(6) {
		files := w.files()
		switch op := w.rng.IntN(10); {
		case op < 4 || len(files) == 0: // new file
			dir := filepath.Join(w.ws, "d"+strconv.Itoa(w.rng.IntN(4)))
			if w.rng.IntN(3) == 0 {
				dir = filepath.Join(dir, "sub"+strconv.Itoa(w.rng.IntN(2)))
			}
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(dir, "f"+strconv.Itoa(w.rng.IntN(40))), w.content(), 0o644); err != nil {
				return err
			}
		case op < 7: // rewrite
			if err := os.WriteFile(files[w.rng.IntN(len(files))], w.content(), 0o644); err != nil {
				return err
			}
		case op < 9: // delete a file
			if err := os.Remove(files[w.rng.IntN(len(files))]); err != nil {
				return err
			}
		default: // delete a directory
			if err := os.RemoveAll(filepath.Join(w.ws, "d"+strconv.Itoa(w.rng.IntN(4)))); err != nil {
				return err
			}
		}
	}
	return nil
}

// TestGCConcurrentWithSyncs is the randomized test: agents sync changing
// workspaces (one per project, several projects) while the collector runs
// over every project again and again, with a tiny grace period and a fake
// clock far enough ahead that every pack is old (so even the packs an
// agent uploads for a commit still on its way get condemned). Afterwards
// every kept version restores to exactly what was committed (every file's
// bytes, modes and mtimes compared; rollbacks, made now and then, to
// exactly their target's files), retention kept what it should, and
// every indexed pack is in the bucket. It is bounded (a fixed number of
// syncs per agent, of retries per sync, and of settling runs; a 3-minute
// context) and runs on SQLite and PostgreSQL with a local blob directory,
// and on PostgreSQL with S3 (versitygw, under a key prefix).
func TestGCConcurrentWithSyncs(t *testing.T) {
	seed := uint64(20250601)
	if s := os.Getenv("SANDKEEP_GC_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		seed = v
	}
	t.Logf("seed %d (set SANDKEEP_GC_SEED to repeat)", seed)
	for _, b := range []struct {
		name string
		opts coordtest.Options
	}{
		{"sqlite", coordtest.Options{}},
		{"postgres", coordtest.Options{Postgres: true}},
		{"postgres-s3", coordtest.Options{Postgres: true, S3: true, Config: server.Config{S3Prefix: "tenant/"}}},
	} {
		t.Run(b.name, func(t *testing.T) { testConcurrent(t, b.opts, seed) })
	}
}

type syncedProject struct {
	id, token string
	keepLast  int
	ws, cache string
	// expected holds each committed version's workspace.
	expected map[int64]map[string]workspacetest.Entry
	pinned   []int64
	last     int64
	retries  int
	// rollbacks made, and refused because GC dropped the target meanwhile.
	rollbacks, refused int
}

// rollback rolls the project back to one of its versions still listed
// (not the head), at random, and brings the workspace there (emptied, then
// restored, as a fresh sandbox would); the rollback version must restore
// exactly the target's files. A target that GC drops meanwhile makes the
// rollback fail (NotFound, or its blobs condemned: ErrMissing): then nothing
// happens.
func (p *syncedProject) rollback(ctx context.Context, c *coordtest.Coordinator, rng *rand.Rand, gate *sync.RWMutex) error {
	r := c.Server.Repo
	vs, err := r.Meta().ListVersions(ctx, p.id, metastore.ListOptions{Limit: 10000})
	if err != nil {
		return err
	}
	var targets []int64
	for _, v := range vs[1:] {
		if _, ok := p.expected[v.Number]; ok {
			targets = append(targets, v.Number)
		}
	}
	if len(targets) == 0 {
		return nil
	}
	target := targets[rng.IntN(len(targets))]
	v, err := r.Rollback(ctx, p.id, target)
	if errors.Is(err, metastore.ErrNotFound) || errors.Is(err, repo.ErrMissing) {
		p.refused++
		return nil
	}
	if err != nil {
		return fmt.Errorf("rollback to %d: %w", target, err)
	}
	p.expected[v.Number], p.last = p.expected[target], v.Number
	p.rollbacks++
	// The restore may race a repack whose old pack GC deletes after this
	// test's tiny grace period: a restore error is retried, a wrong byte is
	// not.
	cfg := agentConfig(c, p.token, p.ws, p.cache)
	for attempt := 0; ; attempt++ {
		if err := os.RemoveAll(p.ws); err != nil {
			return err
		}
		if err := os.MkdirAll(p.ws, 0o755); err != nil {
			return err
		}
		_, err := exclusiveAfter(gate, attempt, func() (agent.RestoreResult, error) { return agent.Restore(ctx, cfg, v.Number) })
		if err == nil {
			break
		}
		if attempt >= 40 || ctx.Err() != nil {
			return fmt.Errorf("restore of rollback version %d: %w", v.Number, err)
		}
		p.retries++
	}
	got, err := snapshot(p.ws)
	if err != nil {
		return err
	}
	if d := workspacetest.Diff(p.expected[target], got); len(d) > 0 {
		return fmt.Errorf("rollback version %d restores differently from version %d: %v", v.Number, target, d[:min(len(d), 10)])
	}
	return nil
}

// starveAfter is how many failed attempts in a row make a sync or restore
// of testConcurrent hold off the collector for its next one (see gate).
const starveAfter = 3

// exclusiveAfter runs f, holding gate exclusively if attempt (counted from
// 0) follows starveAfter failures.
func exclusiveAfter[T any](gate *sync.RWMutex, attempt int, f func() (T, error)) (T, error) {
	if attempt >= starveAfter {
		gate.Lock()
		defer gate.Unlock()
	}
	return f()
}

func testConcurrent(t *testing.T, opts coordtest.Options, seed uint64) {
	c := coordtest.Start(t, opts)
	r := c.Server.Repo
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	writers, iterations := 3, 12
	if testing.Short() {
		iterations = 5
	}
	const grace = time.Millisecond
	clock := newClock(time.Now().Add(time.Hour))

	projects := make([]*syncedProject, writers)
	for i := range projects {
		pid, token := c.Project(t, fmt.Sprintf("race-%d", i))
		p := &syncedProject{id: pid, token: token, keepLast: 2 + i%2, ws: filepath.Join(t.TempDir(), "ws"), cache: t.TempDir(),
			expected: map[int64]map[string]workspacetest.Entry{}}
		if err := os.MkdirAll(p.ws, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := r.SetRetention(ctx, pid, metastore.Retention{KeepLast: p.keepLast}); err != nil {
			t.Fatal(err)
		}
		projects[i] = p
	}

	// The collector. Its runs hold gate shared; a sync or restore that
	// failed starveAfter times in a row takes it exclusively for its next
	// attempt. With this test's 1 ms grace and a clock an hour ahead, every
	// pack not yet committed is condemnable at once, so a slow attempt (the
	// race detector) could lose to the collector forever; in production the
	// grace (1h) exceeds any upload-to-commit. The first attempts still race
	// the collector.
	var gate sync.RWMutex
	stop := make(chan struct{})
	var gcRuns atomic.Int64
	var collector sync.WaitGroup
	var gcMu sync.Mutex
	var total gc.Report
	runGC := func() error {
		gate.RLock()
		defer gate.RUnlock()
		clock.Advance(3 * grace)
		rep, err := gc.Run(ctx, r, gc.Options{Grace: grace, Now: clock.Now, Logger: testLogger(t)})
		gcMu.Lock()
		defer gcMu.Unlock()
		total.VersionsDeleted += rep.VersionsDeleted
		total.PacksDeleted += rep.PacksDeleted
		total.PacksCondemned += rep.PacksCondemned
		total.PacksRepacked += rep.PacksRepacked
		total.PacksRescued += rep.PacksRescued
		total.BlobsMissing += rep.BlobsMissing
		total.BlobsCorrupt += rep.BlobsCorrupt
		gcRuns.Add(1)
		return err
	}
	collector.Go(func() {
		rng := rand.New(rand.NewPCG(seed, 1000))
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := runGC(); err != nil && ctx.Err() == nil {
				t.Errorf("gc: %v", err)
				return
			}
			time.Sleep(time.Duration(rng.IntN(5000)) * time.Microsecond)
		}
	})

	// The agents.
	var agents sync.WaitGroup
	errs := make(chan error, writers)
	for i, p := range projects {
		agents.Go(func() {
			w := &writer{rng: rand.New(rand.NewPCG(seed, uint64(i))), ws: p.ws}
			jitter := rand.New(rand.NewPCG(seed, uint64(100+i)))
			rb := rand.New(rand.NewPCG(seed, uint64(200+i)))
			cfg := agentConfig(c, p.token, p.ws, p.cache)
			for it := range iterations {
				if err := w.mutate(); err != nil {
					errs <- err
					return
				}
				snap, err := snapshot(p.ws)
				if err != nil {
					errs <- err
					return
				}
				var res agent.SyncResult
				for attempt := 0; ; attempt++ {
					res, err = exclusiveAfter(&gate, attempt, func() (agent.SyncResult, error) { return agent.SyncOnce(ctx, cfg) })
					if err == nil || attempt >= 40 || ctx.Err() != nil {
						break
					}
					// A commit refused because GC condemned a chunk
					// meanwhile, a pack being deleted: the next attempt
					// uploads again.
					p.retries++
					time.Sleep(time.Duration(1+jitter.IntN(10)) * time.Millisecond)
				}
				if err != nil {
					errs <- fmt.Errorf("project %s, iteration %d: sync: %w", p.id, it, err)
					return
				}
				if res.Changed {
					n := res.Version.GetNumber()
					p.expected[n], p.last = snap, n
					if w.rng.IntN(6) == 0 {
						if err := r.Pin(ctx, p.id, n, true); err != nil {
							errs <- fmt.Errorf("pin %d: %w", n, err)
							return
						}
						p.pinned = append(p.pinned, n)
					}
				}
				if rb.IntN(4) == 0 {
					if err := p.rollback(ctx, c, rb, &gate); err != nil {
						errs <- fmt.Errorf("project %s, iteration %d: %w", p.id, it, err)
						return
					}
				}
			}
		})
	}
	agents.Wait()
	close(stop)
	collector.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// Settle: run until a run finds nothing to delete or condemn.
	for range 6 {
		clock.Advance(time.Second)
		if err := runGC(); err != nil {
			t.Fatal(err)
		}
		gcMu.Lock()
		before := total
		gcMu.Unlock()
		clock.Advance(time.Second)
		if err := runGC(); err != nil {
			t.Fatal(err)
		}
		gcMu.Lock()
		idle := total.PacksDeleted == before.PacksDeleted && total.PacksCondemned == before.PacksCondemned
		gcMu.Unlock()
		if idle {
			break
		}
	}
	t.Logf("%d gc runs: %d versions deleted, %d packs condemned, %d repacked, %d deleted, %d rescued",
		gcRuns.Load(), total.VersionsDeleted, total.PacksCondemned, total.PacksRepacked, total.PacksDeleted, total.PacksRescued)
	if total.BlobsMissing != 0 || total.BlobsCorrupt != 0 {
		t.Fatalf("gc saw %d missing and %d corrupt blobs", total.BlobsMissing, total.BlobsCorrupt)
	}
	if total.PacksDeleted == 0 || total.VersionsDeleted == 0 {
		t.Fatalf("the collector did nothing (%d packs deleted, %d versions)", total.PacksDeleted, total.VersionsDeleted)
	}

	restored := 0
	for _, p := range projects {
		t.Logf("project %s: %d versions committed (%d of them rollbacks; %d rollbacks refused), %d retries, pinned %v",
			p.id, len(p.expected), p.rollbacks, p.refused, p.retries, p.pinned)
		vs, err := c.Server.Meta.ListVersions(ctx, p.id, metastore.ListOptions{Limit: 10000})
		if err != nil {
			t.Fatal(err)
		}
		var have []int64
		for _, v := range vs {
			have = append(have, v.Number)
		}
		// Retention: the keepLast newest and the pinned ones, nothing else.
		var committed []int64
		for n := range p.expected {
			committed = append(committed, n)
		}
		slices.Sort(committed)
		slices.Reverse(committed)
		var want []int64
		for i, n := range committed {
			if i < p.keepLast || slices.Contains(p.pinned, n) {
				want = append(want, n)
			}
		}
		if !slices.Equal(have, want) {
			t.Fatalf("project %s keeps versions %v, want %v (committed %v, pinned %v)", p.id, have, want, committed, p.pinned)
		}
		if have[0] != p.last {
			t.Fatalf("project %s: head %d, last commit %d", p.id, have[0], p.last)
		}
		// Every kept version restores exactly.
		for _, n := range have {
			dir := filepath.Join(t.TempDir(), "r")
			cfg := agentConfig(c, p.token, dir, t.TempDir())
			if _, err := agent.Restore(ctx, cfg, n); err != nil {
				t.Fatalf("project %s: restore version %d: %v", p.id, n, err)
			}
			got, err := snapshot(dir)
			if err != nil {
				t.Fatal(err)
			}
			if d := workspacetest.Diff(p.expected[n], got); len(d) > 0 {
				t.Fatalf("project %s: version %d restores differently: %v", p.id, n, d[:min(len(d), 10)])
			}
			restored++
		}
		// Every indexed pack is in the bucket.
		objs := listObjects(t, c.Server.Blobs, repo.ProjectPrefix(p.id))
		packs, err := c.Server.Meta.ListPacks(ctx, p.id, metastore.ListOptions{Limit: 100000})
		if err != nil {
			t.Fatal(err)
		}
		for _, pk := range packs {
			if size, ok := objs[repo.PackKey(p.id, pk.ID)]; !pk.Deleting && (!ok || size != pk.Size) {
				t.Fatalf("project %s: pack %s indexed (%d bytes) but %d bytes in the bucket (present %v)", p.id, pk.ID.Short(), pk.Size, size, ok)
			}
		}
	}
	t.Logf("restored %d kept versions, all identical", restored)
}

// liveStoredBytes is the stored size of the blobs version v references.
func liveStoredBytes(t *testing.T, r *repo.Repo, projectID string, root id.ID) int64 {
	t.Helper()
	ctx := context.Background()
	seen := map[id.ID]bool{}
	var ids []id.ID
	var walk func(tid id.ID)
	walk = func(tid id.ID) {
		if seen[tid] {
			return
		}
		seen[tid] = true
		ids = append(ids, tid)
		tr, err := r.LoadTree(ctx, projectID, tid)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range tr.Nodes {
			switch n.Type {
			case tree.Dir:
				walk(n.Subtree)
			case tree.File:
				for _, c := range n.Chunks {
					if !seen[c.ID] {
						seen[c.ID] = true
						ids = append(ids, c.ID)
					}
				}
			}
		}
	}
	walk(root)
	locs, err := r.Meta().LocateBlobs(ctx, projectID, ids)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, x := range ids {
		l, ok := locs[x]
		if !ok {
			t.Fatalf("blob %s of the head is not indexed", x.Short())
		}
		n += l.Length + pack.EntrySize
	}
	return n
}

// TestGCFreesDownToHead: with a retention of the last version only, two runs
// a grace period apart shrink the project's bucket prefix to about the
// head's size, on the local store and on S3 (versitygw; the whole bucket
// also listed with ListObjectsV2 straight against it).
func TestGCFreesDownToHead(t *testing.T) {
	for _, b := range []struct {
		name string
		opts coordtest.Options
	}{{"local", coordtest.Options{}}, {"s3", coordtest.Options{S3: true}}} {
		t.Run(b.name, func(t *testing.T) {
			c := coordtest.Start(t, b.opts)
			pid, token := c.Project(t, "shrink-"+b.name)
			r := c.Server.Repo
			ctx := context.Background()
			ws := filepath.Join(t.TempDir(), "ws")
			for i := range 20 {
				p := filepath.Join(ws, "src", fmt.Sprintf("m%d", i%4), fmt.Sprintf("file%02d.txt", i))
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(fmt.Sprintf("static file %d\n", i)), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			cfg := agentConfig(c, token, ws, t.TempDir())
			const versions, bigSize = 4, 3 << 20
			for v := range versions {
				workspacetest.RandomFile(t, filepath.Join(ws, "big.bin"), bigSize, uint64(100+v))
				if err := os.WriteFile(filepath.Join(ws, "notes.txt"), []byte(fmt.Sprintf("version %d\n", v)), 0o644); err != nil {
					t.Fatal(err)
				}
				if res, err := agent.SyncOnce(ctx, cfg); err != nil || !res.Changed {
					t.Fatalf("sync %d: %+v, %v", v, res, err)
				}
			}
			prefix := repo.ProjectPrefix(pid)
			before := listObjects(t, c.Server.Blobs, prefix)
			if packBytes(before) < versions*bigSize {
				t.Fatalf("%d bytes of packs before gc, want at least %d", packBytes(before), versions*bigSize)
			}
			if err := r.SetRetention(ctx, pid, metastore.Retention{KeepLast: 1}); err != nil {
				t.Fatal(err)
			}
			clock := newClock(time.Now().Add(2 * time.Hour))
			run := func() gc.Report {
				rep, err := gc.Run(ctx, r, gc.Options{ProjectID: pid, Now: clock.Now, Logger: testLogger(t)})
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("%v", rep)
				return rep
			}
			first := run()
			if first.VersionsDeleted != versions-1 || first.PacksCondemned == 0 {
				t.Fatalf("first run: %v", first)
			}
			clock.Advance(gc.DefaultGrace)
			second := run()
			if second.PacksDeleted == 0 {
				t.Fatalf("second run deleted nothing: %v", second)
			}
			after := listObjects(t, c.Server.Blobs, prefix)
			head, err := r.Meta().HeadVersion(ctx, pid)
			if err != nil {
				t.Fatal(err)
			}
			headBytes := liveStoredBytes(t, r, pid, head.Root)
			var total int64
			for _, s := range after {
				total += s
			}
			t.Logf("bucket: %d objects, %d bytes before; %d objects, %d bytes after; the head's blobs take %d bytes",
				len(before), packBytes(before), len(after), total, headBytes)
			if total < headBytes || total > headBytes+headBytes/20+32<<10 {
				t.Fatalf("%d bytes left under %s, want about the head's %d", total, prefix, headBytes)
			}
			if c.S3 != nil {
				// The same, as S3 itself lists the bucket.
				raw := rawBucket(t, c)()
				var rawTotal int64
				for k, n := range raw {
					if _, ok := after[k]; !ok {
						t.Fatalf("the bucket holds %s, which the store does not list", k)
					}
					rawTotal += n
				}
				if len(raw) != len(after) || rawTotal != total {
					t.Fatalf("ListObjectsV2: %d objects, %d bytes; the store lists %d, %d", len(raw), rawTotal, len(after), total)
				}
			}
			if second.BytesAfter != packBytes(after) {
				t.Fatalf("report says %d bytes of packs, the bucket holds %d", second.BytesAfter, packBytes(after))
			}
			for k := range after {
				if filepath.Dir(k) == filepath.Dir(repo.VersionKey(pid, 1)) && k != repo.VersionKey(pid, head.Number) {
					t.Fatalf("version record %s of a deleted version left", k)
				}
			}
			dir := filepath.Join(t.TempDir(), "r")
			if _, err := agent.Restore(ctx, agentConfig(c, token, dir, t.TempDir()), 0); err != nil {
				t.Fatal(err)
			}
			workspacetest.RequireEqual(t, ws, dir)
		})
	}
}

// TestDeleteProjectEverywhere deletes a project from a running
// coordinator: zero objects under its prefix (on S3, the whole bucket
// listed with ListObjectsV2 straight against versitygw, not through the
// blob store), zero rows in every table of SQLite or PostgreSQL, its token
// refused at once, its signed links and the admin's bearer URLs answering
// 404, and another project untouched.
func TestDeleteProjectEverywhere(t *testing.T) {
	for _, b := range []struct {
		name     string
		s3, pgDB bool
		prefix   string
	}{{"s3-sqlite", true, false, ""}, {"s3-postgres", true, true, "tenant-a/"}, {"local-postgres", false, true, ""}} {
		t.Run(b.name, func(t *testing.T) {
			opts := coordtest.Options{S3: b.s3, Config: server.Config{S3Prefix: b.prefix}}
			var dsn string
			if b.pgDB {
				dsn = testenv.Postgres(t)
				opts.Config.DatabaseURL = dsn
			}
			c := coordtest.Start(t, opts)
			ctx := context.Background()
			lc := pb.NewLifecycleServiceClient(c.Conn(t, c.Server.AdminToken))
			ids, tokens := make([]string, 2), make([]string, 2)
			for i, name := range []string{"doomed", "kept"} {
				ids[i], tokens[i] = c.Project(t, name)
				ws := filepath.Join(t.TempDir(), "ws")
				workspacetest.Generate(t, ws, workspacetest.Options{SmallFiles: 50, LargeSize: 600 << 10, Seed: uint64(i + 1)})
				cfg := agentConfig(c, tokens[i], ws, t.TempDir())
				if _, err := agent.SyncOnce(ctx, cfg); err != nil {
					t.Fatal(err)
				}
				workspacetest.RandomFile(t, filepath.Join(ws, "more.bin"), 100<<10, 9)
				if _, err := agent.SyncOnce(ctx, cfg); err != nil {
					t.Fatal(err)
				}
				if err := c.Server.Repo.SetRetention(ctx, ids[i], metastore.Retention{KeepLast: 1}); err != nil {
					t.Fatal(err)
				}
				if err := c.Server.Repo.Pin(ctx, ids[i], 2, true); err != nil {
					t.Fatal(err)
				}
				// Rows in the lifecycle tables too: a run lease and a policy.
				if _, err := lc.AcquireRunLease(ctx, &pb.AcquireRunLeaseRequest{ProjectId: ids[i], Ttl: durationpb.New(time.Hour)}); err != nil {
					t.Fatal(err)
				}
				if _, err := lc.SetPolicy(ctx, &pb.SetPolicyRequest{ProjectId: ids[i], Override: &pb.PolicyValues{StopAfter: durationpb.New(time.Hour)}}); err != nil {
					t.Fatal(err)
				}
			}
			countRows := rowCounter(t, c, dsn)
			keptRows := countRows(ids[1])
			keptObjects := listObjects(t, c.Server.Blobs, repo.ProjectPrefix(ids[1]))
			objs := listObjects(t, c.Server.Blobs, repo.ProjectPrefix(ids[0]))
			var size int64
			for _, s := range objs {
				size += s
			}
			doomedRows := countRows(ids[0])
			for _, table := range []string{"projects", "tokens", "packs", "blobs", "versions", "project_files", "retention", "run_leases", "lifecycle_policies"} {
				if doomedRows[table] == 0 {
					t.Fatalf("the project to delete has no rows in %s: the check below would prove nothing (%v)", table, doomedRows)
				}
			}
			if len(objs) == 0 {
				t.Fatal("nothing to delete")
			}
			// The bucket as S3 itself lists it: what the store listed, under
			// the configured prefix.
			var raw func() map[string]int64
			if b.s3 {
				raw = rawBucket(t, c)
				inBucket := 0
				for k, n := range raw() {
					if strings.Contains(k, "projects/"+ids[0]+"/") {
						inBucket++
						if want, ok := objs[strings.TrimPrefix(k, b.prefix)]; !ok || want != n || !strings.HasPrefix(k, b.prefix) {
							t.Fatalf("object %s (%d bytes) in the bucket; the store listed %d bytes (%v)", k, n, want, ok)
						}
					}
				}
				if inBucket != len(objs) {
					t.Fatalf("the bucket holds %d objects of the project, the store listed %d", inBucket, len(objs))
				}
			}
			link := createLink(t, c, ids[0], "README.md")
			admin := map[string]string{"Authorization": "Bearer " + c.Server.AdminToken}
			bearerURL := c.HTTP + "/v1/projects/" + ids[0] + "/files/README.md"
			if got := httpStatus(t, link, nil); got != http.StatusOK {
				t.Fatalf("the link before deletion: %d", got)
			}

			resp, err := c.Admin.DeleteProject(ctx, &pb.DeleteProjectRequest{ProjectId: ids[0]})
			if err != nil {
				t.Fatal(err)
			}
			if resp.GetObjectsDeleted() != int64(len(objs)) || resp.GetBytesFreed() != size {
				t.Fatalf("DeleteProject reports %d objects, %d bytes; the bucket had %d, %d", resp.GetObjectsDeleted(), resp.GetBytesFreed(), len(objs), size)
			}
			if left := listObjects(t, c.Server.Blobs, repo.ProjectPrefix(ids[0])); len(left) != 0 {
				t.Fatalf("%d objects left under the prefix: %v", len(left), left)
			}
			if raw != nil {
				for k := range raw() {
					if strings.Contains(k, ids[0]) {
						t.Fatalf("object %s of the deleted project is still in the bucket", k)
					}
				}
			}
			if rows := countRows(ids[0]); sumRows(rows) != 0 {
				t.Fatalf("rows of the deleted project left: %v", rows)
			}
			// Its token is refused, on every call.
			a := c.AgentConn(t, tokens[0])
			if _, err := a.FindMissingChunks(ctx, &pb.FindMissingChunksRequest{}); status.Code(err) != codes.Unauthenticated {
				t.Fatalf("FindMissingChunks with the deleted project's token: %v, want Unauthenticated", err)
			}
			if _, err := a.OpenSession(ctx, &pb.OpenSessionRequest{}); status.Code(err) != codes.Unauthenticated {
				t.Fatalf("OpenSession with the deleted project's token: %v, want Unauthenticated", err)
			}
			// Its links are dead: the signed one and the admin's bearer URL.
			if got := httpStatus(t, link, nil); got != http.StatusNotFound {
				t.Fatalf("the signed link after deletion: %d, want 404", got)
			}
			if got := httpStatus(t, bearerURL, admin); got != http.StatusNotFound {
				t.Fatalf("the admin bearer URL after deletion: %d, want 404", got)
			}
			// Again: nothing left to delete.
			if _, _, err := c.Server.Repo.DeleteProject(ctx, ids[0]); !errors.Is(err, metastore.ErrNotFound) {
				t.Fatalf("DeleteProject again: %v, want ErrNotFound", err)
			}
			// The other project is whole.
			if got := countRows(ids[1]); !maps.Equal(got, keptRows) {
				t.Fatalf("the other project has rows %v, had %v", got, keptRows)
			}
			if got := listObjects(t, c.Server.Blobs, repo.ProjectPrefix(ids[1])); !maps.Equal(got, keptObjects) {
				t.Fatalf("the other project has %d objects, had %d", len(got), len(keptObjects))
			}
			if _, err := c.AgentConn(t, tokens[1]).FindMissingChunks(ctx, &pb.FindMissingChunksRequest{}); err != nil {
				t.Fatalf("the other project's token: %v", err)
			}
			dir := filepath.Join(t.TempDir(), "r")
			if _, err := agent.Restore(ctx, agentConfig(c, tokens[1], dir, t.TempDir()), 0); err != nil {
				t.Fatalf("restore of the other project: %v", err)
			}
		})
	}
}

// rawBucket returns a function listing the coordinator's whole bucket (key
// -> size) with ListObjectsV2 straight against the S3 server, pages of 100.
func rawBucket(t *testing.T, c *coordtest.Coordinator) func() map[string]int64 {
	t.Helper()
	client := s3.New(s3.Options{
		BaseEndpoint: aws.String(c.S3.Endpoint),
		Region:       c.S3.Region,
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(c.S3.AccessKey, c.S3.SecretKey, ""),
	})
	return func() map[string]int64 {
		t.Helper()
		out := map[string]int64{}
		p := s3.NewListObjectsV2Paginator(client, &s3.ListObjectsV2Input{Bucket: aws.String(c.Bucket), MaxKeys: aws.Int32(100)})
		for pages := 0; p.HasMorePages(); pages++ {
			if pages > 10000 {
				t.Fatal("ListObjectsV2 does not end")
			}
			page, err := p.NextPage(context.Background())
			if err != nil {
				t.Fatalf("ListObjectsV2 %s: %v", c.Bucket, err)
			}
			for _, o := range page.Contents {
				out[aws.ToString(o.Key)] = aws.ToInt64(o.Size)
			}
		}
		return out
	}
}

func createLink(t *testing.T, c *coordtest.Coordinator, project, path string) string {
	t.Helper()
	resp, err := c.Admin.CreateFileLink(context.Background(), &pb.CreateFileLinkRequest{ProjectId: project, Path: path})
	if err != nil {
		t.Fatalf("link %s: %v", path, err)
	}
	return resp.GetUrl()
}

func httpStatus(t *testing.T, url string, hdr map[string]string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode
}

func sumRows(rows map[string]int) int {
	n := 0
	for _, r := range rows {
		n += r
	}
	return n
}

// rowCounter returns a function counting a project's rows, per table, in
// every table that has a project_id column (found in the schema, so tables
// added later count too) plus its projects row, read straight from the
// coordinator's database.
func rowCounter(t *testing.T, c *coordtest.Coordinator, dsn string) func(projectID string) map[string]int {
	t.Helper()
	ctx := context.Background()
	var query func(q string, args ...any) (int, error)
	var tablesQuery string
	if dsn != "" {
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close(ctx) })
		query = func(q string, args ...any) (n int, err error) { err = conn.QueryRow(ctx, q, args...).Scan(&n); return }
		tablesQuery = `SELECT table_name FROM information_schema.columns WHERE column_name = 'project_id' AND table_schema = current_schema()`
		rows, err := conn.Query(ctx, tablesQuery)
		if err != nil {
			t.Fatal(err)
		}
		tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		return counter(t, query, tables)
	}
	db, err := sql.Open("sqlite", "file:"+filepath.Join(c.DataDir, "sandkeep.db")+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	query = func(q string, args ...any) (n int, err error) { err = db.QueryRow(q, args...).Scan(&n); return }
	rows, err := db.Query(`SELECT m.name FROM sqlite_master m JOIN pragma_table_info(m.name) p
		WHERE m.type = 'table' AND p.name = 'project_id'`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var tables []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			t.Fatal(err)
		}
		tables = append(tables, name)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return counter(t, query, tables)
}

func counter(t *testing.T, query func(q string, args ...any) (int, error), tables []string) func(string) map[string]int {
	t.Helper()
	for _, want := range []string{"tokens", "packs", "blobs", "versions", "project_files", "retention", "run_leases", "lifecycle_policies", "sandboxes"} {
		if !slices.Contains(tables, want) {
			t.Fatalf("tables with a project_id: %v, %s missing", tables, want)
		}
	}
	t.Logf("counting rows in projects and %v", tables)
	queries := map[string]string{"projects": "SELECT count(*) FROM projects WHERE id = $1"}
	for _, table := range tables {
		queries[table] = "SELECT count(*) FROM " + table + " WHERE project_id = $1"
	}
	return func(projectID string) map[string]int {
		out := map[string]int{}
		for table, q := range queries {
			n, err := query(q, projectID)
			if err != nil {
				t.Fatalf("%s: %v", q, err)
			}
			out[table] = n
		}
		return out
	}
}
