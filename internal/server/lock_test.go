package server

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
)

// A second coordinator on the same data directory is refused, naming the
// first one's pid; once the first closes, the directory is free again.
func TestDataDirLock(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{DataDir: dir, Listen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0"}
	first, err := New(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = New(context.Background(), cfg, nil)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", os.Getpid())) || !strings.Contains(err.Error(), "--data") {
		t.Fatalf("second serve on the same data dir: %v", err)
	}
	first.Close()
	again, err := New(context.Background(), cfg, nil)
	if err != nil {
		t.Fatalf("after the first closed: %v", err)
	}
	again.Close()
}
