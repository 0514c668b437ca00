package chunker

import (
	"bytes"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandkeep/sandkeep/internal/id"
)

var randomData = sync.OnceValue(func() []byte { return randBytes(99, 64<<20) })

// sourceData concatenates the .go files under GOROOT/src/net, up to 64 MiB
// (about 4 MB in Go 1.26), or returns nil if there are none.
var sourceData = sync.OnceValue(func() []byte {
	var buf bytes.Buffer
	root := "/usr/local/go/src/net"
	_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || buf.Len() >= 64<<20 {
			return nil
		}
		b, err := os.ReadFile(path)
		if err == nil {
			buf.Write(b[:min(len(b), 64<<20-buf.Len())])
		}
		return nil
	})
	return buf.Bytes()
})

// cpuMeter reports throughput per second of CPU time used by the benchmark
// goroutine's thread ("MB/cpu-s") where the platform can measure it, which
// is steadier than MB/s on a machine shared with other work.
type cpuMeter struct {
	b     *testing.B
	start time.Duration
}

func startCPU(b *testing.B) *cpuMeter {
	runtime.LockOSThread()
	return &cpuMeter{b: b, start: threadCPU()}
}

func (m *cpuMeter) stop(bytes int64) {
	used := threadCPU() - m.start
	runtime.UnlockOSThread()
	if used > 0 && m.start >= 0 {
		m.b.ReportMetric(float64(bytes)*float64(m.b.N)/used.Seconds()/1e6, "MB/cpu-s")
	}
}

func benchCut(b *testing.B, data []byte) {
	if len(data) == 0 {
		b.Skip("no data")
	}
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	m := startCPU(b)
	chunks := 0
	for b.Loop() {
		for d := data; len(d) > 0; chunks++ {
			d = d[Cut(d, DefaultParams, true):]
		}
	}
	m.stop(int64(len(data)))
	b.ReportMetric(float64(len(data))*float64(b.N)/float64(chunks), "B/chunk")
}

// BenchmarkCut measures chunking alone with DefaultParams.
func BenchmarkCut(b *testing.B) {
	b.Run("random", func(b *testing.B) { benchCut(b, randomData()) })
	b.Run("source", func(b *testing.B) { benchCut(b, sourceData()) })
}

// BenchmarkChunker measures chunking through a Chunker reading from memory.
func BenchmarkChunker(b *testing.B) {
	data := randomData()
	r := bytes.NewReader(data)
	c := New(r, DefaultParams)
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	m := startCPU(b)
	defer m.stop(int64(len(data)))
	for b.Loop() {
		r.Reset(data)
		c.Reset(r)
		for {
			if _, err := c.Next(); err == io.EOF {
				break
			} else if err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkChunkAndHash measures chunking plus BLAKE3 of every chunk on one
// goroutine, the per-file work of a backup.
func BenchmarkChunkAndHash(b *testing.B) {
	data := randomData()
	r := bytes.NewReader(data)
	c := New(r, DefaultParams)
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	m := startCPU(b)
	defer m.stop(int64(len(data)))
	var sink id.ID
	for b.Loop() {
		r.Reset(data)
		c.Reset(r)
		for {
			chunk, err := c.Next()
			if err == io.EOF {
				break
			} else if err != nil {
				b.Fatal(err)
			}
			s := id.Sum(chunk)
			sink[0] ^= s[0]
		}
	}
	_ = sink
}

// BenchmarkHash measures BLAKE3 alone on 1 MiB blocks, for comparison.
func BenchmarkHash(b *testing.B) {
	data := randomData()
	b.SetBytes(int64(len(data)))
	m := startCPU(b)
	defer m.stop(int64(len(data)))
	for b.Loop() {
		for d := data; len(d) > 0; d = d[1<<20:] {
			id.Sum(d[:1<<20])
		}
	}
}
