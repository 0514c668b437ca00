package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

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

func saveState(path string, project string, v *pb.Version) error {
	root, err := id.FromBytes(v.GetRoot())
	if err != nil {
		return err
	}
	b, err := json.Marshal(baseState{Format: 1, Project: project, Version: v.GetNumber(), Root: root, Time: time.Now().UTC()})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
