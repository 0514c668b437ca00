// Package fakedaytona is an in-process HTTP server that follows Daytona's
// REST API for sandboxes closely enough to test the daytona client against:
// the same paths under /api, the same JSON field names, Daytona's state
// names and transitions, its conflict rules and its error bodies. What it
// follows (daytonaio/daytona, apps/api/src/sandbox):
//
//   - controllers/sandbox.controller.ts: GET /sandbox (labels = a JSON
//     object, a sandbox matches when its labels contain it; destroyed
//     sandboxes are left out), POST /sandbox, GET/DELETE /sandbox/{id},
//     POST /sandbox/{id}/start|stop|archive, all with 200 responses
//     (create and start return the sandbox, the others an empty body).
//   - services/sandbox.service.ts: start is a no-op on a started sandbox
//     and needs stopped or archived; stop needs started; archive needs
//     stopped; nothing may change while a change is in progress; a
//     destroyed sandbox is "not found".
//   - dto/sandbox.dto.ts, dto/create-sandbox.dto.ts, enums/sandbox-state.enum.ts
//     for the fields and state names; exceptions/*.ts and
//     filters/all-exceptions.filter.ts for error bodies
//     ({statusCode, timestamp, path, method, error, message[, code]}, with
//     the codes SANDBOX_STATE_ERROR (400), SANDBOX_STATE_CHANGE_IN_PROGRESS
//     (409) and ORGANIZATION_QUOTA_EXCEEDED (400) of the newer API).
//
// Where the real API blocks (create and start wait up to 30 s for
// "started"), the fake answers at once with the sandbox still in its
// transitional state: transitions are driven by the test, never by timers.
// Each transitional state advances one step after it has been returned by
// Options.Polls GETs of the sandbox (0: an operation completes before it
// returns), or, with Options.Manual, only when the test calls Advance.
package fakedaytona

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Daytona's sandbox states (enums/sandbox-state.enum.ts).
const (
	Creating         = "creating"
	Restoring        = "restoring"
	Destroyed        = "destroyed"
	Destroying       = "destroying"
	Started          = "started"
	Stopped          = "stopped"
	Starting         = "starting"
	Stopping         = "stopping"
	Error            = "error"
	BuildFailed      = "build_failed"
	PendingBuild     = "pending_build"
	BuildingSnapshot = "building_snapshot"
	Unknown          = "unknown"
	PullingSnapshot  = "pulling_snapshot"
	Archived         = "archived"
	Archiving        = "archiving"
)

// OrganizationHeader is the header naming the organization (optional with an
// API key, which belongs to one organization).
const OrganizationHeader = "X-Daytona-Organization-ID"

// Options configure a fake.
type Options struct {
	// APIKey is the only bearer token accepted (default "fake-daytona-key").
	APIKey string
	// OrganizationID is the organization of the key (default "fake-org"); a
	// request naming another one in OrganizationHeader is forbidden (403).
	OrganizationID string
	// Polls is how many GETs of a sandbox return a transitional state before
	// it advances one step. 0: operations complete before they return.
	Polls int
	// Manual: transitional states advance only through Advance/AdvanceAll.
	Manual bool
	// Paginated: GET /sandbox answers like the newer API, a page
	// {items, total, page, totalPages} of at most `limit` (default 10,
	// at most 100) sandboxes; otherwise a plain JSON array.
	Paginated bool
	// MaxSandboxes > 0 refuses creating more live sandboxes than that with
	// ORGANIZATION_QUOTA_EXCEEDED.
	MaxSandboxes int
	// Now is the clock for createdAt/updatedAt (default time.Now).
	Now func() time.Time
	// Chaos, if set, makes the fake misbehave at random, as Daytona's API
	// does under load.
	Chaos *Chaos
}

// Chaos are random faults: a share of requests answered 503 or 502
// (ServerError) or 429 with Retry-After: 0 (Throttle) before anything is
// done, and a share of GETs held for Delay before they are served (a
// client with a shorter timeout gives up on them). Drawn from Seed.
type Chaos struct {
	Seed                  uint64
	ServerError, Throttle float64
	SlowGets              float64
	Delay                 time.Duration
}

