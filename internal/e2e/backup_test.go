package e2e

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sandkeep/sandkeep/internal/agent"
	"github.com/sandkeep/sandkeep/internal/coordtest"
	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/pack"
	"github.com/sandkeep/sandkeep/internal/remote"
	"github.com/sandkeep/sandkeep/internal/repo"
	"github.com/sandkeep/sandkeep/internal/workspacetest"
)

var backends = []struct {
	name string
	opts coordtest.Options
}{
	{"local", coordtest.Options{}},
	{"s3", coordtest.Options{S3: true}},
}

func agentConfig(c *coordtest.Coordinator, token, ws string, t *testing.T) agent.Config {
	return agent.Config{
		Remote:    remote.Config{Addr: c.Addr, Token: token, Version: "test"},
		Workspace: ws,
		CacheDir:  filepath.Join(t.TempDir(), "cache"),
		// The tests compare restored modes bit for bit (the default drops
		// setuid/setgid: see TestRestoreDropsSetuid).
		KeepSetuid: true,
	}
}

func TestBackupDeleteRestore(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			c := coordtest.Start(t, b.opts)
			_, token := c.Project(t, "demo-"+b.name)
			ws := filepath.Join(t.TempDir(), "ws")
			workspacetest.Generate(t, ws, workspacetest.Options{SmallFiles: 10000, LargeSize: 9<<20 + 12345, Seed: 1})
			t.Cleanup(func() { workspacetest.MakeWritable(ws) })
			ctx := context.Background()
			cfg := agentConfig(c, token, ws, t)

			r1, err := agent.SyncOnce(ctx, cfg)
			if err != nil {
				t.Fatalf("first sync: %v", err)
			}
			if !r1.Changed || r1.Version.GetNumber() != 1 {
				t.Fatalf("first sync: changed=%v version=%d, want a new version 1", r1.Changed, r1.Version.GetNumber())
			}
			if r1.Version.GetFiles() < 10000 {
				t.Fatalf("version 1 has %d files, want >= 10000", r1.Version.GetFiles())
			}
			v1 := workspacetest.Snapshot(t, ws)

			// A second sync with no change uploads nothing and makes no version.
			r2, err := agent.SyncOnce(ctx, cfg)
			if err != nil {
				t.Fatalf("second sync: %v", err)
			}
			if r2.Changed || r2.Version.GetNumber() != 1 || r2.Stats.BytesUploaded != 0 || r2.Stats.PacksUploaded != 0 {
				t.Fatalf("no-change sync: changed=%v version=%d uploaded=%d packs=%d", r2.Changed, r2.Version.GetNumber(), r2.Stats.BytesUploaded, r2.Stats.PacksUploaded)
			}

			// Delete the workspace; restore it elsewhere.
			workspacetest.MakeWritable(ws)
			if err := os.RemoveAll(ws); err != nil {
				t.Fatal(err)
			}
			restored := filepath.Join(t.TempDir(), "restored")
			t.Cleanup(func() { workspacetest.MakeWritable(restored) })
			rcfg := cfg
			rcfg.Workspace = restored
			res, err := agent.Restore(ctx, rcfg, 0)
			if err != nil {
				t.Fatalf("restore: %v", err)
			}
			if res.Version.GetNumber() != 1 {
				t.Fatalf("restored version %d, want 1", res.Version.GetNumber())
			}
			if d := workspacetest.Diff(v1, workspacetest.Snapshot(t, restored)); len(d) > 0 {
				t.Fatalf("restored workspace differs: %v", head(d))
			}

			// Change the restored workspace, sync from it (version 2), then
			// restore version 1 and version 2 into fresh directories.
			if err := os.WriteFile(filepath.Join(restored, "README.md"), []byte("# changed\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.RemoveAll(filepath.Join(restored, "src/m01")); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(restored, "new.txt"), []byte("new"), 0o600); err != nil {
				t.Fatal(err)
			}
			r3, err := agent.SyncOnce(ctx, rcfg)
			if err != nil {
				t.Fatalf("sync from restored: %v", err)
			}
			if !r3.Changed || r3.Version.GetNumber() != 2 || r3.Version.GetParent() != 1 {
				t.Fatalf("third sync: changed=%v version=%d parent=%d", r3.Changed, r3.Version.GetNumber(), r3.Version.GetParent())
			}
			v2 := workspacetest.Snapshot(t, restored)
			for _, tc := range []struct {
				version int64
				want    map[string]workspacetest.Entry
			}{{1, v1}, {2, v2}} {
				dir := filepath.Join(t.TempDir(), "v")
				t.Cleanup(func() { workspacetest.MakeWritable(dir) })
				ocfg := cfg
				ocfg.Workspace = dir
				if _, err := agent.Restore(ctx, ocfg, tc.version); err != nil {
					t.Fatalf("restore version %d: %v", tc.version, err)
				}
				if d := workspacetest.Diff(tc.want, workspacetest.Snapshot(t, dir)); len(d) > 0 {
					t.Fatalf("version %d differs: %v", tc.version, head(d))
				}
			}
		})
	}
}

func head(d []string) []string {
	if len(d) > 20 {
		return d[:20]
	}
	return d
}

