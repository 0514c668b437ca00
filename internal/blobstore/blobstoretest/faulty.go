package blobstoretest

import (
	"context"
	"io"
	"sync/atomic"

	"github.com/sandkeep/sandkeep/internal/blobstore"
)

// Faulty wraps a Backend for tests that need a store to fail or to let
// them step in: each hook, when set, runs before the operation and an
// error it returns is the operation's answer (the wrapped store is not
// called). Calls counts every operation by name. The one faulty store of
// the test suites.
type Faulty struct {
	blobstore.Backend
	OnPut    func(key string) error
	OnGet    func(key string) error
	OnStat   func(key string) error
	OnDelete func(n int64, key string) error // n: this Delete's number, from 1
	OnList   func(prefix string) error

	puts, gets, stats, deletes, lists atomic.Int64
}

// Put implements blobstore.Store.
func (f *Faulty) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	f.puts.Add(1)
	if f.OnPut != nil {
		if err := f.OnPut(key); err != nil {
			return err
		}
	}
	return f.Backend.Put(ctx, key, r, size)
}

// Get implements blobstore.Store.
func (f *Faulty) Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	f.gets.Add(1)
	if f.OnGet != nil {
		if err := f.OnGet(key); err != nil {
			return nil, err
		}
	}
	return f.Backend.Get(ctx, key, offset, length)
}

// Stat implements blobstore.Store.
func (f *Faulty) Stat(ctx context.Context, key string) (int64, error) {
	f.stats.Add(1)
	if f.OnStat != nil {
		if err := f.OnStat(key); err != nil {
			return 0, err
		}
	}
	return f.Backend.Stat(ctx, key)
}

// Delete implements blobstore.Store.
func (f *Faulty) Delete(ctx context.Context, key string) error {
	n := f.deletes.Add(1)
	if f.OnDelete != nil {
		if err := f.OnDelete(n, key); err != nil {
			return err
		}
	}
	return f.Backend.Delete(ctx, key)
}

// List implements blobstore.Store.
func (f *Faulty) List(ctx context.Context, prefix string, fn func(blobstore.Object) error) error {
	f.lists.Add(1)
	if f.OnList != nil {
		if err := f.OnList(prefix); err != nil {
			return err
		}
	}
	return f.Backend.List(ctx, prefix, fn)
}

// Calls returns how many times each operation was called.
func (f *Faulty) Calls() map[string]int64 {
	return map[string]int64{"put": f.puts.Load(), "get": f.gets.Load(), "stat": f.stats.Load(), "delete": f.deletes.Load(), "list": f.lists.Load()}
}
