package pack

import (
	"encoding/binary"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sandkeep/sandkeep/internal/id"
)

const benchChunk = 1 << 20 // the average chunk size

// sourceCode returns about n bytes of Go source from GOROOT (or synthetic
// text when GOROOT is not readable).
func sourceCode(tb testing.TB, n int) []byte {
	var out []byte
	root := ""
	if out, err := exec.Command("go", "env", "GOROOT").Output(); err == nil {
		root = filepath.Join(strings.TrimSpace(string(out)), "src")
	}
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || len(out) >= n {
			return fs.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(p, ".go") {
			b, err := os.ReadFile(p)
			if err == nil {
				out = append(out, b...)
			}
		}
		return nil
	})
	if len(out) < n {
		tb.Logf("GOROOT source not found, using synthetic text")
		out = append(out, textBytes(n-len(out))...)
	}
	return out[:n]
}

func benchAdd(b *testing.B, corpus []byte) {
	chunks := len(corpus) / benchChunk
	w := NewWriter()
	var stored, raw int64
	b.SetBytes(benchChunk)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		c := corpus[(i%chunks)*benchChunk : (i%chunks+1)*benchChunk]
		var fake id.ID // Add does not hash: give each call a fresh id
		binary.LittleEndian.PutUint64(fake[:], uint64(i))
		e, err := w.Add(Data, fake, c)
		if err != nil {
			b.Fatal(err)
		}
		stored += int64(e.Length)
		raw += int64(e.RawLength)
		if w.Size() >= TargetSize {
			if _, _, _, err := w.Finish(); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(stored)/float64(raw), "ratio")
}

func BenchmarkAdd(b *testing.B) {
	b.Run("source", func(b *testing.B) { benchAdd(b, sourceCode(b, 16<<20)) })
	b.Run("random", func(b *testing.B) { benchAdd(b, randomBytes(10, 16<<20)) })
}

func BenchmarkDecodeBlob(b *testing.B) {
	for _, tc := range []struct {
		name string
		data []byte
	}{{"source", sourceCode(b, benchChunk)}, {"random", randomBytes(11, benchChunk)}} {
		b.Run(tc.name, func(b *testing.B) {
			w := NewWriter()
			e, err := w.Add(Data, id.Sum(tc.data), tc.data)
			if err != nil {
				b.Fatal(err)
			}
			stored := w.buf[e.Offset:e.End()]
			dst := make([]byte, benchChunk)
			b.SetBytes(benchChunk)
			for b.Loop() {
				if _, err := DecodeBlob(e, stored, dst); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkReferenceBLAKE3 hashes the same chunk size, as a yardstick for
// the machine the other benchmarks ran on.
func BenchmarkReferenceBLAKE3(b *testing.B) {
	data := sourceCode(b, benchChunk)
	b.SetBytes(benchChunk)
	for b.Loop() {
		id.Sum(data)
	}
}
