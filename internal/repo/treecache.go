package repo

import (
	"container/list"
	"sync"

	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/tree"
)

// treeCache is a byte-bounded LRU of decoded trees. Trees are immutable and
// content-addressed, so a cached tree is never stale; the project is part of
// the key only so that one project can never read another's trees.
type treeCache struct {
	mu    sync.Mutex
	max   int64
	size  int64
	ll    *list.List
	items map[treeKey]*list.Element
}

type treeKey struct {
	project string
	id      id.ID
}

type treeItem struct {
	key  treeKey
	t    *tree.Tree
	cost int64
}

func newTreeCache(max int64) *treeCache {
	return &treeCache{max: max, ll: list.New(), items: make(map[treeKey]*list.Element)}
}

func (c *treeCache) get(project string, tid id.ID) (*tree.Tree, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.items[treeKey{project, tid}]
	if !ok {
		return nil, false
	}
	c.ll.MoveToFront(e)
	return e.Value.(*treeItem).t, true
}

func (c *treeCache) put(project string, tid id.ID, t *tree.Tree, encodedLen int64) {
	cost := encodedLen*3 + 256 // decoded trees are a few times their encoding
	c.mu.Lock()
	defer c.mu.Unlock()
	k := treeKey{project, tid}
	if e, ok := c.items[k]; ok {
		c.ll.MoveToFront(e)
		return
	}
	if cost > c.max {
		return
	}
	c.items[k] = c.ll.PushFront(&treeItem{key: k, t: t, cost: cost})
	c.size += cost
	for c.size > c.max {
		e := c.ll.Back()
		it := e.Value.(*treeItem)
		c.ll.Remove(e)
		delete(c.items, it.key)
		c.size -= it.cost
	}
}

// dropProject forgets every tree of a project (after it is deleted).
func (c *treeCache) dropProject(project string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, e := range c.items {
		if k.project == project {
			c.size -= e.Value.(*treeItem).cost
			c.ll.Remove(e)
			delete(c.items, k)
		}
	}
}
