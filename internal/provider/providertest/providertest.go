// Package providertest is the conformance suite every provider.Provider
// passes. A provider's tests call Run with a constructor:
//
//	func TestConformance(t *testing.T) {
//		providertest.Run(t, func(t *testing.T) provider.Provider { ... })
//	}
//
// Every sandbox the suite creates carries a label unique to its subtest, so
// subtests may share a provider (and run in parallel); each deletes its
// sandboxes when it ends. Waits poll with provider.WaitForState and are
// bounded by Options.Timeout.
package providertest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sandkeep/sandkeep/internal/provider"
)

// Options adapt the suite to a provider.
type Options struct {
	// Spec returns the spec of a sandbox with these labels (default:
	// provider.CreateSpec{Labels: labels}). A provider whose sandboxes need
	// an environment (the local one's agent) sets it here.
	Spec func(t *testing.T, labels map[string]string) provider.CreateSpec
	// Poll is WaitForState's period (default 10ms).
	Poll time.Duration
	// Timeout bounds each wait for a state (default 2m).
	Timeout time.Duration
	// Serial runs the subtests one after the other (default: in parallel).
	Serial bool
}

// Run runs the suite with default options.
func Run(t *testing.T, newProvider func(t *testing.T) provider.Provider) {
	RunWith(t, newProvider, Options{})
}

// RunWith runs the suite. newProvider is called once per subtest.
func RunWith(t *testing.T, newProvider func(t *testing.T) provider.Provider, opts Options) {
	if opts.Spec == nil {
		opts.Spec = func(_ *testing.T, labels map[string]string) provider.CreateSpec {
			return provider.CreateSpec{Labels: labels}
		}
	}
	if opts.Poll <= 0 {
		opts.Poll = 10 * time.Millisecond
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 2 * time.Minute
	}
	tests := []struct {
		name string
		fn   func(h *harness)
	}{
		{"Name", testName},
		{"Lifecycle", testLifecycle},
		{"Idempotent", testIdempotent},
		{"ArchiveNeedsStopped", testArchiveNeedsStopped},
		{"Delete", testDelete},
		{"ListByLabel", testListByLabel},
		{"Labels", testLabels},
		{"MissingIDs", testMissingIDs},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !opts.Serial {
				t.Parallel()
			}
			h := &harness{t: t, p: newProvider(t), opts: opts, run: randomHex(6)}
			t.Cleanup(h.cleanup)
			tt.fn(h)
		})
	}
}

// LabelTest is the label the suite puts on every sandbox, unique per subtest.
const LabelTest = "sandkeep.conformance"

type harness struct {
	t    *testing.T
	p    provider.Provider
	opts Options
	run  string

	mu      sync.Mutex
	created []string
}

func (h *harness) labels(extra map[string]string) map[string]string {
	l := map[string]string{LabelTest: h.run, provider.LabelManaged: "true"}
	maps.Copy(l, extra)
	return l
}

func (h *harness) create(extra map[string]string) provider.Sandbox {
	h.t.Helper()
	labels := h.labels(extra)
	ctx, cancel := context.WithTimeout(h.t.Context(), h.opts.Timeout)
	defer cancel()
	sb, err := h.p.Create(ctx, h.opts.Spec(h.t, labels))
	if err != nil {
		h.t.Fatalf("Create: %v", err)
	}
	if sb.ID == "" {
		h.t.Fatalf("Create returned no id: %+v", sb)
	}
	h.mu.Lock()
	h.created = append(h.created, sb.ID)
	h.mu.Unlock()
	if !slices.Contains([]provider.State{provider.StateCreating, provider.StateStarting, provider.StateStarted}, sb.State) {
		h.t.Fatalf("Create returned state %q (%s), want creating, starting or started", sb.State, sb.ProviderState)
	}
	if !maps.Equal(sb.Labels, labels) {
		h.t.Fatalf("Create returned labels %v, want %v", sb.Labels, labels)
	}
	return sb
}

