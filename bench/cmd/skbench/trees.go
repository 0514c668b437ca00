package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// treeRecipe names the way the synthetic trees are generated; change it when
// the generator changes so cached trees are rebuilt.
const treeRecipe = "synthetic-source-tree/v1"

// treeInfo describes a cached synthetic tree; it is kept next to it.
type treeInfo struct {
	Recipe string `json:"recipe"`
	Files  int    `json:"files"`
	Dirs   int    `json:"dirs"`
	Bytes  int64  `json:"bytes"`
}

// syntheticTree returns the cached generated tree of n files under
// benchDir/trees, generating it first if it is missing or was made by
// another recipe. The tree is deterministic for a given n.
func syntheticTree(ctx context.Context, benchDir string, n int) (string, treeInfo, error) {
	dir := filepath.Join(benchDir, "trees", fmt.Sprintf("files-%d", n))
	infoPath := dir + ".json"
	var info treeInfo
	if b, err := os.ReadFile(infoPath); err == nil && json.Unmarshal(b, &info) == nil &&
		info.Recipe == treeRecipe && info.Files == n {
		if _, err := os.Stat(dir); err == nil {
			return dir, info, nil
		}
	}
	logf("generating a tree of %d source-like files in %s (once; cached)", n, dir)
	start := time.Now()
	tmp := dir + ".tmp"
	for _, d := range []string{dir, tmp} {
		if err := removeAll(d); err != nil {
			return "", info, err
		}
	}
	_ = os.Remove(infoPath)
	g := newTreeGen(n)
	info = treeInfo{Recipe: treeRecipe, Files: n}
	if err := g.generate(ctx, tmp, &info); err != nil {
		return "", info, err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return "", info, err
	}
	b, _ := json.MarshalIndent(info, "", "  ")
	if err := os.WriteFile(infoPath, b, 0o644); err != nil {
		return "", info, err
	}
	logf("generated %d files in %d directories (%.1f MB) in %.1f s", info.Files, info.Dirs, float64(info.Bytes)/1e6, time.Since(start).Seconds())
	return dir, info, nil
}

// treeGen builds a tree that looks like a source checkout: a few top-level
// directories, packages at depth 3–6 holding 10–30 files each, file sizes
// log-normal around 1.5 KiB (80 B – 64 KiB), text made of identifiers and
// punctuation so it compresses roughly like code.
type treeGen struct {
	rng   *rand.Rand
	files int
}

type genDir struct {
	rel   string
	depth int
	kids  []*genDir
	names map[string]bool // child names taken (dirs and files)
}

var (
	dirWords = strings.Fields(`api app auth billing cache cli client cmd codec common config core crypto db
		docs events fixtures gateway handlers http image index internal jobs lib log metrics middleware
		migrations models net notify parser pkg plugins proto queue render router rpc scheduler schema
		search server service session storage store stream sync templates test testdata tools types ui
		upload user util validate vendor web worker`)
	identWords = strings.Fields(`ctx err req resp buf data id key value name path size count index offset
		len cfg opts client server conn user item items result results node tree entry entries list map
		set get put load store read write open close parse format encode decode handle update delete create
		new init start stop run wait lock unlock check valid error string int bool bytes time duration
		logger cache hash token session query row rows table field fields state status config options`)
	keywords = strings.Fields(`func return if else for range var const type struct interface import package
		def class self async await let fn pub use impl match while switch case break continue nil None null
		true false`)
	exts = []struct {
		ext    string
		weight int
	}{{".go", 30}, {".ts", 18}, {".py", 18}, {".js", 10}, {".md", 5}, {".json", 5}, {".yaml", 5}, {".c", 5}, {".h", 4}}
	punct = []string{" = ", "(", ")", ", ", ".", " := ", " { ", " }", "[", "]", ": ", " + ", " == ", " != ", "; "}
)

func newTreeGen(n int) *treeGen {
	var seed [32]byte
	copy(seed[:], "skbench-tree-"+strconv.Itoa(n))
	return &treeGen{rng: rand.New(rand.NewChaCha8(seed)), files: n}
}

