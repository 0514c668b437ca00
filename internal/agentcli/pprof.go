//go:build pprof

package agentcli

// Profiling for memory and CPU investigations, in agents built with
// `-tags pprof` only (the release binary carries none of it): with
// SANDKEEP_PPROF=127.0.0.1:6060 the agent serves net/http/pprof there,
// e.g. `go tool pprof http://127.0.0.1:6060/debug/pprof/heap?gc=1`.
// GODEBUG=memprofilerate=4096 makes heap profiles exact enough for small
// buffers. With SANDKEEP_CPUPROFILE=FILE the whole run is CPU-profiled
// into FILE (e.g. a `sync --once`); "%p" in FILE is replaced by the
// process id.

import (
	"fmt"
	"net/http"
	_ "net/http/pprof" // registers /debug/pprof on http.DefaultServeMux
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
)

func init() {
	if path := os.Getenv("SANDKEEP_CPUPROFILE"); path != "" {
		f, err := os.Create(strings.ReplaceAll(path, "%p", strconv.Itoa(os.Getpid())))
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "sandkeep-agent: SANDKEEP_CPUPROFILE:", err)
		} else {
			stopProfile = func() {
				pprof.StopCPUProfile()
				f.Close()
			}
		}
	}
	addr := os.Getenv("SANDKEEP_PPROF")
	if addr == "" {
		return
	}
	go func() {
		if err := http.ListenAndServe(addr, nil); err != nil {
			fmt.Fprintln(os.Stderr, "sandkeep-agent: SANDKEEP_PPROF:", err)
		}
	}()
}