func (h *harness) wait(id string, want provider.State) provider.Sandbox {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(h.t.Context(), h.opts.Timeout)
	defer cancel()
	sb, err := provider.WaitForState(ctx, h.p, id, want, h.opts.Poll)
	if err != nil {
		h.t.Fatalf("WaitForState(%s, %s): %v", id, want, err)
	}
	return sb
}

func (h *harness) get(id string) provider.Sandbox {
	h.t.Helper()
	sb, err := h.p.Get(h.t.Context(), id)
	if err != nil {
		h.t.Fatalf("Get(%s): %v", id, err)
	}
	if sb.ID != id {
		h.t.Fatalf("Get(%s) returned id %q", id, sb.ID)
	}
	if !sb.State.Valid() {
		h.t.Fatalf("Get(%s): state %q is not a sandkeep state (provider state %q)", id, sb.State, sb.ProviderState)
	}
	return sb
}

func (h *harness) op(name string, fn func(context.Context, string) error, id string) {
	h.t.Helper()
	if err := fn(h.t.Context(), id); err != nil {
		h.t.Fatalf("%s(%s): %v", name, id, err)
	}
}

// gone requires Get to say the sandbox is gone: ErrNotFound or destroyed.
func (h *harness) gone(id string) {
	h.t.Helper()
	sb, err := h.p.Get(h.t.Context(), id)
	switch {
	case errors.Is(err, provider.ErrNotFound):
	case err != nil:
		h.t.Fatalf("Get(%s) after Delete: %v, want ErrNotFound", id, err)
	case sb.State != provider.StateDestroyed:
		h.t.Fatalf("Get(%s) after Delete: state %s (%s), want ErrNotFound or destroyed", id, sb.State, sb.ProviderState)
	}
}

func (h *harness) cleanup() {
	h.mu.Lock()
	ids := slices.Clone(h.created)
	h.mu.Unlock()
	for _, id := range ids {
		ctx, cancel := context.WithTimeout(context.Background(), h.opts.Timeout)
		// A sandbox still changing state refuses deletion: let it settle.
		for range 100 {
			err := h.p.Delete(ctx, id)
			if err == nil {
				break
			}
			if !errors.Is(err, provider.ErrConflict) {
				h.t.Errorf("cleanup: Delete(%s): %v", id, err)
				break
			}
			time.Sleep(h.opts.Poll)
		}
		cancel()
	}
}

func testName(h *harness) {
	if h.p.Name() == "" {
		h.t.Fatal("Name() is empty")
	}
}

// testLifecycle: create → started → stop → stopped → start → started →
// (archive → archived → start → started) → delete → gone.
func testLifecycle(h *harness) {
	created := h.create(map[string]string{provider.LabelProject: "prj_lifecycle"})
	id := created.ID
	sb := h.wait(id, provider.StateStarted)
	if sb.CreatedAt.IsZero() {
		h.t.Errorf("started sandbox has no CreatedAt")
	}
	if sb.ProviderState == "" {
		h.t.Errorf("started sandbox has no ProviderState")
	}
	if got := h.get(id); got.State != provider.StateStarted || got.Labels[provider.LabelProject] != "prj_lifecycle" {
		h.t.Fatalf("Get after started: %+v", got)
	}

	h.op("Stop", h.p.Stop, id)
	h.wait(id, provider.StateStopped)
	h.op("Start", h.p.Start, id)
	h.wait(id, provider.StateStarted)
	h.op("Stop", h.p.Stop, id)
	h.wait(id, provider.StateStopped)

	switch err := h.p.Archive(h.t.Context(), id); {
	case errors.Is(err, provider.ErrUnsupported):
		h.t.Logf("%s does not archive", h.p.Name())
	case err != nil:
		h.t.Fatalf("Archive(%s) of a stopped sandbox: %v", id, err)
	default:
		h.wait(id, provider.StateArchived)
		h.op("Start", h.p.Start, id)
		h.wait(id, provider.StateStarted)
	}

	h.op("Delete", h.p.Delete, id)
	h.gone(id)
	h.wait(id, provider.StateDestroyed)
	h.op("Delete (again)", h.p.Delete, id)
}

