// stubagent stands in for sandkeep-agent in the local provider's tests.
// `stubagent run --workspace W --socket S --cache-dir C [args…]` appends a
// JSON record of how it was started (pid, args, SANDKEEP_* environment) to
// C/starts.jsonl, writes W/.stub-marker, then waits for SIGTERM, on which it
// appends its pid to C/stops and exits 0. Knobs, from the environment:
//
//	STUB_EXIT=N         exit N right after starting (a crashing agent)
//	STUB_TERM_DELAY=D   wait D after SIGTERM before exiting (a long flush)
//	STUB_IGNORE_TERM=1  ignore SIGTERM (an agent that hangs)
//	STUB_CHILD=1        start `sleep 600` in its process group; its pid goes to C/child
//
// It exits by itself after 10 minutes, so a failed test leaves nothing
// running for long.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 || os.Args[1] != "run" {
		fmt.Fprintln(os.Stderr, "usage: stubagent run --workspace W --socket S --cache-dir C")
		os.Exit(2)
	}
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	ws := fs.String("workspace", "", "")
	sock := fs.String("socket", "", "")
	cache := fs.String("cache-dir", "", "")
	fs.Bool("force-poll", false, "")
	fs.String("log-level", "", "")
	if err := fs.Parse(os.Args[2:]); err != nil || *ws == "" || *sock == "" || *cache == "" {
		fmt.Fprintln(os.Stderr, "stubagent: bad arguments", os.Args)
		os.Exit(2)
	}
	// Handle signals before anything observable happens.
	sig := make(chan os.Signal, 1)
	if os.Getenv("STUB_IGNORE_TERM") == "1" {
		signal.Ignore(syscall.SIGTERM)
	} else {
		signal.Notify(sig, syscall.SIGTERM)
	}
	env := map[string]string{}
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok && (strings.HasPrefix(k, "SANDKEEP_") || strings.HasPrefix(k, "STUB_")) {
			env[k] = v
		}
	}
	rec, _ := json.Marshal(map[string]any{"pid": os.Getpid(), "pgid": pgid(), "args": os.Args[1:], "env": env, "socket": *sock, "workspace": *ws, "cache": *cache})
	must(appendLine(filepath.Join(*cache, "starts.jsonl"), string(rec)))
	must(os.WriteFile(filepath.Join(*ws, ".stub-marker"), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644))
	if os.Getenv("STUB_CHILD") == "1" {
		// A child in the agent's process group (as a shell hook might be).
		child := exec.Command("sleep", "600")
		must(child.Start())
		must(appendLine(filepath.Join(*cache, "child"), strconv.Itoa(child.Process.Pid)))
	}
	fmt.Println("stubagent: running, pid", os.Getpid())
	if s := os.Getenv("STUB_EXIT"); s != "" {
		n, _ := strconv.Atoi(s)
		fmt.Println("stubagent: exiting with", n)
		os.Exit(n)
	}
	select {
	case <-sig:
	case <-time.After(10 * time.Minute):
		os.Exit(3)
	}
	if d, err := time.ParseDuration(os.Getenv("STUB_TERM_DELAY")); err == nil {
		time.Sleep(d)
	}
	must(appendLine(filepath.Join(*cache, "stops"), strconv.Itoa(os.Getpid())))
	fmt.Println("stubagent: stopped")
}

func pgid() int {
	g, _ := syscall.Getpgid(0)
	return g
}

func appendLine(path, line string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(line + "\n"); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "stubagent:", err)
		os.Exit(1)
	}
}