// Fault is an injected failure answered instead of the next Count requests
// (before authentication, as a proxy in front of the API would).
type Fault struct {
	Status     int    // e.g. 503, 429
	Count      int    // how many requests; < 0: every request from now on
	RetryAfter string // Retry-After header value, if any
	Code       string // optional "code" field of the error body
	Message    string // default: the status text
	// Match, if set, limits the fault to requests whose "METHOD /path"
	// (path without the /api prefix) it accepts.
	Match func(methodPath string) bool
}

// Request is one request the fake received.
type Request struct {
	Method, Path, RawQuery string
	Organization           string // OrganizationHeader
	Authorized             bool
	Status                 int // what the fake answered
}

// BuildInfo is the part of Daytona's build info the fake keeps.
type BuildInfo struct {
	DockerfileContent string   `json:"dockerfileContent,omitempty"`
	ContextHashes     []string `json:"contextHashes,omitempty"`
}

// Sandbox is Daytona's SandboxDto (the fields the fake keeps).
type Sandbox struct {
	ID                  string            `json:"id"`
	OrganizationID      string            `json:"organizationId"`
	Name                string            `json:"name"`
	Snapshot            string            `json:"snapshot,omitempty"`
	User                string            `json:"user"`
	Env                 map[string]string `json:"env"`
	Labels              map[string]string `json:"labels"`
	Public              bool              `json:"public"`
	Target              string            `json:"target"`
	CPU                 int               `json:"cpu"`
	GPU                 int               `json:"gpu"`
	Memory              int               `json:"memory"`
	Disk                int               `json:"disk"`
	State               string            `json:"state"`
	DesiredState        string            `json:"desiredState"`
	ErrorReason         string            `json:"errorReason,omitempty"`
	AutoStopInterval    *int              `json:"autoStopInterval,omitempty"`
	AutoArchiveInterval *int              `json:"autoArchiveInterval,omitempty"`
	AutoDeleteInterval  *int              `json:"autoDeleteInterval,omitempty"`
	BuildInfo           *BuildInfo        `json:"buildInfo,omitempty"`
	CreatedAt           string            `json:"createdAt"`
	UpdatedAt           string            `json:"updatedAt"`
}

type sandbox struct {
	dto   Sandbox
	path  []string // states still ahead, the last one final
	polls int      // GETs that returned the current transitional state
}

// Server is the fake. It is an http.Handler.
type Server struct {
	opts Options

	mu        sync.Mutex
	sandboxes map[string]*sandbox
	order     []string
	seq       int
	faults    []Fault
	requests  []Request
	rng       *rand.Rand
}

// New returns a fake with no sandboxes.
func New(opts Options) *Server {
	if opts.APIKey == "" {
		opts.APIKey = "fake-daytona-key"
	}
	if opts.OrganizationID == "" {
		opts.OrganizationID = "fake-org"
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Server{opts: opts, sandboxes: make(map[string]*sandbox)}
	if opts.Chaos != nil {
		s.rng = rand.New(rand.NewPCG(opts.Chaos.Seed, 0x5eed))
	}
	return s
}

// Start serves a new fake on a loopback port until the test ends and
// returns it with its API base URL (".../api", as https://app.daytona.io/api).
func Start(t testing.TB, opts Options) (*Server, string) {
	t.Helper()
	s := New(opts)
	hs := httptest.NewServer(s)
	t.Cleanup(hs.Close)
	return s, hs.URL + "/api"
}

// APIKey is the key the fake accepts.
func (s *Server) APIKey() string { return s.opts.APIKey }

// OrganizationID is the key's organization.
func (s *Server) OrganizationID() string { return s.opts.OrganizationID }

// FailNext queues a fault; faults apply in the order queued.
func (s *Server) FailNext(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f.Count == 0 {
		f.Count = 1
	}
	s.faults = append(s.faults, f)
}

// ClearFaults drops every queued fault.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}

// Requests returns the requests received so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Sandbox returns a copy of what the fake stores for id (destroyed ones too).
func (s *Server) Sandbox(id string) (Sandbox, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sb, ok := s.sandboxes[id]
	if !ok {
		return Sandbox{}, false
	}
	return copyDTO(sb.dto), true
}

// SetState forces a sandbox into a state (e.g. Error with a reason, or
// BuildFailed), dropping any transition in progress.
func (s *Server) SetState(id, state, errorReason string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	sb, ok := s.sandboxes[id]
	if !ok {
		return false
	}
	sb.path = nil
	sb.polls = 0
	sb.dto.State = state
	sb.dto.ErrorReason = errorReason
	sb.dto.UpdatedAt = s.now()
	return true
}

// Advance moves a sandbox in a transitional state one step on; false if it
// was not in one.
func (s *Server) Advance(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	sb, ok := s.sandboxes[id]
	return ok && s.advance(sb)
}

// AdvanceAll moves every sandbox in a transitional state one step on and
// returns how many moved.
func (s *Server) AdvanceAll() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, id := range s.order {
		if s.advance(s.sandboxes[id]) {
			n++
		}
	}
	return n
}

