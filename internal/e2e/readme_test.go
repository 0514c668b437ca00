package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestREADMEListsEveryPackage keeps the README's architecture table true:
// every package of the module is named there (as `path` or `path/`), so a
// newcomer finds each one and which binary's side it is on.
func TestREADMEListsEveryPackage(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	i := strings.Index(string(readme), "## Architecture")
	if i < 0 {
		t.Fatal("README.md has no Architecture section")
	}
	arch := string(readme[i:])
	cmd := exec.CommandContext(t.Context(), "go", "list", "-f", "{{.ImportPath}}", "./...")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	const module = "github.com/sandkeep/sandkeep/"
	pkgs := strings.Fields(string(out))
	if len(pkgs) < 40 {
		t.Fatalf("go list found %d packages: %q", len(pkgs), pkgs)
	}
	for _, p := range pkgs {
		rel := strings.TrimPrefix(p, module)
		if !strings.Contains(arch, "`"+rel+"`") && !strings.Contains(arch, "`"+rel+"/`") {
			t.Errorf("README's Architecture table does not name package %s", rel)
		}
	}
}
