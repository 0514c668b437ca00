package restore

import (
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// stats are the counters shared by the workers and the progress display.
type stats struct {
	filesSeen  atomic.Int64 // files of the plan received so far
	filesDone  atomic.Int64
	bytesSeen  atomic.Int64
	bytesDone  atomic.Int64 // file bytes in place (written or found on disk)
	downloaded atomic.Int64
}

const progressInterval = 100 * time.Millisecond

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(interface{ Fd() uintptr })
	if !ok {
		return false
	}
	_, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ)
	return err == nil
}

// startProgress redraws one status line on w every progressInterval until
// stop is called, which draws the last state and ends the line.
func startProgress(w io.Writer, s *stats, start time.Time) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(progressInterval)
		defer t.Stop()
		for {
			select {
			case <-done:
				fmt.Fprint(w, "\r"+progressLine(s, time.Since(start))+"\n")
				return
			case <-t.C:
				fmt.Fprint(w, "\r"+progressLine(s, time.Since(start)))
			}
		}
	}()
	return func() {
		close(done)
		<-finished
	}
}

func progressLine(s *stats, elapsed time.Duration) string {
	done := s.bytesDone.Load()
	rate := 0.0
	if sec := elapsed.Seconds(); sec > 0 {
		rate = float64(done) / 1e6 / sec
	}
	return fmt.Sprintf("restore: %d/%d files  %s/%s  %.1f MB/s  %s downloaded  %s\x1b[K",
		s.filesDone.Load(), s.filesSeen.Load(), mib(done), mib(s.bytesSeen.Load()), rate,
		mib(s.downloaded.Load()), elapsed.Truncate(100*time.Millisecond))
}

func mib(n int64) string {
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}
