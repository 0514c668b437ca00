package snapshot

import (
	"math"
	"testing"

	"github.com/sandkeep/sandkeep/internal/id"
)

// TestSettling walks the tracker through what a Run does: a tree built
// after its chunks were emitted is ready only once each of them, and every
// chunk emitted before it, has settled; a copy emitted while the first is
// pending settles with it; a copy emitted after the first settled is
// pending again until it settles itself.
func TestSettling(t *testing.T) {
	s := newSettling()
	a, b, c := id.Sum([]byte("a")), id.Sum([]byte("b")), id.Sum([]byte("c"))
	ready := func(mark uint64) bool { return s.oldest() > mark }
	if s.oldest() != math.MaxUint64 || !ready(0) {
		t.Fatal("an empty tracker holds something")
	}
	s.emit(a) // 1
	s.emit(b) // 2
	treeAB := s.mark()
	s.emit(a) // 3: a copy while a is pending
	s.emit(c) // 4
	treeAC := s.mark()
	if ready(treeAB) {
		t.Fatal("a tree is ready while its chunks are pending")
	}
	s.settle(b)
	if ready(treeAB) {
		t.Fatal("a tree is ready while its chunk a is pending")
	}
	s.settle(a) // settles the copy too
	if !ready(treeAB) {
		t.Fatal("a tree whose chunks settled is not ready")
	}
	if ready(treeAC) {
		t.Fatal("a tree is ready while its chunk c is pending")
	}
	s.settle(c)
	if !ready(treeAC) {
		t.Fatal("a tree whose chunks settled is not ready")
	}
	s.emit(a) // 5: a copy after a settled
	treeA2 := s.mark()
	if ready(treeA2) {
		t.Fatal("a tree is ready while a copy of its chunk is pending")
	}
	if !ready(treeAC) {
		t.Fatal("an earlier tree waits for a chunk emitted after it was built")
	}
	s.settle(a)
	if !ready(treeA2) {
		t.Fatal("not ready after the copy settled")
	}
}
