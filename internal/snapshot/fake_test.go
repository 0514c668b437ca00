package snapshot_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/pack"
	"github.com/sandkeep/sandkeep/internal/snapshot"
	"github.com/sandkeep/sandkeep/internal/tree"
)

var errInjected = errors.New("injected transient failure")

// fakeRemote is an in-memory project. It really decodes what it is sent
// with the pack and tree packages, and records every rule a snapshot must
// follow that it sees broken in violations.
type fakeRemote struct {
	mu     sync.Mutex
	chunks map[id.ID][]byte
	trees  map[id.ID][]byte

	// Failure injection: fail the n-th call (1-based, counted since the
	// last reset) of a method; 0 never fails.
	failFind, failPack, failTrees int
	// indexAfter, when not 0, holds every UploadPack after its sent until
	// that many packs were sent (as a slow coordinator's verification
	// would): only a snapshot that reuses buffers once sent gets there.
	indexAfter int
	sentCount  int
	sentMore   *sync.Cond // on mu: sentCount grew

	// Counters since the last reset.
	findCalls, findIDs, findMisses int
	packCalls, packsStored         int
	packBytes                      int64
	treeCalls, treesStored         int
	chunksStored                   int
	inFlight, maxInFlight          int  // UploadPack calls
	holding, maxHolding            int  // UploadPack calls that did not call sent yet
	treesSent                      bool // UploadTrees was called in this run
	packsAfterTrees                int  // UploadPack calls after the first UploadTrees

	// Over the fake's lifetime.
	storedTimes map[id.ID]int // how many times each chunk arrived in a stored pack
	violations  []string
}

func newFake() *fakeRemote {
	f := &fakeRemote{chunks: map[id.ID][]byte{}, trees: map[id.ID][]byte{}, storedTimes: map[id.ID]int{}}
	f.sentMore = sync.NewCond(&f.mu)
	return f
}

var _ snapshot.Remote = (*fakeRemote)(nil)

// reset clears the per-run counters and failure injections.
func (f *fakeRemote) reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failFind, f.failPack, f.failTrees = 0, 0, 0
	f.findCalls, f.findIDs, f.findMisses = 0, 0, 0
	f.packCalls, f.packsStored, f.packBytes = 0, 0, 0
	f.treeCalls, f.treesStored, f.chunksStored = 0, 0, 0
	f.inFlight, f.maxInFlight = 0, 0
	f.holding, f.maxHolding = 0, 0
	f.indexAfter, f.sentCount = 0, 0
	f.treesSent, f.packsAfterTrees = false, 0
}

func (f *fakeRemote) violate(format string, args ...any) {
	f.violations = append(f.violations, fmt.Sprintf(format, args...))
}

func (f *fakeRemote) check(t testing.TB) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, v := range f.violations {
		t.Error("remote saw:", v)
	}
}

func (f *fakeRemote) FindMissing(ctx context.Context, ids []id.ID) ([]id.ID, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.findCalls++
	if f.failFind == f.findCalls {
		return nil, errInjected
	}
	if len(ids) > snapshot.MaxIDs {
		f.violate("FindMissing with %d ids", len(ids))
	}
	f.findIDs += len(ids)
	var out []id.ID
	for _, x := range ids {
		_, c := f.chunks[x]
		_, t := f.trees[x]
		if !c && !t {
			out = append(out, x)
		}
	}
	f.findMisses += len(out)
	return out, nil
}

func (f *fakeRemote) UploadPack(ctx context.Context, packID id.ID, data []byte, sent func()) error {
	f.mu.Lock()
	f.packCalls++
	fail := f.failPack == f.packCalls
	f.inFlight++
	f.maxInFlight = max(f.maxInFlight, f.inFlight)
	f.holding++
	f.maxHolding = max(f.maxHolding, f.holding)
	holding := true
	release := func() {
		if holding {
			holding = false
			f.holding--
		}
	}
	if f.treesSent {
		// Trees may go up while data still does (uploadEarlyTrees); each
		// tree's chunks must be stored by then, which UploadTrees checks.
		f.packsAfterTrees++
	}
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.inFlight--
		release()
		f.mu.Unlock()
	}()
	if err := ctx.Err(); err != nil {
		return err
	}
	if fail {
		return errInjected
	}
	if id.Sum(data) != packID {
		f.mu.Lock()
		f.violate("pack id %s does not match its bytes", packID.Short())
		f.mu.Unlock()
		return errors.New("bad pack id")
	}
	entries, err := pack.ReadIndex(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return err
	}
	plain := make(map[id.ID][]byte, len(entries))
	for _, e := range entries {
		if e.Type != pack.Data {
			return fmt.Errorf("blob %s of type %s in a data pack", e.ID.Short(), e.Type)
		}
		b, err := pack.DecodeBlob(e, data[e.Offset:e.End()], nil)
		if err != nil {
			return err
		}
		plain[e.ID] = b
	}
	if id.Sum(data) != packID {
		f.mu.Lock()
		f.violate("pack %s changed while it was being uploaded (its buffer reused too early)", packID.Short())
		f.mu.Unlock()
		return errors.New("pack changed during its upload")
	}
	// The object store has the bytes (plain is a copy): the rest is the
	// coordinator's verification and index.
	f.mu.Lock()
	release()
	f.sentCount++
	f.sentMore.Broadcast()
	f.mu.Unlock()
	if sent != nil {
		sent()
	}
	wake := context.AfterFunc(ctx, func() {
		f.mu.Lock()
		f.sentMore.Broadcast()
		f.mu.Unlock()
	})
	defer wake()
	f.mu.Lock()
	defer f.mu.Unlock()
	for f.sentCount < f.indexAfter && ctx.Err() == nil {
		f.sentMore.Wait()
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	f.packsStored++
	f.packBytes += int64(len(data))
	for k, v := range plain {
		f.storedTimes[k]++
		f.chunksStored++
		f.chunks[k] = v
	}
	return nil
}

