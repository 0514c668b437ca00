package coordcli

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// runServe runs `sandkeep serve args...` with a flag pair that makes the
// server refuse to start after every flag and SANDKEEP_* variable was
// read (--tls-cert without --tls-key): nothing listens. It returns a
// lookup of the serve command's flags (what was read) and the error.
func runServe(t *testing.T, args ...string) (func(name string) string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	root, _ := newRoot(&out, &errb)
	args = append([]string{"serve", "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--tls-cert", "x.pem"}, args...)
	root.SetArgs(args)
	err := root.Execute()
	serve, _, ferr := root.Find([]string{"serve"})
	if ferr != nil {
		t.Fatal(ferr)
	}
	return func(name string) string {
		f := serve.Flags().Lookup(name)
		if f == nil {
			t.Fatalf("serve has no --%s", name)
		}
		return f.Value.String()
	}, err
}

// TestServeGCFlags: --gc-interval and --gc-grace default to an hour, are
// read from SANDKEEP_GC_INTERVAL and SANDKEEP_GC_GRACE, an explicit flag
// wins, and a grace that is not positive is refused.
func TestServeGCFlags(t *testing.T) {
	flag, err := runServe(t)
	if err == nil || !strings.Contains(err.Error(), "tls") {
		t.Fatalf("serve with half a TLS pair: %v", err)
	}
	if got, want := flag("gc-interval"), time.Hour.String(); got != want {
		t.Errorf("--gc-interval defaults to %s, want %s", got, want)
	}
	if got, want := flag("gc-grace"), time.Hour.String(); got != want {
		t.Errorf("--gc-grace defaults to %s, want %s", got, want)
	}

	t.Setenv("SANDKEEP_GC_INTERVAL", "0")
	t.Setenv("SANDKEEP_GC_GRACE", "3h")
	flag, _ = runServe(t)
	if flag("gc-interval") != "0s" || flag("gc-grace") != "3h0m0s" {
		t.Errorf("from the environment: --gc-interval %s, --gc-grace %s", flag("gc-interval"), flag("gc-grace"))
	}
	flag, _ = runServe(t, "--gc-interval", "30m")
	if flag("gc-interval") != "30m0s" {
		t.Errorf("an explicit --gc-interval 30m gives %s", flag("gc-interval"))
	}

	t.Setenv("SANDKEEP_GC_INTERVAL", "soon")
	if _, err := runServe(t); err == nil || !strings.Contains(err.Error(), "SANDKEEP_GC_INTERVAL") {
		t.Errorf("SANDKEEP_GC_INTERVAL=soon: %v", err)
	}
	t.Setenv("SANDKEEP_GC_INTERVAL", "1h")
	for _, g := range []string{"0", "-1m"} {
		if _, err := runServe(t, "--gc-grace", g); err == nil || !strings.Contains(err.Error(), "--gc-grace must be positive") {
			t.Errorf("--gc-grace %s: %v", g, err)
		}
	}
}
