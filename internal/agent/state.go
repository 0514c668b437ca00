package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sandkeep/sandkeep/internal/atomicfile"
	"github.com/sandkeep/sandkeep/internal/id"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// baseState records which version the workspace was last committed as or
// restored to: the "base" of the next three-way merge when the head moved
// while the agent was away (see Reconcile). It is kept beside the index.
type baseState struct {
	Format  int       `json:"format"`
	Project string    `json:"project"`
	Version int64     `json:"version"`
	Root    id.ID     `json:"root"`
	Time    time.Time `json:"time"`
	// Committing are roots this workspace asked to commit on Version
	// without learning the outcome yet (recorded before each commit call).
	// A head made of one of them on Version is this workspace's own commit
	// (the agent died, or the answer was lost, before it recorded it), not
	// another sandbox's: it needs no merge.
	Committing []id.ID `json:"committing,omitempty"`
}

// ownCommit reports whether head is a commit of one of the roots tried on
// base (see baseState.Committing).
func ownCommit(base int64, tried []id.ID, head *pb.Version) bool {
	if head == nil || head.GetParent() != base {
		return false
	}
	for _, r := range tried {
		if bytes.Equal(r.Bytes(), head.GetRoot()) {
			return true
		}
	}
	return false
}

func (c *Config) statePath(projectID string) (string, error) {
	p, err := c.indexPath(projectID)
	if err != nil {
		return "", err
	}
	return strings.TrimSuffix(p, ".index") + ".state", nil
}

func loadState(path, project string) (*baseState, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var s baseState
	if err := json.Unmarshal(b, &s); err != nil || s.Format != 1 || s.Project != project || s.Version <= 0 {
		return nil, fmt.Errorf("agent state %s is not valid; ignoring it", path)
	}
	return &s, nil
}

func saveState(path string, project string, v *pb.Version, committing []id.ID) error {
	root, err := id.FromBytes(v.GetRoot())
	if err != nil {
		return err
	}
	b, err := json.Marshal(baseState{Format: 1, Project: project, Version: v.GetNumber(), Root: root, Time: time.Now().UTC(), Committing: committing})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	// The merge base: fsynced, or a crash could lose it and the next
	// start would merge against the wrong version.
	return atomicfile.WriteFile(path, b, 0o600)
}