func (g *treeGen) generate(ctx context.Context, root string, info *treeInfo) error {
	if err := os.MkdirAll(root, 0o755); err != nil {
		return err
	}
	top := &genDir{names: map[string]bool{}}
	left := g.files
	var buf []byte
	// writeFiles fills a new directory with k files.
	writeFiles := func(d *genDir, k int) error {
		for range k {
			if left == 0 {
				return nil
			}
			name := g.childName(d, g.fileStem()+g.ext())
			buf = g.content(buf[:0])
			if err := os.WriteFile(filepath.Join(root, d.rel, name), buf, 0o644); err != nil {
				return err
			}
			info.Bytes += int64(len(buf))
			left--
		}
		return nil
	}
	newDir := func(parent *genDir) (*genDir, error) {
		d := &genDir{depth: parent.depth + 1, names: map[string]bool{}}
		d.rel = filepath.Join(parent.rel, g.childName(parent, dirWords[g.rng.IntN(len(dirWords))]))
		parent.kids = append(parent.kids, d)
		info.Dirs++
		if err := os.Mkdir(filepath.Join(root, d.rel), 0o755); err != nil {
			return nil, err
		}
		// Packages (depth >= 3) hold 10–30 files; the levels above a few
		// (READMEs, build files).
		k := g.rng.IntN(3)
		if d.depth >= 3 {
			k = 10 + g.rng.IntN(21)
		}
		return d, writeFiles(d, k)
	}
	for left > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		depth := 3 + g.rng.IntN(4) // the new package's depth: 3..6
		d := top
		for d.depth < depth-1 {
			// Descend into an existing directory, or open a new one with
			// probability 1/(children+1): directories get a few children
			// (logarithmic in the visits), not hundreds.
			if len(d.kids) == 0 || g.rng.IntN(len(d.kids)+1) == 0 {
				nd, err := newDir(d)
				if err != nil {
					return err
				}
				d = nd
			} else {
				d = d.kids[g.rng.IntN(len(d.kids))]
			}
		}
		if _, err := newDir(d); err != nil {
			return err
		}
	}
	return nil
}

// childName returns base, or base2, base3 … if it is taken in d.
func (g *treeGen) childName(d *genDir, base string) string {
	name := base
	for i := 2; d.names[name]; i++ {
		stem, ext := base, ""
		if j := strings.LastIndexByte(base, '.'); j > 0 {
			stem, ext = base[:j], base[j:]
		}
		name = stem + strconv.Itoa(i) + ext
	}
	d.names[name] = true
	return name
}

func (g *treeGen) fileStem() string {
	a := identWords[g.rng.IntN(len(identWords))]
	if g.rng.IntN(2) == 0 {
		return a
	}
	return a + "_" + identWords[g.rng.IntN(len(identWords))]
}

func (g *treeGen) ext() string {
	total := 0
	for _, e := range exts {
		total += e.weight
	}
	n := g.rng.IntN(total)
	for _, e := range exts {
		if n < e.weight {
			return e.ext
		}
		n -= e.weight
	}
	return ".txt"
}

// content appends a source-like text of log-normal size to buf.
func (g *treeGen) content(buf []byte) []byte {
	size := int(math.Exp(math.Log(1536) + 0.9*g.rng.NormFloat64()))
	size = min(max(size, 80), 64<<10)
	for len(buf) < size {
		indent := g.rng.IntN(4)
		for range indent {
			buf = append(buf, '\t')
		}
		if g.rng.IntN(3) == 0 {
			buf = append(buf, keywords[g.rng.IntN(len(keywords))]...)
			buf = append(buf, ' ')
		}
		for t := 2 + g.rng.IntN(8); t > 0; t-- {
			buf = append(buf, identWords[g.rng.IntN(len(identWords))]...)
			if t > 1 {
				buf = append(buf, punct[g.rng.IntN(len(punct))]...)
			}
		}
		buf = append(buf, '\n')
	}
	return buf
}

// parseSizes parses "1k,10k,100k" into file counts.
func parseSizes(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(strings.ToLower(f))
		if f == "" {
			continue
		}
		mult := 1
		switch {
		case strings.HasSuffix(f, "k"):
			mult, f = 1000, strings.TrimSuffix(f, "k")
		case strings.HasSuffix(f, "m"):
			mult, f = 1000000, strings.TrimSuffix(f, "m")
		}
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("-sizes: %q is not a file count like 1k, 10k or 2500", f)
		}
		out = append(out, n*mult)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("-sizes: no sizes")
	}
	return out, nil
}

// sizeLabel prints a file count the way -sizes takes it: 1k, 10k, 2500.
func sizeLabel(n int) string {
	if n >= 1000 && n%1000 == 0 {
		return strconv.Itoa(n/1000) + "k"
	}
	return strconv.Itoa(n)
}
