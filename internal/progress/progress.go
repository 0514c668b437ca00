// Package progress shows how far long work has got, the one way every
// command does: on a terminal a line redrawn in place (every 100 ms); on
// anything else (a log, a pipe) a plain line every few seconds; nothing
// when the writer is nil (--quiet).
package progress

import (
	"fmt"
	"io"
	"time"

	"golang.org/x/sys/unix"
)

// Interval is how often a non-terminal gets a line.
const Interval = 5 * time.Second

// IsTerminal reports whether w is a terminal.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(interface{ Fd() uintptr })
	if !ok {
		return false
	}
	_, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ)
	return err == nil
}

// Start shows line(elapsed) on w until the returned stop is called. On a
// terminal stop draws the last state and ends the line; elsewhere it
// prints nothing more (the command's own summary follows).
func Start(w io.Writer, line func(elapsed time.Duration) string) (stop func()) {
	if w == nil {
		return func() {}
	}
	tty := IsTerminal(w)
	every := Interval
	if tty {
		every = 100 * time.Millisecond
	}
	start := time.Now()
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				if tty {
					fmt.Fprint(w, "\r"+line(time.Since(start))+"\x1b[K\n")
				}
				return
			case <-t.C:
				if tty {
					fmt.Fprint(w, "\r"+line(time.Since(start))+"\x1b[K")
				} else {
					fmt.Fprintln(w, line(time.Since(start)))
				}
			}
		}
	}()
	return func() {
		close(done)
		<-finished
	}
}

// Line formats the usual progress line: what, files and bytes done of
// their totals so far, rate and, when the totals are known, ETA.
func Line(what string, filesDone, filesTotal, bytesDone, bytesTotal int64, elapsed time.Duration) string {
	bytesDone = min(bytesDone, max(bytesTotal, bytesDone))
	rate := 0.0
	if sec := elapsed.Seconds(); sec > 0 {
		rate = float64(bytesDone) / sec
	}
	s := fmt.Sprintf("%s: %d/%d files, %s/%s, %s/s, %s", what, filesDone, filesTotal, Bytes(bytesDone), Bytes(bytesTotal), Bytes(int64(rate)), elapsed.Truncate(100*time.Millisecond))
	if rate > 0 && bytesTotal > bytesDone {
		s += ", ETA " + time.Duration(float64(bytesTotal-bytesDone)/rate*float64(time.Second)).Round(time.Second).String()
	}
	return s
}

// Bytes prints n in binary units ("512 B", "1.5 MiB"; negative sizes too):
// the one byte formatter of both binaries' messages.
func Bytes(n int64) string {
	const unit = 1024
	if n < unit && n > -unit {
		return fmt.Sprintf("%d B", n)
	}
	f, i := float64(n), -1
	for f >= unit || f <= -unit {
		f /= unit
		i++
	}
	return fmt.Sprintf("%.1f %ciB", f, "KMGTPE"[i])
}
