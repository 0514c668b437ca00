//go:build pprof

package cli

// Profiling for memory and CPU investigations, in binaries built with
// `-tags pprof` only (release binaries carry none of it): with
// SANDKEEP_PPROF=127.0.0.1:6060 the program serves net/http/pprof there,
// e.g. `go tool pprof http://127.0.0.1:6060/debug/pprof/heap?gc=1`.
// GODEBUG=memprofilerate=4096 makes heap profiles exact enough for small
// buffers. With SANDKEEP_CPUPROFILE=FILE the whole run is CPU-profiled
// into FILE; "%p" in FILE is replaced by the process id.

import (
	"fmt"
	"net/http"
	_ "net/http/pprof" // registers /debug/pprof on http.DefaultServeMux
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
)

// StartProfiling starts what SANDKEEP_CPUPROFILE and SANDKEEP_PPROF ask
// for; name prefixes its error messages. stop ends the CPU profile.
func StartProfiling(name string) (stop func()) {
	stop = func() {}
	if path := os.Getenv("SANDKEEP_CPUPROFILE"); path != "" {
		f, err := os.Create(strings.ReplaceAll(path, "%p", strconv.Itoa(os.Getpid())))
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, name+": SANDKEEP_CPUPROFILE:", err)
		} else {
			stop = func() {
				pprof.StopCPUProfile()
				f.Close()
			}
		}
	}
	if addr := os.Getenv("SANDKEEP_PPROF"); addr != "" {
		go func() {
			if err := http.ListenAndServe(addr, nil); err != nil {
				fmt.Fprintln(os.Stderr, name+": SANDKEEP_PPROF:", err)
			}
		}()
	}
	return stop
}
