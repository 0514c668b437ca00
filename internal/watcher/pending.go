package watcher

import (
	"slices"
	"sync"
)

// pending accumulates the paths reported since the last batch went out.
// Reporting never blocks (the event loop calls add); the sender goroutine
// takes a batch whenever wake fires and then waits for the consumer, while
// new reports keep coalescing here.
type pending struct {
	mu      sync.Mutex
	paths   map[string]struct{}
	rescan  bool
	max     int
	dropped int64 // times the set collapsed into a Rescan

	onCollapse func() // tests: called (under mu) when the set collapses

	wake chan struct{} // capacity 1: "there is something to take"
}

func newPending(max int) *pending {
	return &pending{
		paths: make(map[string]struct{}),
		max:   max,
		wake:  make(chan struct{}, 1),
	}
}

// add records that rel may have changed.
func (p *pending) add(rel string) {
	p.mu.Lock()
	if p.rescan {
		p.mu.Unlock()
		return
	}
	if _, ok := p.paths[rel]; ok {
		p.mu.Unlock()
		return
	}
	if len(p.paths) >= p.max {
		p.rescan = true
		p.paths = make(map[string]struct{}) // release the memory
		p.dropped++
		if p.onCollapse != nil {
			p.onCollapse()
		}
	} else {
		p.paths[rel] = struct{}{}
	}
	p.mu.Unlock()
	p.signal()
}

// addRescan records that everything may have changed.
func (p *pending) addRescan() {
	p.mu.Lock()
	if !p.rescan {
		p.rescan = true
		if len(p.paths) > 0 {
			p.paths = make(map[string]struct{})
		}
	}
	p.mu.Unlock()
	p.signal()
}

func (p *pending) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// take returns the pending batch and resets the set; ok is false when there
// is nothing pending.
func (p *pending) take() (ev Event, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.rescan {
		p.rescan = false
		return Event{Rescan: true}, true
	}
	if len(p.paths) == 0 {
		return Event{}, false
	}
	paths := make([]string, 0, len(p.paths))
	for rel := range p.paths {
		paths = append(paths, rel)
	}
	slices.Sort(paths)
	if len(p.paths) > 1024 {
		p.paths = make(map[string]struct{}) // don't keep a big map's buckets
	} else {
		clear(p.paths)
	}
	return Event{Paths: paths}, true
}

func (p *pending) collapsed() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.dropped
}