func TestOneByteEditUploadsAtMostTwoChunks(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			c := coordtest.Start(t, b.opts)
			_, token := c.Project(t, "edit")
			ws := filepath.Join(t.TempDir(), "ws")
			big := filepath.Join(ws, "big.bin")
			workspacetest.RandomFile(t, big, 100<<20, 3)
			ctx := context.Background()
			cfg := agentConfig(c, token, ws, t)
			if _, err := agent.SyncOnce(ctx, cfg); err != nil {
				t.Fatal(err)
			}
			f, err := os.OpenFile(big, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			var one [1]byte
			if _, err := f.ReadAt(one[:], 50<<20); err != nil {
				t.Fatal(err)
			}
			one[0] ^= 0xff
			if _, err := f.WriteAt(one[:], 50<<20); err != nil {
				t.Fatal(err)
			}
			f.Close()
			res, err := agent.SyncOnce(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if !res.Changed {
				t.Fatal("the edit made no new version")
			}
			if res.Stats.ChunksNew > 2 || res.Stats.ChunksNew < 1 {
				t.Fatalf("one-byte edit uploaded %d chunks, want 1 or 2", res.Stats.ChunksNew)
			}
			if res.Stats.BytesUploaded > 2*4<<20+4096 {
				t.Fatalf("one-byte edit uploaded %d bytes", res.Stats.BytesUploaded)
			}
			// And the edited file restores exactly.
			dir := filepath.Join(t.TempDir(), "r")
			rcfg := cfg
			rcfg.Workspace = dir
			if _, err := agent.Restore(ctx, rcfg, 0); err != nil {
				t.Fatal(err)
			}
			workspacetest.RequireEqual(t, ws, dir)
		})
	}
}

func TestCorruptPackFailsRestoreLoudly(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			c := coordtest.Start(t, b.opts)
			pid, token := c.Project(t, "corrupt")
			ws := filepath.Join(t.TempDir(), "ws")
			contents := map[string][]byte{
				"a.txt":   bytes.Repeat([]byte("hello sandkeep "), 5000),
				"b.txt":   bytes.Repeat([]byte("another file "), 7000),
				"c/d.txt": bytes.Repeat([]byte("third "), 9000),
				// Larger than a group member: a frame of its own.
				"e.bin": workspacetest.RandomBytes(7, 300_000),
			}
			for name, data := range contents {
				p := filepath.Join(ws, name)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, data, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			ctx := context.Background()
			cfg := agentConfig(c, token, ws, t)
			if _, err := agent.SyncOnce(ctx, cfg); err != nil {
				t.Fatal(err)
			}
			// Corrupt the frame at the start of a data pack: the chunks
			// stored in it (one blob, or the members of a group frame of
			// small chunks) are the victims; the chunks of other frames
			// must still restore.
			store := c.Server.Blobs
			locs := map[string]metastore.BlobLocation{}
			for name, data := range contents {
				sum := id.Sum(data)
				found, err := c.Server.Meta.LocateBlobs(ctx, pid, []id.ID{sum})
				if err != nil {
					t.Fatal(err)
				}
				l, ok := found[sum]
				if !ok {
					t.Fatalf("chunk of %s not indexed (or not one chunk)", name)
				}
				locs[name] = l
			}
			var frame *metastore.BlobLocation
			for _, l := range locs {
				if l.Offset == 0 {
					frame = &l
					break
				}
			}
			if frame == nil {
				t.Fatal("no chunk at offset 0 of a pack")
			}
			var victims []string
			for name, l := range locs {
				if l.PackID == frame.PackID && l.Offset == frame.Offset {
					victims = append(victims, name)
				}
			}
			if len(victims) == len(contents) {
				t.Fatalf("every file is in the corrupt frame (%v): nothing shows that the others restore", victims)
			}
			key := repo.PackKey(pid, frame.PackID)
			rc, err := store.Get(ctx, key, 0, -1)
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			if _, err := buf.ReadFrom(rc); err != nil {
				t.Fatal(err)
			}
			rc.Close()
			data := buf.Bytes()
			data[frame.Length/2] ^= 0x55
			if err := store.Put(ctx, key, bytes.NewReader(data), int64(len(data))); err != nil {
				t.Fatal(err)
			}
			dir := filepath.Join(t.TempDir(), "r")
			rcfg := cfg
			rcfg.Workspace = dir
			_, err = agent.Restore(ctx, rcfg, 0)
			if err == nil {
				t.Fatal("restore of a corrupt pack succeeded")
			}
			if !errors.Is(err, pack.ErrCorrupt) {
				t.Errorf("error does not wrap pack.ErrCorrupt: %v", err)
			}
			for _, victim := range victims {
				if !strings.Contains(err.Error(), victim) {
					t.Errorf("error does not name %s: %v", victim, err)
				}
				if _, serr := os.Lstat(filepath.Join(dir, victim)); !os.IsNotExist(serr) {
					t.Errorf("%s was left on disk after a failed restore (stat: %v)", victim, serr)
				}
			}
			for name, data := range contents {
				if slices.Contains(victims, name) {
					continue
				}
				got, err := os.ReadFile(filepath.Join(dir, name))
				if err != nil || !bytes.Equal(got, data) {
					t.Errorf("%s not restored intact: %v", name, err)
				}
			}
		})
	}
}
