package simulate

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"time"

	"github.com/sandkeep/sandkeep/internal/policy"
)

// Trace is an activity trace: projects and their agent runs.
type Trace struct {
	// Start and End bound the simulation. Start defaults to the earliest
	// project creation, End to the latest run end.
	Start time.Time `json:"start,omitzero"`
	End   time.Time `json:"end,omitzero"`
	// Outages are windows in which the bucket is unavailable: every flush
	// and verify attempted in one fails.
	Outages  []Window  `json:"outages,omitempty"`
	Projects []Project `json:"projects"`
}

// Window is a time range [Start, End).
type Window struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
}

// Project is one project (one sandbox at a time).
type Project struct {
	ID string `json:"id"`
	// Created is when its first sandbox is created; default: its first run.
	Created time.Time `json:"created,omitzero"`
	// InitialFiles and InitialBytes are the workspace it starts with.
	InitialFiles int64 `json:"initial_files,omitempty"`
	InitialBytes int64 `json:"initial_bytes,omitempty"`
	// Policy overrides the sandkeep policy for this project.
	Policy *policy.Override `json:"policy,omitempty"`
	Runs   []Run            `json:"runs"`
}

// Run is one agent run.
type Run struct {
	Project  string    `json:"project,omitempty"` // JSON lines only
	Start    time.Time `json:"start"`
	Duration Duration  `json:"duration"`
	Files    int64     `json:"files,omitempty"` // files written
	Bytes    int64     `json:"bytes,omitempty"` // bytes written
}

// End is when the run would end if it started on time.
func (r Run) End() time.Time { return r.Start.Add(time.Duration(r.Duration)) }

// Duration is a time.Duration that reads a Go duration string ("6m30s") or
// a number of seconds, and writes a string.
type Duration time.Duration

// MarshalJSON writes a duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads a duration string or seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		v, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		*d = Duration(v)
		return nil
	}
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil {
		return fmt.Errorf("duration: want a string like \"6m30s\" or seconds, got %s", b)
	}
	*d = Duration(f * float64(time.Second))
	return nil
}

// Parse reads a trace: either one JSON document (an object with
// "projects"), or JSON lines, one run per line with a "project" field and
// optionally a first line without "project" that holds start, end and
// outages. The trace is normalised and checked (see Normalize).
func Parse(r io.Reader) (Trace, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return Trace{}, err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	var first json.RawMessage
	if err := dec.Decode(&first); err != nil {
		if errors.Is(err, io.EOF) {
			return Trace{}, errors.New("empty trace")
		}
		return Trace{}, fmt.Errorf("trace: %w", err)
	}
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(first, &keys); err != nil {
		return Trace{}, fmt.Errorf("trace: want a JSON object per line or one object with \"projects\": %w", err)
	}
	var t Trace
	if _, ok := keys["projects"]; ok {
		if dec.More() {
			return Trace{}, errors.New("trace: a JSON document with \"projects\" must be alone in the file")
		}
		dd := json.NewDecoder(bytes.NewReader(first))
		dd.DisallowUnknownFields()
		if err := dd.Decode(&t); err != nil {
			return Trace{}, fmt.Errorf("trace: %w", err)
		}
		return t, t.Normalize()
	}
	// JSON lines.
	byID := map[string]int{}
	addRun := func(line int, raw json.RawMessage) error {
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		var run Run
		if err := dec.Decode(&run); err != nil {
			return fmt.Errorf("trace line %d: %w", line, err)
		}
		if run.Project == "" {
			return fmt.Errorf("trace line %d: a run needs \"project\"", line)
		}
		i, ok := byID[run.Project]
		if !ok {
			i = len(t.Projects)
			byID[run.Project] = i
			t.Projects = append(t.Projects, Project{ID: run.Project})
		}
		run.Project = ""
		t.Projects[i].Runs = append(t.Projects[i].Runs, run)
		return nil
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), 16<<20)
	line, header := 0, true
	for sc.Scan() {
		line++
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		if header {
			header = false
			if _, ok := keys["project"]; !ok {
				hd := json.NewDecoder(bytes.NewReader(b))
				hd.DisallowUnknownFields()
				if err := hd.Decode(&t); err != nil {
					return Trace{}, fmt.Errorf("trace header (line %d; JSON lines need one object per line): %w", line, err)
				}
				continue
			}
		}
		if err := addRun(line, json.RawMessage(b)); err != nil {
			return Trace{}, err
		}
	}
	if err := sc.Err(); err != nil {
		return Trace{}, err
	}
	return t, t.Normalize()
}