// testIdempotent: starting a started sandbox and stopping a stopped one
// succeed and change nothing.
func testIdempotent(h *harness) {
	id := h.create(nil).ID
	h.wait(id, provider.StateStarted)
	h.op("Start (started)", h.p.Start, id)
	if sb := h.get(id); sb.State != provider.StateStarted {
		h.t.Fatalf("Start of a started sandbox left it %s", sb.State)
	}
	h.op("Stop", h.p.Stop, id)
	h.op("Stop (stopping or stopped)", h.p.Stop, id)
	h.wait(id, provider.StateStopped)
	h.op("Stop (stopped)", h.p.Stop, id)
	if sb := h.get(id); sb.State != provider.StateStopped {
		h.t.Fatalf("Stop of a stopped sandbox left it %s", sb.State)
	}
}

// testArchiveNeedsStopped: archiving a running sandbox is a conflict.
func testArchiveNeedsStopped(h *harness) {
	id := h.create(nil).ID
	h.wait(id, provider.StateStarted)
	err := h.p.Archive(h.t.Context(), id)
	if errors.Is(err, provider.ErrUnsupported) {
		h.t.Skipf("%s does not archive", h.p.Name())
	}
	if !errors.Is(err, provider.ErrConflict) {
		h.t.Fatalf("Archive of a started sandbox: %v, want ErrConflict", err)
	}
	if sb := h.get(id); sb.State != provider.StateStarted {
		h.t.Fatalf("refused Archive left the sandbox %s", sb.State)
	}
}

// testDelete: a running sandbox can be deleted; twice is fine; it leaves
// List.
func testDelete(h *harness) {
	id := h.create(nil).ID
	h.wait(id, provider.StateStarted)
	h.op("Delete", h.p.Delete, id)
	h.gone(id)
	h.op("Delete (again)", h.p.Delete, id)
	h.wait(id, provider.StateDestroyed)
	list, err := h.p.List(h.t.Context(), map[string]string{LabelTest: h.run})
	if err != nil {
		h.t.Fatalf("List: %v", err)
	}
	if len(list) != 0 {
		h.t.Fatalf("List after Delete: %v", ids(list))
	}
	// Deleting a sandbox that is still coming up works too (or is refused
	// as a conflict while the provider is mid-change, never an other error).
	id2 := h.create(nil).ID
	if err := h.p.Delete(h.t.Context(), id2); err != nil && !errors.Is(err, provider.ErrConflict) {
		h.t.Fatalf("Delete of a new sandbox: %v", err)
	}
}

