package snapshot

import (
	"bytes"
	"testing"
	"time"

	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/tree"
)

// MaxIndexing is how many more uploads than UploadConcurrency a Run has
// in flight, waiting for their index.
const MaxIndexing = maxIndexing

// AdvanceClock moves the package's clock (the one racy stats are judged
// by) forward by d until the test ends. Tests that use it must not run in
// parallel with others of the package.
func AdvanceClock(t testing.TB, d time.Duration) {
	clockSkewNs.Add(int64(d))
	t.Cleanup(func() { clockSkewNs.Add(-int64(d)) })
}

// SetAfterRead installs a hook run after each read of a file, before the
// file is stat'ed again (attempt counts from 0).
func SetAfterRead(o *Options, f func(relPath string, attempt int)) { o.afterRead = f }

// DirTree returns the tree id an index holds for a directory (zero for a
// loose one).
func DirTree(x *Index, dir string) (id.ID, bool) {
	d := x.dir(dir)
	if d == nil {
		return id.ID{}, false
	}
	return d.tree, true
}

// Dirs returns the directories an index knows.
func Dirs(x *Index) []string {
	var out []string
	var walk func(d *dirIndex, p string)
	walk = func(d *dirIndex, p string) {
		if d == nil {
			return
		}
		out = append(out, p)
		if d.loose != nil {
			for name, k := range d.loose.kids {
				walk(k, join(p, name))
			}
			return
		}
		v, err := d.view()
		if err != nil {
			panic(err)
		}
		for i := range v.nodes {
			if v.nodes[i].Type == tree.Dir {
				walk(v.subs[i], join(p, v.nodes[i].Name))
			}
		}
	}
	walk(x.root, "")
	return out
}

// IndexIsComplete reports whether every directory of x has its tree (as
// after a Run, not a restore), checking the invariants of each entry.
func IndexIsComplete(x *Index) bool {
	ok := true
	var walk func(d *dirIndex)
	walk = func(d *dirIndex) {
		if d == nil || d.loose != nil || id.Sum(d.enc) != d.tree {
			ok = false
			return
		}
		v, err := d.view()
		if err != nil {
			ok = false
			return
		}
		for i := range v.nodes {
			if v.nodes[i].Type == tree.Dir {
				if v.subs[i] == nil || v.subs[i].tree != v.nodes[i].Subtree {
					ok = false
					return
				}
				walk(v.subs[i])
			}
		}
	}
	walk(x.root)
	return ok
}

// IndexBytes returns the index as Save would write it.
func IndexBytes(x *Index) []byte {
	x.prepare()
	var b bytes.Buffer
	if err := x.write(&b); err != nil {
		panic(err)
	}
	return b.Bytes()
}

// SetEarlyTreeBytes sets how many bytes of ready trees the early tree
// uploader waits for (1: every time some are ready).
func SetEarlyTreeBytes(o *Options, n int) { o.earlyTreeBytes = n }