func (f *fakeRemote) UploadTrees(ctx context.Context, encoded [][]byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.treeCalls++
	f.treesSent = true
	if f.failTrees == f.treeCalls {
		return errInjected
	}
	total := 0
	for _, b := range encoded {
		total += len(b)
	}
	if total > snapshot.MaxTreeBytes {
		f.violate("UploadTrees with %d bytes", total)
	}
	// Validate the whole call first: a real remote stores nothing of a
	// call it rejects.
	batch := map[id.ID]bool{}
	for i, b := range encoded {
		t, err := tree.Decode(b)
		if err != nil {
			f.violate("tree %d does not decode: %v", i, err)
			return err
		}
		for _, n := range t.Nodes {
			switch n.Type {
			case tree.File:
				for _, c := range n.Chunks {
					if _, ok := f.chunks[c.ID]; !ok {
						f.violate("tree %d file %q names chunk %s, not stored", i, n.Name, c.ID.Short())
						return errors.New("missing chunk")
					}
				}
			case tree.Dir:
				if _, ok := f.trees[n.Subtree]; !ok && !batch[n.Subtree] {
					f.violate("tree %d dir %q names subtree %s, not stored", i, n.Name, n.Subtree.Short())
					return errors.New("missing subtree")
				}
			}
		}
		batch[id.Sum(b)] = true
	}
	for _, b := range encoded {
		tid := id.Sum(b)
		if _, dup := f.trees[tid]; !dup {
			f.treesStored++
		}
		f.trees[tid] = bytes.Clone(b)
	}
	return nil
}

// tree returns a stored tree.
func (f *fakeRemote) tree(t testing.TB, tid id.ID) *tree.Tree {
	t.Helper()
	f.mu.Lock()
	b, ok := f.trees[tid]
	f.mu.Unlock()
	if !ok {
		t.Fatalf("tree %s is not stored", tid.Short())
	}
	tr, err := tree.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// content reassembles a file from stored chunks.
func (f *fakeRemote) content(t testing.TB, n *tree.Node) []byte {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]byte, 0, n.Size)
	for _, c := range n.Chunks {
		b, ok := f.chunks[c.ID]
		if !ok {
			t.Fatalf("file %q: chunk %s not stored", n.Name, c.ID.Short())
		}
		if len(b) != int(c.Size) {
			t.Fatalf("file %q: chunk %s has %d bytes, ref says %d", n.Name, c.ID.Short(), len(b), c.Size)
		}
		out = append(out, b...)
	}
	return out
}

// discardRemote lacks everything and keeps nothing: for benchmarks.
type discardRemote struct {
	mu    sync.Mutex
	bytes int64
}

func (d *discardRemote) FindMissing(_ context.Context, ids []id.ID) ([]id.ID, error) {
	return ids, nil
}

func (d *discardRemote) UploadPack(_ context.Context, _ id.ID, data []byte, _ func()) error {
	d.mu.Lock()
	d.bytes += int64(len(data))
	d.mu.Unlock()
	return nil
}

func (d *discardRemote) UploadTrees(context.Context, [][]byte) error { return nil }

// memoRemote keeps nothing but the ids of the chunks it was sent, so that
// FindMissing answers as a real remote would (a chunk seen in an earlier
// pack is not missing): for benchmarks that measure what is stored.
type memoRemote struct {
	discardRemote
	ids map[id.ID]struct{}
}

func newMemoRemote() *memoRemote { return &memoRemote{ids: make(map[id.ID]struct{})} }

func (m *memoRemote) FindMissing(_ context.Context, ids []id.ID) ([]id.ID, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []id.ID
	for _, x := range ids {
		if _, ok := m.ids[x]; !ok {
			out = append(out, x)
		}
	}
	return out, nil
}

func (m *memoRemote) UploadPack(ctx context.Context, pid id.ID, data []byte, sent func()) error {
	entries, err := pack.ReadIndex(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return err
	}
	m.mu.Lock()
	for _, e := range entries {
		m.ids[e.ID] = struct{}{}
	}
	m.mu.Unlock()
	return m.discardRemote.UploadPack(ctx, pid, data, sent)
}