// testListByLabel: List returns exactly the sandboxes carrying every
// selector label.
func testListByLabel(h *harness) {
	a1 := h.create(map[string]string{provider.LabelProject: "prj_a", "tier": "x"}).ID
	a2 := h.create(map[string]string{provider.LabelProject: "prj_a", "tier": "y"}).ID
	b1 := h.create(map[string]string{provider.LabelProject: "prj_b", "tier": "x"}).ID
	for _, id := range []string{a1, a2, b1} {
		h.wait(id, provider.StateStarted)
	}
	list := func(sel map[string]string) []string {
		h.t.Helper()
		got, err := h.p.List(h.t.Context(), sel)
		if err != nil {
			h.t.Fatalf("List(%v): %v", sel, err)
		}
		for _, sb := range got {
			if !sb.State.Valid() || !provider.MatchLabels(sb.Labels, sel) {
				h.t.Fatalf("List(%v) returned %+v", sel, sb)
			}
		}
		return ids(got)
	}
	run := map[string]string{LabelTest: h.run}
	for _, tt := range []struct {
		sel  map[string]string
		want []string
	}{
		{run, []string{a1, a2, b1}},
		{h.labels(map[string]string{provider.LabelProject: "prj_a"}), []string{a1, a2}},
		{h.labels(map[string]string{provider.LabelProject: "prj_b"}), []string{b1}},
		{h.labels(map[string]string{"tier": "x"}), []string{a1, b1}},
		{h.labels(map[string]string{provider.LabelProject: "prj_a", "tier": "x"}), []string{a1}},
		{h.labels(map[string]string{provider.LabelProject: "prj_c"}), nil},
		{h.labels(map[string]string{"absent": ""}), nil},
	} {
		got, want := list(tt.sel), slices.Sorted(slices.Values(tt.want))
		if !slices.Equal(got, want) {
			h.t.Errorf("List(%v) = %v, want %v", tt.sel, got, want)
		}
	}
	// An empty selector lists at least these (the provider may hold others).
	all := list(nil)
	for _, id := range []string{a1, a2, b1} {
		if !slices.Contains(all, id) {
			h.t.Errorf("List(nil) misses %s", id)
		}
	}
	// A stopped sandbox is still listed; a deleted one is not.
	h.op("Stop", h.p.Stop, a2)
	h.wait(a2, provider.StateStopped)
	h.op("Delete", h.p.Delete, a1)
	h.wait(a1, provider.StateDestroyed)
	if got := list(h.labels(map[string]string{provider.LabelProject: "prj_a"})); !slices.Equal(got, []string{a2}) {
		h.t.Errorf("List(prj_a) after deleting %s = %v, want [%s]", a1, got, a2)
	}
}

// testLabels: labels with awkward characters survive Create, Get and List.
func testLabels(h *harness) {
	extra := map[string]string{
		provider.LabelProject: "prj_9z",
		"note":                `a&b=c d/e?f#g "quoted" {json} ünïcødé`,
		"empty":               "",
	}
	id := h.create(extra).ID
	h.wait(id, provider.StateStarted)
	want := h.labels(extra)
	if got := h.get(id).Labels; !maps.Equal(got, want) {
		h.t.Fatalf("Get labels = %v, want %v", got, want)
	}
	got, err := h.p.List(h.t.Context(), map[string]string{LabelTest: h.run, "note": extra["note"]})
	if err != nil {
		h.t.Fatalf("List: %v", err)
	}
	if len(got) != 1 || got[0].ID != id || !maps.Equal(got[0].Labels, want) {
		h.t.Fatalf("List by an awkward label = %+v", got)
	}
}

// testMissingIDs: operations on ids that do not exist are ErrNotFound;
// Delete is not an error.
func testMissingIDs(h *harness) {
	ctx := h.t.Context()
	for _, id := range []string{"sandkeep-missing-" + h.run, "00000000-0000-4000-8000-000000000000"} {
		if _, err := h.p.Get(ctx, id); !errors.Is(err, provider.ErrNotFound) {
			h.t.Errorf("Get(%s): %v, want ErrNotFound", id, err)
		}
		for name, fn := range map[string]func(context.Context, string) error{"Start": h.p.Start, "Stop": h.p.Stop} {
			if err := fn(ctx, id); !errors.Is(err, provider.ErrNotFound) {
				h.t.Errorf("%s(%s): %v, want ErrNotFound", name, id, err)
			}
		}
		if err := h.p.Archive(ctx, id); !errors.Is(err, provider.ErrNotFound) && !errors.Is(err, provider.ErrUnsupported) {
			h.t.Errorf("Archive(%s): %v, want ErrNotFound", id, err)
		}
		if err := h.p.Delete(ctx, id); err != nil {
			h.t.Errorf("Delete(%s): %v, want nil", id, err)
		}
		if _, err := provider.WaitForState(ctx, h.p, id, provider.StateStarted, h.opts.Poll); !errors.Is(err, provider.ErrNotFound) {
			h.t.Errorf("WaitForState(%s): %v, want ErrNotFound", id, err)
		}
	}
}

func ids(list []provider.Sandbox) []string {
	out := make([]string, 0, len(list))
	for _, sb := range list {
		out = append(out, sb.ID)
	}
	slices.Sort(out)
	return out
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
