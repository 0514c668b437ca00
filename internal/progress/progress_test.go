package progress

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }

func TestLine(t *testing.T) {
	tests := []struct {
		name string
		got  string
		want string
	}{
		{"half way", Line("sync", 5, 10, 50<<20, 100<<20, 10*time.Second), "sync: 5/10 files, 50.0 MiB/100.0 MiB, 5.0 MiB/s, 10s, ETA 10s"},
		{"done", Line("restore", 3, 3, 1500, 1500, time.Second), "restore: 3/3 files, 1.5 KiB/1.5 KiB, 1.5 KiB/s, 1s"},
		{"nothing yet", Line("sync", 0, 0, 0, 0, 0), "sync: 0/0 files, 0 B/0 B, 0 B/s, 0s"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, tt.got, tt.want)
		}
	}
}

// Not a terminal: nothing is drawn in place; a nil writer (--quiet) gets
// nothing at all.
func TestStartNotATerminal(t *testing.T) {
	var b syncBuf
	stop := Start(&b, func(time.Duration) string { return "x" })
	stop()
	if strings.Contains(b.b.String(), "\r") {
		t.Fatalf("a pipe got a redrawn line: %q", b.b.String())
	}
	Start(nil, func(time.Duration) string { t.Fatal("called"); return "" })()
}

func TestBytes(t *testing.T) {
	for _, tt := range []struct {
		n    int64
		want string
	}{{0, "0 B"}, {1023, "1023 B"}, {1024, "1.0 KiB"}, {1536, "1.5 KiB"}, {5 << 20, "5.0 MiB"}, {3 << 40, "3.0 TiB"}, {-2048, "-2.0 KiB"}} {
		if got := Bytes(tt.n); got != tt.want {
			t.Errorf("Bytes(%d) = %q, want %q", tt.n, got, tt.want)
		}
	}
}
