package restore

import (
	"sync/atomic"
)

// stats are the counters shared by the workers and the progress display.
type stats struct {
	filesSeen  atomic.Int64 // files of the plan received so far
	filesDone  atomic.Int64
	bytesSeen  atomic.Int64
	bytesDone  atomic.Int64 // file bytes in place (written or found on disk)
	downloaded atomic.Int64
}