func (s *Server) advance(sb *sandbox) bool {
	if len(sb.path) == 0 {
		return false
	}
	sb.dto.State, sb.path = sb.path[0], sb.path[1:]
	sb.polls = 0
	sb.dto.UpdatedAt = s.now()
	return true
}

// begin starts a transition along path (the last state is the final one).
func (s *Server) begin(sb *sandbox, desired string, path ...string) {
	sb.dto.DesiredState = desired
	sb.dto.ErrorReason = ""
	sb.dto.State, sb.path = path[0], path[1:]
	sb.polls = 0
	sb.dto.UpdatedAt = s.now()
	if s.opts.Polls == 0 && !s.opts.Manual {
		for s.advance(sb) {
		}
	}
}

// inProgress: a change is under way (Daytona: state != desiredState / pending).
func (sb *sandbox) inProgress() bool { return len(sb.path) > 0 }

func (s *Server) now() string { return s.opts.Now().UTC().Format("2006-01-02T15:04:05.000Z") }

// ServeHTTP answers one API request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.rng != nil && r.Method == http.MethodGet {
		s.mu.Lock()
		slow := s.rng.Float64() < s.opts.Chaos.SlowGets
		s.mu.Unlock()
		if slow {
			select {
			case <-time.After(s.opts.Chaos.Delay):
			case <-r.Context().Done():
				return
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rec := &recorder{ResponseWriter: w}
	req := Request{Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery, Organization: r.Header.Get(OrganizationHeader)}
	defer func() {
		req.Status = rec.status
		s.requests = append(s.requests, req)
	}()
	path, ok := strings.CutPrefix(r.URL.EscapedPath(), "/api")
	if !ok {
		s.fail(rec, r, http.StatusNotFound, "", fmt.Sprintf("Cannot %s %s", r.Method, r.URL.Path))
		return
	}
	if s.rng != nil {
		c := s.opts.Chaos
		switch x := s.rng.Float64(); {
		case x < c.ServerError/2:
			s.fail(rec, r, http.StatusServiceUnavailable, "", "chaos: service unavailable")
			return
		case x < c.ServerError:
			s.fail(rec, r, http.StatusBadGateway, "", "chaos: bad gateway")
			return
		case x < c.ServerError+c.Throttle:
			rec.Header().Set("Retry-After", "0")
			s.fail(rec, r, http.StatusTooManyRequests, "", "chaos: too many requests")
			return
		}
	}
	if f, ok := s.takeFault(r.Method + " " + path); ok {
		if f.RetryAfter != "" {
			rec.Header().Set("Retry-After", f.RetryAfter)
		}
		msg := f.Message
		if msg == "" {
			msg = http.StatusText(f.Status)
		}
		s.fail(rec, r, f.Status, f.Code, msg)
		return
	}
	if r.Header.Get("Authorization") != "Bearer "+s.opts.APIKey {
		s.fail(rec, r, http.StatusUnauthorized, "", "Unauthorized")
		return
	}
	if org := r.Header.Get(OrganizationHeader); org != "" && org != s.opts.OrganizationID {
		s.fail(rec, r, http.StatusForbidden, "", "Forbidden resource")
		return
	}
	req.Authorized = true
	s.route(rec, r, path)
}

func (s *Server) takeFault(methodPath string) (Fault, bool) {
	for i, f := range s.faults {
		if f.Match != nil && !f.Match(methodPath) {
			continue
		}
		if f.Count > 0 {
			s.faults[i].Count--
			if s.faults[i].Count == 0 {
				s.faults = append(s.faults[:i], s.faults[i+1:]...)
			}
		}
		return f, true
	}
	return Fault{}, false
}

func (s *Server) route(w http.ResponseWriter, r *http.Request, path string) {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	if parts[0] != "sandbox" {
		s.fail(w, r, http.StatusNotFound, "", fmt.Sprintf("Cannot %s %s", r.Method, r.URL.Path))
		return
	}
	var id string
	if len(parts) > 1 {
		var err error
		if id, err = unescape(parts[1]); err != nil {
			s.fail(w, r, http.StatusBadRequest, "", "bad sandbox id")
			return
		}
	}
	switch {
	case len(parts) == 1 && r.Method == http.MethodGet:
		s.list(w, r)
	case len(parts) == 1 && r.Method == http.MethodPost:
		s.create(w, r)
	case len(parts) == 2 && r.Method == http.MethodGet:
		s.get(w, r, id)
	case len(parts) == 2 && r.Method == http.MethodDelete:
		s.delete(w, r, id)
	case len(parts) == 3 && r.Method == http.MethodPost && parts[2] == "start":
		s.start(w, r, id)
	case len(parts) == 3 && r.Method == http.MethodPost && parts[2] == "stop":
		s.stop(w, r, id)
	case len(parts) == 3 && r.Method == http.MethodPost && parts[2] == "archive":
		s.archive(w, r, id)
	default:
		s.fail(w, r, http.StatusNotFound, "", fmt.Sprintf("Cannot %s %s", r.Method, r.URL.Path))
	}
}

// createRequest is Daytona's CreateSandboxDto (the fields the fake uses).
type createRequest struct {
	Name                string            `json:"name"`
	Snapshot            string            `json:"snapshot"`
	User                string            `json:"user"`
	Env                 map[string]string `json:"env"`
	Labels              map[string]string `json:"labels"`
	Public              bool              `json:"public"`
	Target              string            `json:"target"`
	CPU                 *int              `json:"cpu"`
	GPU                 *int              `json:"gpu"`
	Memory              *int              `json:"memory"`
	Disk                *int              `json:"disk"`
	AutoStopInterval    *int              `json:"autoStopInterval"`
	AutoArchiveInterval *int              `json:"autoArchiveInterval"`
	AutoDeleteInterval  *int              `json:"autoDeleteInterval"`
	BuildInfo           *BuildInfo        `json:"buildInfo"`
}

func (s *Server) create(w http.ResponseWriter, r *http.Request) {
	var req createRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	if err := dec.Decode(&req); err != nil {
		s.fail(w, r, http.StatusBadRequest, "", "invalid body: "+err.Error())
		return
	}
	if req.BuildInfo != nil && req.Snapshot != "" {
		s.fail(w, r, http.StatusBadRequest, "", "Cannot specify a snapshot when using a build info entry")
		return
	}
	if req.BuildInfo == nil && (req.CPU != nil || req.GPU != nil || req.Memory != nil || req.Disk != nil) {
		s.fail(w, r, http.StatusBadRequest, "", "Cannot specify Sandbox resources when using a snapshot")
		return
	}
	if req.BuildInfo != nil && strings.TrimSpace(req.BuildInfo.DockerfileContent) == "" {
		s.fail(w, r, http.StatusBadRequest, "", "buildInfo.dockerfileContent must not be empty")
		return
	}
	for k := range req.Labels {
		if k == "" {
			s.fail(w, r, http.StatusBadRequest, "", "label keys must not be empty")
			return
		}
	}
	if s.opts.MaxSandboxes > 0 && s.live() >= s.opts.MaxSandboxes {
		s.fail(w, r, http.StatusBadRequest, "ORGANIZATION_QUOTA_EXCEEDED", fmt.Sprintf("Total CPU limit exceeded. Maximum allowed: %d.", s.opts.MaxSandboxes))
		return
	}
	s.seq++
	id := fmt.Sprintf("%08x-fa4e-4d0a-8000-%012x", s.seq*0x9e3779b1&0xffffffff, s.seq)
	intOr := func(p *int, def int) int {
		if p != nil {
			return *p
		}
		return def
	}
	autoStop := intOr(req.AutoStopInterval, 15) // Daytona's default: 15 minutes
	dto := Sandbox{
		ID: id, OrganizationID: s.opts.OrganizationID, Name: req.Name, Snapshot: req.Snapshot,
		User: req.User, Env: req.Env, Labels: req.Labels, Public: req.Public, Target: req.Target,
		CPU: intOr(req.CPU, 1), GPU: intOr(req.GPU, 0), Memory: intOr(req.Memory, 1), Disk: intOr(req.Disk, 3),
		AutoStopInterval: &autoStop, AutoArchiveInterval: req.AutoArchiveInterval, AutoDeleteInterval: req.AutoDeleteInterval,
		BuildInfo: req.BuildInfo, CreatedAt: s.now(),
	}
	if dto.Name == "" {
		dto.Name = id
	}
	if dto.User == "" {
		dto.User = "daytona"
	}
	if dto.Target == "" {
		dto.Target = "us"
	}
	if dto.Snapshot == "" && dto.BuildInfo == nil {
		dto.Snapshot = "daytonaio/sandbox:latest"
	}
	if dto.Env == nil {
		dto.Env = map[string]string{}
	}
	if dto.Labels == nil {
		dto.Labels = map[string]string{}
	}
	sb := &sandbox{dto: dto}
	s.sandboxes[id] = sb
	s.order = append(s.order, id)
	if req.BuildInfo != nil {
		s.begin(sb, Started, PendingBuild, BuildingSnapshot, Creating, Started)
	} else {
		s.begin(sb, Started, Creating, Started)
	}
	s.reply(w, http.StatusOK, sb.dto)
}

func (s *Server) live() int {
	n := 0
	for _, sb := range s.sandboxes {
		if sb.dto.State != Destroyed && sb.dto.State != Destroying {
			n++
		}
	}
	return n
}

// find returns a sandbox that exists (not destroyed), or answers 404.
func (s *Server) find(w http.ResponseWriter, r *http.Request, id string) (*sandbox, bool) {
	sb, ok := s.sandboxes[id]
	if !ok || sb.dto.State == Destroyed {
		s.fail(w, r, http.StatusNotFound, "", fmt.Sprintf("Sandbox with ID %s not found", id))
		return nil, false
	}
	return sb, true
}

func (s *Server) get(w http.ResponseWriter, r *http.Request, id string) {
	sb, ok := s.find(w, r, id)
	if !ok {
		return
	}
	s.reply(w, http.StatusOK, sb.dto)
	if sb.inProgress() && !s.opts.Manual {
		sb.polls++
		if sb.polls >= s.opts.Polls {
			s.advance(sb)
		}
	}
}

func (s *Server) start(w http.ResponseWriter, r *http.Request, id string) {
	sb, ok := s.find(w, r, id)
	if !ok {
		return
	}
	switch {
	case sb.dto.State == Started && !sb.inProgress():
		// Already started: Daytona returns the sandbox as it is.
	case sb.inProgress():
		s.fail(w, r, http.StatusConflict, "SANDBOX_STATE_CHANGE_IN_PROGRESS", "State change in progress")
		return
	case sb.dto.State == Stopped:
		s.begin(sb, Started, Starting, Started)
	case sb.dto.State == Archived:
		s.begin(sb, Started, Restoring, Started)
	default:
		s.fail(w, r, http.StatusBadRequest, "SANDBOX_STATE_ERROR", "Sandbox is not in valid state")
		return
	}
	s.reply(w, http.StatusOK, sb.dto)
}

func (s *Server) stop(w http.ResponseWriter, r *http.Request, id string) {
	sb, ok := s.find(w, r, id)
	if !ok {
		return
	}
	switch {
	case sb.inProgress():
		s.fail(w, r, http.StatusConflict, "SANDBOX_STATE_CHANGE_IN_PROGRESS", "State change in progress")
		return
	case sb.dto.State != Started:
		s.fail(w, r, http.StatusBadRequest, "SANDBOX_STATE_ERROR", "Sandbox is not started")
		return
	}
	s.begin(sb, Stopped, Stopping, Stopped)
	w.WriteHeader(http.StatusOK)
}

func (s *Server) archive(w http.ResponseWriter, r *http.Request, id string) {
	sb, ok := s.find(w, r, id)
	if !ok {
		return
	}
	switch {
	case sb.inProgress():
		s.fail(w, r, http.StatusConflict, "SANDBOX_STATE_CHANGE_IN_PROGRESS", "State change in progress")
		return
	case sb.dto.State != Stopped:
		s.fail(w, r, http.StatusBadRequest, "SANDBOX_STATE_ERROR", "Sandbox is not stopped")
		return
	}
	s.begin(sb, Archived, Archiving, Archived)
	w.WriteHeader(http.StatusOK)
}

func (s *Server) delete(w http.ResponseWriter, r *http.Request, id string) {
	sb, ok := s.find(w, r, id)
	if !ok {
		return
	}
	if sb.inProgress() {
		s.fail(w, r, http.StatusConflict, "SANDBOX_STATE_CHANGE_IN_PROGRESS", "Sandbox state change in progress")
		return
	}
	s.begin(sb, Destroyed, Destroying, Destroyed)
	w.WriteHeader(http.StatusOK)
}

type page struct {
	Items      []Sandbox `json:"items"`
	Total      int       `json:"total"`
	Page       int       `json:"page"`
	TotalPages int       `json:"totalPages"`
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var sel map[string]string
	if l := q.Get("labels"); l != "" {
		if err := json.Unmarshal([]byte(l), &sel); err != nil {
			s.fail(w, r, http.StatusBadRequest, "", "labels must be a JSON object of strings")
			return
		}
	}
	var out []Sandbox
	for _, id := range s.order {
		sb := s.sandboxes[id]
		if sb.dto.State == Destroyed || !contains(sb.dto.Labels, sel) {
			continue
		}
		out = append(out, copyDTO(sb.dto))
	}
	if !s.opts.Paginated {
		if out == nil {
			out = []Sandbox{}
		}
		s.reply(w, http.StatusOK, out)
		return
	}
	// The newer API sorts by createdAt descending by default; keep ids
	// stable within equal times.
	sort.SliceStable(out, func(i, j int) bool { return out[i].CreatedAt > out[j].CreatedAt })
	pg, limit := 1, 10
	var err error
	if v := q.Get("page"); v != "" {
		if pg, err = strconv.Atoi(v); err != nil || pg < 1 {
			s.fail(w, r, http.StatusBadRequest, "", "page must not be less than 1")
			return
		}
	}
	if v := q.Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 1 || limit > 100 {
			s.fail(w, r, http.StatusBadRequest, "", "limit must not be greater than 100")
			return
		}
	}
	res := page{Items: []Sandbox{}, Total: len(out), Page: pg, TotalPages: (len(out) + limit - 1) / limit}
	if lo := (pg - 1) * limit; lo < len(out) {
		res.Items = out[lo:min(lo+limit, len(out))]
	}
	s.reply(w, http.StatusOK, res)
}

func contains(labels, sel map[string]string) bool {
	for k, v := range sel {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

func copyDTO(d Sandbox) Sandbox {
	cp := func(m map[string]string) map[string]string {
		out := make(map[string]string, len(m))
		for k, v := range m {
			out[k] = v
		}
		return out
	}
	d.Env, d.Labels = cp(d.Env), cp(d.Labels)
	return d
}

func (s *Server) reply(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// fail writes Daytona's error body.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, status int, code, message string) {
	body := map[string]any{
		"statusCode": status,
		"timestamp":  s.now(),
		"path":       r.URL.RequestURI(),
		"method":     r.Method,
		"error":      http.StatusText(status),
		"message":    message,
	}
	if code != "" {
		body["code"] = code
	}
	s.reply(w, status, body)
}

type recorder struct {
	http.ResponseWriter
	status int
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

// unescape decodes a path segment (ids are opaque strings to the API).
func unescape(seg string) (string, error) { return url.PathUnescape(seg) }
