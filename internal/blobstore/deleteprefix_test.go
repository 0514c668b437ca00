package blobstore

import (
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
)

// mapStore is a minimal Store for testing the helpers.
type mapStore struct {
	objs    map[string]int64
	deleted []string
}

func (m *mapStore) Put(context.Context, string, io.Reader, int64) error { return nil }
func (m *mapStore) Get(context.Context, string, int64, int64) (io.ReadCloser, error) {
	return nil, ErrNotFound
}
func (m *mapStore) Stat(context.Context, string) (int64, error) { return 0, ErrNotFound }
func (m *mapStore) Delete(ctx context.Context, key string) error {
	m.deleted = append(m.deleted, key)
	delete(m.objs, key)
	return nil
}
func (m *mapStore) List(ctx context.Context, prefix string, fn func(Object) error) error {
	var keys []string
	for k := range m.objs {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		if err := fn(Object{Key: k, Size: m.objs[k]}); err != nil {
			return err
		}
	}
	return nil
}

type batchStore struct {
	mapStore
	calls []string
}

func (b *batchStore) DeletePrefix(ctx context.Context, prefix string) (int, int64, error) {
	b.calls = append(b.calls, prefix)
	return 7, 70, nil
}

func TestDeletePrefixGeneric(t *testing.T) {
	m := &mapStore{objs: map[string]int64{"p/a": 1, "p/b/c": 2, "pq": 4, "q": 8}}
	n, b, err := DeletePrefix(t.Context(), m, "p/")
	if err != nil || n != 2 || b != 3 {
		t.Fatalf("DeletePrefix(p/) = %d, %d, %v; want 2, 3, nil", n, b, err)
	}
	if !slices.Equal(m.deleted, []string{"p/a", "p/b/c"}) {
		t.Errorf("deleted %v", m.deleted)
	}
	for _, bad := range []string{"", "/", "../", "a//"} {
		if _, _, err := DeletePrefix(t.Context(), m, bad); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("DeletePrefix(%q) = %v, want ErrInvalidKey", bad, err)
		}
	}
}

func TestDeletePrefixPrefersPrefixDeleter(t *testing.T) {
	s := &batchStore{mapStore: mapStore{objs: map[string]int64{"p/a": 1}}}
	n, b, err := DeletePrefix(t.Context(), s, "p/")
	if err != nil || n != 7 || b != 70 || !slices.Equal(s.calls, []string{"p/"}) || len(s.deleted) != 0 {
		t.Errorf("DeletePrefix = %d, %d, %v; calls %v, deletes %v", n, b, err, s.calls, s.deleted)
	}
	// The helper validates before delegating.
	if _, _, err := DeletePrefix(t.Context(), s, "../"); !errors.Is(err, ErrInvalidKey) || len(s.calls) != 1 {
		t.Errorf("DeletePrefix(../) = %v after %d calls", err, len(s.calls))
	}
}
