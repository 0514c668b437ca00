package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The ensure part (-only ensure) times what a user waits for on first
// access: `sandkeep sandbox ensure` on a project whose head is a 1 GiB /
// 20k-file tree, with the local provider, on an empty workspace and a fresh
// agent cache (a new sandbox), until the coordinator answers that the
// sandbox is ready with the head restored. The reference is restic's
// restore of the same tree with a cold cache.

const (
	ensureRecipe = "ensure-tree/v1"
	// ensureFiles and ensureBytes are the tree's size: source-like files,
	// then assets of ensureAsset bytes until 1 GiB (19,872 and 123: 19,995
	// files, since the assets come to fewer than the 128 set aside).
	ensureFiles = 20_000
	ensureBytes = 1 << 30
	ensureAsset = 8 << 20
)

// ensureResult is the ensure part's samples.
type ensureResult struct {
	Files   int            `json:"files"`
	Bytes   int64          `json:"bytes"`
	Initial sample         `json:"initial_sync"`
	Ensure  []ensureSample `json:"ensure"`
	Restic  []sample       `json:"restic_restore"`
}

type ensureSample struct {
	sample
	// Took is the coordinator's own measure of the ensure (the CLI's wall
	// time less connecting and printing).
	Took    float64 `json:"took_seconds"`
	Sandbox string  `json:"sandbox_id"`
}

// ensureTree returns the cached 1 GiB / 20k-file tree, generating it
// first: ensureFiles-ensureBytes/ensureAsset source-like files (treeGen),
// then assets of ensureAsset bytes, alternately random and text, up to
// ensureBytes in all.
func ensureTree(ctx context.Context, benchDir string) (string, treeInfo, error) {
	dir := filepath.Join(benchDir, "trees", "ensure-1g")
	infoPath := dir + ".json"
	var info treeInfo
	if b, err := os.ReadFile(infoPath); err == nil && json.Unmarshal(b, &info) == nil && info.Recipe == ensureRecipe {
		if _, err := os.Stat(dir); err == nil {
			return dir, info, nil
		}
	}
	logf("generating a 1 GiB tree of %d files in %s (once; cached)", ensureFiles, dir)
	start := time.Now()
	tmp := dir + ".tmp"
	for _, d := range []string{dir, tmp} {
		if err := removeAll(d); err != nil {
			return "", info, err
		}
	}
	_ = os.Remove(infoPath)
	assets := ensureBytes / ensureAsset
	g := newTreeGen(ensureFiles - assets)
	info = treeInfo{Recipe: ensureRecipe, Files: ensureFiles - assets}
	if err := g.generate(ctx, tmp, &info); err != nil {
		return "", info, err
	}
	adir := filepath.Join(tmp, "assets")
	if err := os.MkdirAll(adir, 0o755); err != nil {
		return "", info, err
	}
	info.Dirs++
	var seed [32]byte
	copy(seed[:], ensureRecipe)
	rng := rand.New(rand.NewChaCha8(seed))
	buf := make([]byte, ensureAsset)
	for i := 0; info.Bytes < ensureBytes; i++ {
		if err := ctx.Err(); err != nil {
			return "", info, err
		}
		n := min(ensureAsset, ensureBytes-int(info.Bytes))
		if i%2 == 0 {
			for j := 0; j+8 <= n; j += 8 {
				v := rng.Uint64()
				for k := range 8 {
					buf[j+k] = byte(v >> (8 * k))
				}
			}
		} else {
			// content fills to a size of its own choosing: one file's
			// text at a time, appended.
			var file []byte
			text := buf[:0]
			for len(text) < n {
				file = g.content(file[:0])
				text = append(text, file...)
			}
			buf = text[:cap(text)]
		}
		if err := writeFile(filepath.Join(adir, fmt.Sprintf("asset-%03d.bin", i)), buf[:n], 0o644); err != nil {
			return "", info, err
		}
		info.Files++
		info.Bytes += int64(n)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return "", info, err
	}
	b, _ := json.MarshalIndent(info, "", "  ")
	if err := os.WriteFile(infoPath, b, 0o644); err != nil {
		return "", info, err
	}
	logf("generated %d files (%.1f MB) in %.1f s", info.Files, float64(info.Bytes)/1e6, time.Since(start).Seconds())
	return dir, info, nil
}