// Normalize sorts each project's runs, fills in the defaults (Created,
// Start, End) and checks the trace: unique project ids, no negative sizes
// or durations, runs and creations inside [Start, End), valid overrides.
func (t *Trace) Normalize() error {
	if len(t.Projects) == 0 {
		return errors.New("trace has no projects")
	}
	seen := map[string]bool{}
	var first, last time.Time
	for i := range t.Projects {
		p := &t.Projects[i]
		if p.ID == "" {
			return fmt.Errorf("project %d has no id", i+1)
		}
		if seen[p.ID] {
			return fmt.Errorf("project %q appears twice", p.ID)
		}
		seen[p.ID] = true
		if p.InitialFiles < 0 || p.InitialBytes < 0 {
			return fmt.Errorf("project %q: negative initial size", p.ID)
		}
		slices.SortStableFunc(p.Runs, func(a, b Run) int { return a.Start.Compare(b.Start) })
		for _, r := range p.Runs {
			if r.Duration < 0 || r.Files < 0 || r.Bytes < 0 {
				return fmt.Errorf("project %q: run at %s has a negative duration or size", p.ID, r.Start.Format(time.RFC3339))
			}
			if r.Start.IsZero() {
				return fmt.Errorf("project %q: a run has no start", p.ID)
			}
		}
		if p.Created.IsZero() {
			if len(p.Runs) == 0 {
				return fmt.Errorf("project %q has neither runs nor a creation time", p.ID)
			}
			p.Created = p.Runs[0].Start
		}
		if len(p.Runs) > 0 && p.Runs[0].Start.Before(p.Created) {
			return fmt.Errorf("project %q: a run starts before the project is created", p.ID)
		}
		if first.IsZero() || p.Created.Before(first) {
			first = p.Created
		}
		for _, r := range p.Runs {
			if r.End().After(last) {
				last = r.End()
			}
		}
		if p.Created.After(last) {
			last = p.Created
		}
		if p.Policy != nil {
			if err := policy.Merge(policy.Default(), *p.Policy).Validate(); err != nil {
				return fmt.Errorf("project %q policy: %w", p.ID, err)
			}
		}
	}
	if t.Start.IsZero() {
		t.Start = first
	}
	if t.End.IsZero() {
		t.End = last
	}
	if !t.End.After(t.Start) {
		return fmt.Errorf("trace end %s is not after its start %s", t.End.Format(time.RFC3339), t.Start.Format(time.RFC3339))
	}
	for _, p := range t.Projects {
		if p.Created.Before(t.Start) || !p.Created.Before(t.End) {
			return fmt.Errorf("project %q is created outside the trace [%s, %s)", p.ID, t.Start.Format(time.RFC3339), t.End.Format(time.RFC3339))
		}
		for _, r := range p.Runs {
			if !r.Start.Before(t.End) {
				return fmt.Errorf("project %q: run at %s starts after the trace end", p.ID, r.Start.Format(time.RFC3339))
			}
		}
	}
	for _, w := range t.Outages {
		if !w.End.After(w.Start) {
			return fmt.Errorf("outage %s: end is not after start", w.Start.Format(time.RFC3339))
		}
	}
	return nil
}

// Write encodes the trace as one indented JSON document.
func (t Trace) Write(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", " ")
	return enc.Encode(t)
}
