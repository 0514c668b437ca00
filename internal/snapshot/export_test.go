package snapshot

import "github.com/sandkeep/sandkeep/internal/id"

// SetAfterRead installs a hook run after each read of a file, before the
// file is stat'ed again (attempt counts from 0).
func SetAfterRead(o *Options, f func(relPath string, attempt int)) { o.afterRead = f }

// DirTree returns the tree id an index holds for a directory.
func DirTree(x *Index, dir string) (id.ID, bool) {
	d, ok := x.dirs[dir]
	if !ok {
		return id.ID{}, false
	}
	return d.tree, true
}

// Dirs returns the directories an index knows.
func Dirs(x *Index) []string {
	var out []string
	for p := range x.dirs {
		out = append(out, p)
	}
	return out
}
