package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sandkeep/sandkeep/internal/agent"
	"github.com/sandkeep/sandkeep/internal/blobstore/blobstoretest"
	"github.com/sandkeep/sandkeep/internal/coordcli"
	"github.com/sandkeep/sandkeep/internal/coordtest"
	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/repo"
	"github.com/sandkeep/sandkeep/internal/workspacetest"
)

// TestCheckFindsAndRepairsRot: a byte flipped in a stored chunk of a file
// two versions share. `check` without --read-data sees nothing (the pack
// is there, long enough); `check --read-data` names the pack, the chunk,
// both versions and the file, and exits 1; reading the file fails. `check
// --read-data --repair` forgets the chunk; a sync from a workspace that
// still has the file uploads it again, both versions read back byte for
// byte, and the next check is clean.
func TestCheckFindsAndRepairsRot(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			c := coordtest.Start(t, b.opts)
			ctx := t.Context()
			pid, token := c.Project(t, "rot-"+b.name)
			ws := filepath.Join(t.TempDir(), "ws")
			writeFile(t, ws, "keep.txt", "v1\n")
			big := filepath.Join(ws, "data", "big.bin")
			workspacetest.RandomFile(t, big, 3<<20, 9)
			for i, content := range []string{"v1\n", "v2\n"} {
				writeFile(t, ws, "keep.txt", content)
				if res, err := agent.SyncOnce(ctx, agentConfig(c, token, ws, t)); err != nil || res.Version.GetNumber() != int64(i+1) {
					t.Fatalf("sync %d: %v, %v", i+1, res.Version, err)
				}
			}
			if rep, code := checkCLI(t, c, "--read-data"); code != 0 || len(rep.Problems) != 0 || rep.PacksRead == 0 {
				t.Fatalf("check of sound data: exit %d, %+v", code, rep)
			}

			// Rot: one byte in the middle of big.bin's second chunk.
			head := listVersions(t, c, pid)[0]
			root, _ := id.FromBytes(head.GetRoot())
			n, err := c.Server.Repo.Lookup(ctx, pid, root, "data/big.bin")
			if err != nil || len(n.Chunks) < 2 {
				t.Fatalf("big.bin: %+v, %v", n, err)
			}
			chunk := n.Chunks[1].ID
			loc, err := c.Server.Meta.LocateBlobs(ctx, pid, []id.ID{chunk})
			if err != nil {
				t.Fatal(err)
			}
			l := loc[chunk]
			blobstoretest.FlipByte(t, c.Server.Blobs, repo.PackKey(pid, l.PackID), l.Offset+l.Length/2)

			if rep, code := checkCLI(t, c); code != 0 || len(rep.Problems) != 0 {
				t.Fatalf("check without --read-data: exit %d, %+v (the pack is there, long enough)", code, rep)
			}
			rep, code := checkCLI(t, c, "--read-data")
			if code != 1 || len(rep.Problems) != 1 {
				t.Fatalf("check --read-data of a flipped byte: exit %d, %+v", code, rep)
			}
			p := rep.Problems[0]
			if p.Kind != repo.ProblemBadChunk || p.Project != pid || p.Pack != l.PackID.String() || p.Chunk != chunk.String() ||
				!slices.Equal(p.Versions, []int64{2, 1}) || !slices.Equal(p.Paths, []string{"data/big.bin"}) || p.Repaired {
				t.Fatalf("the problem: %+v (want bad_chunk of pack %s chunk %s, versions 2 1, data/big.bin)", p, l.PackID, chunk)
			}
			if _, err := readFileRPC(t, c, pid, "data/big.bin", 1); err == nil {
				t.Fatal("read a file whose chunk is rotten")
			}
			if m := c.Metrics(t); !strings.Contains(m, `sandkeep_scrub_problems_total{kind="bad_chunk"} 1`) || !strings.Contains(m, "sandkeep_scrub_bytes_verified_total") {
				t.Fatalf("metrics after the check lack the problem:\n%s", grepLines(m, "scrub"))
			}

			rep, code = checkCLI(t, c, "--read-data", "--repair")
			if code != 0 || len(rep.Problems) != 1 || !rep.Problems[0].Repaired || rep.ChunksDropped != 1 {
				t.Fatalf("check --repair: exit %d, %+v", code, rep)
			}
			// A workspace that has the file (a fresh agent state reads it
			// all) uploads the forgotten chunk again.
			if _, err := agent.SyncOnce(ctx, agentConfig(c, token, ws, t)); err != nil {
				t.Fatal(err)
			}
			want, err := os.ReadFile(big)
			if err != nil {
				t.Fatal(err)
			}
			for _, v := range []int64{1, 2} {
				if got, err := readFileRPC(t, c, pid, "data/big.bin", v); err != nil || !bytes.Equal(got, want) {
					t.Fatalf("big.bin at version %d after the repair: %d bytes, %v", v, len(got), err)
				}
			}
			if rep, code := checkCLI(t, c, "--read-data"); code != 0 || len(rep.Problems) != 0 {
				t.Fatalf("check after the repair: exit %d, %+v", code, rep)
			}
		})
	}
}

type checkReport struct {
	PacksRead     int64 `json:"packs_read"`
	ChunksDropped int64 `json:"chunks_dropped"`
	Problems      []struct {
		Project  string   `json:"project"`
		Kind     string   `json:"kind"`
		Pack     string   `json:"pack"`
		Chunk    string   `json:"chunk"`
		Versions []int64  `json:"versions"`
		Paths    []string `json:"paths"`
		Repaired bool     `json:"repaired"`
	} `json:"problems"`
}

// checkCLI runs `sandkeep check --json` against c.
func checkCLI(t *testing.T, c *coordtest.Coordinator, args ...string) (checkReport, int) {
	t.Helper()
	var out, errb bytes.Buffer
	argv := append([]string{"--coordinator", c.Addr, "--admin-token", c.Server.AdminToken, "check", "--json", "--quiet"}, args...)
	code := coordcli.Main(argv, &out, &errb)
	var rep checkReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("sandkeep check %s: exit %d, %v\n%s%s", strings.Join(args, " "), code, err, out.String(), errb.String())
	}
	return rep, code
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