// ensurePart syncs the tree into a project, then, o.runs times, ensures a
// new sandbox (its workspace empty, its cache fresh), checks its workspace
// against the tree and destroys it; restic backs the tree up once and
// restores it o.runs times with a cold cache.
func (b *bench) ensurePart(benchDir string) (*ensureResult, error) {
	ctx := b.r.ctx
	tree, info, err := ensureTree(ctx, benchDir)
	if err != nil {
		return nil, fmt.Errorf("ensure tree: %w", err)
	}
	want, err := scan(ctx, tree)
	if err != nil {
		return nil, err
	}
	res := &ensureResult{}
	res.Files, res.Bytes = want.stats()
	logf("ensure tree: %d files, %.1f MB (%d generated)", res.Files, float64(res.Bytes)/1e6, info.Files)

	project, token, err := b.newProject("sk-ensure", "bench-ensure")
	if err != nil {
		return nil, err
	}
	env := b.agentEnv(token, "sk-ensure-cache")
	logf("ensure: initial sync of the tree")
	if _, res.Initial, err = b.r.run("sk-ensure-initial-sync", "", env, b.agent, "sync", "--once", "--workspace", tree); err != nil {
		return nil, err
	}
	logf("ensure: initial sync %.2f s", res.Initial.Seconds)

	admin := []string{"--coordinator", b.coord.addr, "--data", b.coordData}
	for i := 1; i <= b.o.runs; i++ {
		n := strconv.Itoa(i)
		out, s, err := b.r.run("sk-ensure-"+n, "", nil, b.sandkeep, append([]string{"sandbox", "ensure", "--project", project, "--json", "--quiet"}, admin...)...)
		if err != nil {
			return nil, err
		}
		var resp struct {
			Sandbox struct {
				ID         string `json:"id"`
				ProviderID string `json:"provider_id"` // the local provider's directory
			} `json:"sandbox"`
			Seconds float64 `json:"seconds"`
			Created bool    `json:"created"`
		}
		if err := json.Unmarshal([]byte(out), &resp); err != nil || resp.Sandbox.ID == "" || resp.Sandbox.ProviderID == "" {
			return nil, fmt.Errorf("sandbox ensure printed %q (log %s): %v", strings.TrimSpace(out), s.Log, err)
		}
		if !resp.Created {
			return nil, fmt.Errorf("sandbox ensure run %d reused sandbox %s: the first-boot case was not measured", i, resp.Sandbox.ID)
		}
		logf("ensure run %d: sandbox %s ready in %.2f s (coordinator: %.2f s); verifying", i, resp.Sandbox.ID, s.Seconds, resp.Seconds)
		sbx := filepath.Join(b.tmp, "sandboxes", resp.Sandbox.ProviderID)
		verr := verify(ctx, "sandkeep ensure", filepath.Join(sbx, "workspace"), want)
		// The agent's log goes with the sandbox: keep a copy.
		if err := copyFile(filepath.Join(sbx, "agent.log"), filepath.Join(b.r.dir, "sk-ensure-"+n+"-agent.log"), 0o644); err != nil {
			logf("warning: the agent log of sandbox %s: %v", resp.Sandbox.ID, err)
		}
		if _, _, err := b.r.run("sk-ensure-destroy-"+n, "", nil, b.sandkeep, append([]string{"sandbox", "destroy", resp.Sandbox.ID}, admin...)...); err != nil {
			return nil, err
		}
		if verr != nil {
			return nil, verr
		}
		res.Ensure = append(res.Ensure, ensureSample{sample: s, Took: resp.Seconds, Sandbox: resp.Sandbox.ID})
	}

	if b.restic == "" {
		return res, nil
	}
	cache := filepath.Join(b.tmp, "restic-ensure-cache")
	renv := b.resticEnv("ensure")
	if _, _, err := b.r.run("restic-ensure-init", "", renv, b.restic, "init", "--cache-dir", cache); err != nil {
		return nil, err
	}
	logf("ensure: restic backup of the tree")
	if _, _, err := b.r.run("restic-ensure-backup", tree, renv, b.restic, resticBackup(cache)...); err != nil {
		return nil, err
	}
	for i := 1; i <= b.o.runs; i++ {
		n := strconv.Itoa(i)
		_ = removeAll(cache)
		dst := filepath.Join(b.tmp, "restic-ensure-restore-"+n)
		_, s, err := b.r.run("restic-ensure-restore-"+n, "", renv, b.restic, resticRestore(dst, cache)...)
		if err != nil {
			return nil, err
		}
		logf("ensure run %d: restic restore %.2f s; verifying", i, s.Seconds)
		if err := verify(ctx, "restic", dst, want); err != nil {
			return nil, err
		}
		_ = removeAll(dst)
		res.Restic = append(res.Restic, s)
	}
	return res, nil
}

// printEnsure prints the ensure part's line.
func printEnsure(e *ensureResult) {
	var sk, took, rs []float64
	for _, s := range e.Ensure {
		sk, took = append(sk, s.Seconds), append(took, s.Took)
	}
	for _, s := range e.Restic {
		rs = append(rs, s.Seconds)
	}
	fmt.Printf("ensure-to-ready (sandbox ensure, local provider, new sandbox: empty workspace, fresh cache; %d files, %.1f MB; median of %d)\n",
		e.Files, float64(e.Bytes)/1e6, len(sk))
	fmt.Printf("  sandkeep %.2f s (%s; coordinator's own: %.2f s)", median(sk), spread(sk), median(took))
	if len(rs) > 0 {
		fmt.Printf("   restic restore %.2f s (%s)   ratio %.2fx", median(rs), spread(rs), median(sk)/median(rs))
	}
	fmt.Printf("\n  initial sync of the tree %.2f s (agent CPU %.2f s, peak RSS %.0f MiB)\n", e.Initial.Seconds, e.Initial.CPUSeconds, e.Initial.MaxRSSMiB)
}

// spread returns "min–max" of v, or "one run".
func spread(v []float64) string {
	if len(v) < 2 {
		return "one run"
	}
	lo, hi := v[0], v[0]
	for _, x := range v {
		lo, hi = min(lo, x), max(hi, x)
	}
	return fmt.Sprintf("%.2f–%.2f s", lo, hi)
}
