package gc

import (
	"cmp"
	"slices"
	"time"

	"github.com/sandkeep/sandkeep/internal/metastore"
)

// Select splits a project's versions (in any order) into those the
// retention policy p keeps and those it drops, both newest first. A version
// is kept if it is the newest (the head), pinned, among the p.KeepLast
// newest, or created less than p.KeepWithin before now.
func Select(versions []metastore.Version, p metastore.Retention, now time.Time) (keep, drop []metastore.Version) {
	sorted := slices.Clone(versions)
	slices.SortFunc(sorted, func(a, b metastore.Version) int { return cmp.Compare(b.Number, a.Number) })
	for i, v := range sorted {
		switch {
		case i == 0, v.Pinned, i < p.KeepLast, p.KeepWithin > 0 && now.Sub(v.CreatedAt) < p.KeepWithin:
			keep = append(keep, v)
		default:
			drop = append(drop, v)
		}
	}
	return keep, drop
}
