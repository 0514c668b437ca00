// Package daytona is a provider.Provider on Daytona's REST API.
//
// What it follows (public sources; the REST API is the one Daytona's SDKs
// are generated from):
//
//   - daytonaio/daytona apps/api/src/sandbox/controllers/sandbox.controller.ts:
//     the endpoints, relative to the API base URL (https://app.daytona.io/api):
//     POST /sandbox (create; 200 with the sandbox), GET /sandbox/{id},
//     DELETE /sandbox/{id}, POST /sandbox/{id}/start (200 with the sandbox),
//     POST /sandbox/{id}/stop, POST /sandbox/{id}/archive, and
//     GET /sandbox?labels=<JSON object> (a JSON array of sandboxes; the newer
//     API pages it as {items, total, page, totalPages} with page/limit ≤ 100,
//     and the client reads both). Every request carries
//     "Authorization: Bearer <API key>" and, optionally,
//     "X-Daytona-Organization-ID".
//   - apps/api/src/sandbox/dto/create-sandbox.dto.ts: the create body (snapshot,
//     env, labels, target, cpu/memory/disk in whole GB, autoStopInterval in
//     minutes, "0 means disabled" — omitted, Daytona's default of 15 minutes
//     applies, so the client always sends it — and buildInfo.dockerfileContent
//     for a sandbox from an image; sandbox.controller.ts refuses resources
//     with a snapshot).
//   - apps/api/src/sandbox/enums/sandbox-state.enum.ts and dto/sandbox.dto.ts:
//     the states (mapped by MapState below) and fields.
//   - apps/api/src/sandbox/services/sandbox.service.ts: start is a no-op on a
//     started sandbox and needs stopped/archived, stop needs started, archive
//     needs stopped, nothing changes while a change is in progress, a
//     destroyed sandbox is "not found"; apps/api/src/exceptions/*.ts and
//     apps/api/src/common/errors/api-error-code.enum.ts: those refusals are
//     400 (SANDBOX_STATE_ERROR, or code-less "State change in progress" /
//     "Sandbox is not started" in older versions) or 409
//     (SANDBOX_STATE_CHANGE_IN_PROGRESS); quotas are 400
//     ORGANIZATION_QUOTA_EXCEEDED (older: 403 "Total CPU limit exceeded…");
//     apps/api/src/filters/all-exceptions.filter.ts: the error body
//     {statusCode, message, error, code?, path, timestamp}.
//   - https://www.daytona.io/docs/en/rate-limits: 429 on exceeding a rate
//     limit (the throttler sends Retry-After); https://www.daytona.io/docs/en/sandboxes
//     for the lifecycle (stopped keeps the disk, archived moves it to object
//     storage, start on archived restores it).
//
// Errors: 401 (and 403 that is not a quota) wrap provider.ErrUnauthorized, 404
// ErrNotFound, 409 and 400 state refusals ErrConflict, quota refusals
// ErrQuota; 429 and 5xx are retried with exponential backoff (honouring
// Retry-After) and end as ErrUnavailable, like network failures. Every
// attempt is bounded by Config.RequestTimeout. Create, which is not
// idempotent, is retried only when the request cannot have been acted on
// (429, 502, 503, 504, or a failure to connect); a duplicate it might still
// make carries sandkeep's labels, so the reconciler finds it as an orphan.
package daytona

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/sandkeep/sandkeep/internal/provider"
	"github.com/sandkeep/sandkeep/internal/retry"
)

// DefaultAPIURL is Daytona's hosted API.
const DefaultAPIURL = "https://app.daytona.io/api"

// OrganizationHeader names the organization for the request.
const OrganizationHeader = "X-Daytona-Organization-ID"

// Config configures a Client.
type Config struct {
	// APIURL is the API base URL (default DefaultAPIURL).
	APIURL string
	// APIKey is sent as "Authorization: Bearer KEY". Required.
	APIKey string
	// OrganizationID, if set, is sent in OrganizationHeader.
	OrganizationID string
	// Target is the region sandboxes are created in ("" = the
	// organization's default).
	Target string
	// RequestTimeout bounds each HTTP attempt (default 90s: Daytona's create
	// and start wait up to 30 s for the sandbox to start before answering).
	RequestTimeout time.Duration
	// MaxAttempts bounds the attempts of one operation (default 5).
	MaxAttempts int
	// RetryMin and RetryMax bound the exponential backoff between attempts
	// (defaults 500ms and 15s).
	RetryMin, RetryMax time.Duration
	// MaxRetryAfter caps how long a Retry-After is honoured (default 2m); a
	// longer one ends the operation with ErrUnavailable at once.
	MaxRetryAfter time.Duration
	// HTTPClient (default: a client with connection timeouts).
	HTTPClient *http.Client
	// Sleep waits between attempts (default: a timer that honours ctx).
	// Tests replace it to run without waiting.
	Sleep func(ctx context.Context, d time.Duration) error
	// Logger (default: discard).
	Logger *slog.Logger
}

// Client is a Daytona provider. It is safe for concurrent use.
type Client struct {
	cfg  Config
	base *url.URL
	http *http.Client
	log  *slog.Logger
}

var _ provider.Provider = (*Client)(nil)

// New returns a client.
func New(cfg Config) (*Client, error) {
	if cfg.APIKey == "" {
		return nil, errors.New("daytona: an API key is required")
	}
	if cfg.APIURL == "" {
		cfg.APIURL = DefaultAPIURL
	}
	base, err := url.Parse(strings.TrimRight(cfg.APIURL, "/"))
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("daytona: API URL %q: want http(s)://host[/path]", cfg.APIURL)
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 90 * time.Second
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 5
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = 500 * time.Millisecond
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = 15 * time.Second
	}
	if cfg.RetryMax < cfg.RetryMin {
		cfg.RetryMax = cfg.RetryMin
	}
	if cfg.MaxRetryAfter <= 0 {
		cfg.MaxRetryAfter = 2 * time.Minute
	}
	if cfg.Sleep == nil {
		cfg.Sleep = sleep
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: cfg.RequestTimeout,
			IdleConnTimeout:       90 * time.Second,
			MaxIdleConnsPerHost:   8,
			ForceAttemptHTTP2:     true,
		}}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Client{cfg: cfg, base: base, http: hc, log: log}, nil
}

// Name is "daytona".
func (c *Client) Name() string { return "daytona" }

// MapState maps a Daytona sandbox state to sandkeep's:
//
//	Daytona                                                         sandkeep
//	creating, pending_build, building_snapshot, pulling_snapshot,
//	  unknown (a new sandbox not yet placed on a runner)            creating
//	starting, restoring (starting from archived)                    starting
//	started, snapshotting, forking (running, busy)                  started
//	stopping                                                        stopping
//	stopped, archiving (a stopped sandbox on its way to archived)   stopped
//	archived                                                        archived
//	destroying, destroyed (deletion is irreversible once accepted)  destroyed
//	error, build_failed, and any state this client does not know    error
//
// Sandbox.ProviderState keeps the raw state.
func MapState(raw string) provider.State {
	switch raw {
	case "creating", "pending_build", "building_snapshot", "pulling_snapshot", "unknown":
		return provider.StateCreating
	case "starting", "restoring":
		return provider.StateStarting
	case "started", "snapshotting", "forking":
		return provider.StateStarted
	case "stopping":
		return provider.StateStopping
	case "stopped", "archiving":
		return provider.StateStopped
	case "archived":
		return provider.StateArchived
	case "destroying", "destroyed":
		return provider.StateDestroyed
	default: // "error", "build_failed", anything new
		return provider.StateError
	}
}

// sandboxDTO is the part of Daytona's Sandbox the client reads.
type sandboxDTO struct {
	ID           string            `json:"id"`
	State        string            `json:"state"`
	DesiredState string            `json:"desiredState"`
	Labels       map[string]string `json:"labels"`
	CreatedAt    string            `json:"createdAt"`
	ErrorReason  string            `json:"errorReason"`
}

func (d sandboxDTO) sandbox() provider.Sandbox {
	sb := provider.Sandbox{
		ID: d.ID, State: MapState(d.State), Labels: d.Labels, ProviderState: d.State, ErrorReason: d.ErrorReason,
	}
	if sb.Labels == nil {
		sb.Labels = map[string]string{}
	}
	if t, err := time.Parse(time.RFC3339Nano, d.CreatedAt); err == nil {
		sb.CreatedAt = t
	}
	return sb
}

type buildInfo struct {
	DockerfileContent string   `json:"dockerfileContent"`
	ContextHashes     []string `json:"contextHashes"`
}

// createBody is Daytona's CreateSandbox.
type createBody struct {
	Snapshot string            `json:"snapshot,omitempty"`
	Env      map[string]string `json:"env,omitempty"`
	Labels   map[string]string `json:"labels,omitempty"`
	Target   string            `json:"target,omitempty"`
	CPU      int               `json:"cpu,omitempty"`
	Memory   int               `json:"memory,omitempty"`
	Disk     int               `json:"disk,omitempty"`
	// AutoStopInterval is always sent: 0 disables Daytona's idle timer,
	// while an absent one means its default (15 minutes).
	AutoStopInterval int        `json:"autoStopInterval"`
	BuildInfo        *buildInfo `json:"buildInfo,omitempty"`
}

// Create creates a sandbox. From a snapshot (or Daytona's default one) it
// cannot set resources; from an Image it is built from a one-line
// Dockerfile ("FROM image"), which Daytona answers at once with the sandbox
// in pending_build.
func (c *Client) Create(ctx context.Context, spec provider.CreateSpec) (provider.Sandbox, error) {
	body := createBody{
		Snapshot: spec.Snapshot, Env: spec.Env, Labels: spec.Labels, Target: c.cfg.Target,
		AutoStopInterval: spec.AutoStopMinutes,
	}
	if spec.AutoStopMinutes < 0 {
		return provider.Sandbox{}, fmt.Errorf("daytona: create: AutoStopMinutes %d is negative", spec.AutoStopMinutes)
	}
	switch {
	case spec.Image != "" && spec.Snapshot != "":
		return provider.Sandbox{}, errors.New("daytona: create: give an image or a snapshot, not both")
	case spec.Image != "":
		if strings.ContainsAny(spec.Image, "\n\r") || strings.TrimSpace(spec.Image) != spec.Image {
			return provider.Sandbox{}, fmt.Errorf("daytona: create: bad image reference %q", spec.Image)
		}
		body.BuildInfo = &buildInfo{DockerfileContent: "FROM " + spec.Image + "\n", ContextHashes: []string{}}
		body.CPU, body.Memory, body.Disk = spec.CPU, spec.MemoryGiB, spec.DiskGiB
	case spec.CPU != 0 || spec.MemoryGiB != 0 || spec.DiskGiB != 0:
		return provider.Sandbox{}, errors.New("daytona: create: CPU, memory and disk can only be set for a sandbox made from an image (a snapshot fixes its own)")
	}
	var out sandboxDTO
	if err := c.do(ctx, http.MethodPost, "/sandbox", nil, body, &out, false); err != nil {
		return provider.Sandbox{}, fmt.Errorf("daytona: create sandbox: %w", err)
	}
	if out.ID == "" {
		return provider.Sandbox{}, fmt.Errorf("daytona: create sandbox: the answer names no sandbox id: %w", provider.ErrUnavailable)
	}
	return out.sandbox(), nil
}

// Get returns a sandbox. A destroyed sandbox is ErrNotFound (Daytona's
// answer); one being destroyed is StateDestroyed.
func (c *Client) Get(ctx context.Context, id string) (provider.Sandbox, error) {
	if err := checkID(id); err != nil {
		return provider.Sandbox{}, err
	}
	var out sandboxDTO
	if err := c.do(ctx, http.MethodGet, "/sandbox/"+url.PathEscape(id), nil, nil, &out, true); err != nil {
		return provider.Sandbox{}, fmt.Errorf("daytona: get sandbox %s: %w", id, err)
	}
	return out.sandbox(), nil
}

// Start starts a stopped or archived sandbox (an archived one passes
// through restoring). It returns once Daytona accepted it; the sandbox may
// still be starting.
func (c *Client) Start(ctx context.Context, id string) error {
	return c.transition(ctx, id, "start", func(sb provider.Sandbox) bool {
		return sb.State == provider.StateStarted || sb.State == provider.StateStarting
	})
}

// Stop stops a started sandbox; its disk is kept.
func (c *Client) Stop(ctx context.Context, id string) error {
	return c.transition(ctx, id, "stop", func(sb provider.Sandbox) bool {
		return sb.State == provider.StateStopped || sb.State == provider.StateStopping || sb.State == provider.StateArchived
	})
}

// Archive moves a stopped sandbox's disk to object storage; a started one
// is ErrConflict (stop it and wait for stopped first).
func (c *Client) Archive(ctx context.Context, id string) error {
	return c.transition(ctx, id, "archive", func(sb provider.Sandbox) bool {
		return sb.ProviderState == "archiving" || sb.ProviderState == "archived"
	})
}

// transition POSTs /sandbox/{id}/{op}. When Daytona refuses it for the
// sandbox's state, the sandbox is looked at: if it already is where the
// operation leads (done reports that), the operation succeeds.
func (c *Client) transition(ctx context.Context, id, op string, done func(provider.Sandbox) bool) error {
	if err := checkID(id); err != nil {
		return err
	}
	err := c.do(ctx, http.MethodPost, "/sandbox/"+url.PathEscape(id)+"/"+op, nil, nil, nil, true)
	if errors.Is(err, provider.ErrConflict) {
		if sb, gerr := c.Get(ctx, id); gerr == nil && done(sb) {
			return nil
		}
	}
	if err != nil {
		return fmt.Errorf("daytona: %s sandbox %s: %w", op, id, err)
	}
	return nil
}

// Delete destroys a sandbox. A missing or already destroyed one is not an
// error; one in the middle of another change is ErrConflict.
func (c *Client) Delete(ctx context.Context, id string) error {
	if err := checkID(id); err != nil {
		return nil
	}
	err := c.do(ctx, http.MethodDelete, "/sandbox/"+url.PathEscape(id), nil, nil, nil, true)
	switch {
	case err == nil, errors.Is(err, provider.ErrNotFound):
		return nil
	case errors.Is(err, provider.ErrConflict):
		sb, gerr := c.Get(ctx, id)
		if errors.Is(gerr, provider.ErrNotFound) || (gerr == nil && sb.State == provider.StateDestroyed) {
			return nil
		}
	}
	return fmt.Errorf("daytona: delete sandbox %s: %w", id, err)
}

// listPage is the newer API's paged answer.
type listPage struct {
	Items      []sandboxDTO `json:"items"`
	Total      int          `json:"total"`
	Page       int          `json:"page"`
	TotalPages int          `json:"totalPages"`
}

// maxPages bounds how many pages List reads (100 sandboxes each).
const maxPages = 1000

// List returns the sandboxes whose labels include every selector label,
// destroyed (and destroying) ones excepted. The selector goes to Daytona
// as the JSON "labels" query parameter and is applied again here, so an
// API that ignored it could not widen the answer.
func (c *Client) List(ctx context.Context, labels map[string]string) ([]provider.Sandbox, error) {
	q := url.Values{}
	if len(labels) > 0 {
		b, err := json.Marshal(labels) // keys sorted: a stable query
		if err != nil {
			return nil, fmt.Errorf("daytona: list sandboxes: %w", err)
		}
		q.Set("labels", string(b))
	}
	q.Set("limit", "100")
	var out []provider.Sandbox
	seen := map[string]bool{}
	for pg := 1; pg <= maxPages; pg++ {
		q.Set("page", strconv.Itoa(pg))
		var raw json.RawMessage
		if err := c.do(ctx, http.MethodGet, "/sandbox", q, nil, &raw, true); err != nil {
			return nil, fmt.Errorf("daytona: list sandboxes: %w", err)
		}
		var items []sandboxDTO
		more := false
		if t := bytes.TrimSpace(raw); len(t) > 0 && t[0] == '[' {
			if err := json.Unmarshal(t, &items); err != nil {
				return nil, fmt.Errorf("daytona: list sandboxes: decode: %w", err)
			}
		} else {
			var p listPage
			if err := json.Unmarshal(t, &p); err != nil {
				return nil, fmt.Errorf("daytona: list sandboxes: decode: %w", err)
			}
			items = p.Items
			more = len(p.Items) > 0 && p.Page < p.TotalPages
		}
		for _, d := range items {
			sb := d.sandbox()
			if sb.ID == "" || seen[sb.ID] || sb.State == provider.StateDestroyed || !provider.MatchLabels(sb.Labels, labels) {
				continue
			}
			seen[sb.ID] = true
			out = append(out, sb)
		}
		if !more {
			return out, nil
		}
	}
	return nil, fmt.Errorf("daytona: list sandboxes: more than %d pages", maxPages)
}

func checkID(id string) error {
	if id == "" || id == "." || id == ".." {
		return fmt.Errorf("daytona: sandbox id %q: %w", id, provider.ErrNotFound)
	}
	return nil
}

// APIError is an error answer of the API. It unwraps to the provider
// sentinel error its status means (nil for other client errors).
type APIError struct {
	Method, Path string
	StatusCode   int
	Code         string // Daytona's error code, when it sends one
	Message      string
	Attempts     int // > 1 when it is the last of several attempts
	// After is the Retry-After the last answer carried (0: none).
	After time.Duration
	kind  error
}

// RetryAfter is the Retry-After of the last answer (retry.Afterer).
func (e *APIError) RetryAfter() time.Duration { return e.After }

// NotActed: Daytona refused the request before acting on it (429: rate
// limited), so even a create may be sent again.
func (e *APIError) NotActed() bool { return e.StatusCode == http.StatusTooManyRequests }

func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: %d", e.Method, e.Path, e.StatusCode)
	if e.Code != "" {
		fmt.Fprintf(&b, " %s", e.Code)
	}
	if e.Message != "" {
		fmt.Fprintf(&b, ": %s", e.Message)
	}
	if e.Attempts > 1 {
		fmt.Fprintf(&b, " (after %d attempts)", e.Attempts)
	}
	if e.kind != nil {
		fmt.Fprintf(&b, " [%v]", e.kind)
	}
	return b.String()
}

func (e *APIError) Unwrap() error { return e.kind }

// errorBody is Daytona's error answer; message may be a string or, from
// validation, a list of strings.
type errorBody struct {
	StatusCode int             `json:"statusCode"`
	Code       string          `json:"code"`
	Error      string          `json:"error"`
	Message    json.RawMessage `json:"message"`
}

func parseError(method, path string, status int, body []byte) *APIError {
	e := &APIError{Method: method, Path: path, StatusCode: status}
	var eb errorBody
	if json.Unmarshal(body, &eb) == nil {
		e.Code = eb.Code
		var s string
		var list []string
		switch {
		case json.Unmarshal(eb.Message, &s) == nil:
			e.Message = s
		case json.Unmarshal(eb.Message, &list) == nil:
			e.Message = strings.Join(list, "; ")
		}
		if e.Message == "" {
			e.Message = eb.Error
		}
	} else if t := strings.TrimSpace(string(body)); t != "" {
		e.Message = truncate(t, 200)
	}
	if e.Message == "" {
		e.Message = http.StatusText(status)
	}
	e.kind = classify(status, e.Code, e.Message)
	return e
}

func classify(status int, code, msg string) error {
	m := strings.ToLower(msg)
	quota := code == "ORGANIZATION_QUOTA_EXCEEDED" || strings.Contains(m, "quota") ||
		strings.Contains(m, "limit exceeded") || strings.Contains(m, "exceeds maximum allowed")
	switch {
	case status == http.StatusUnauthorized:
		return provider.ErrUnauthorized
	case code == "SANDBOX_OPERATION_NOT_SUPPORTED" || (status == http.StatusBadRequest && strings.Contains(m, "cannot be archived")):
		return provider.ErrUnsupported // e.g. "Ephemeral sandboxes cannot be archived"
	case (status == http.StatusForbidden || status == http.StatusBadRequest) && quota:
		return provider.ErrQuota
	case status == http.StatusForbidden:
		return provider.ErrUnauthorized
	case status == http.StatusNotFound:
		return provider.ErrNotFound
	case status == http.StatusConflict:
		return provider.ErrConflict
	case status == http.StatusBadRequest && (code == "SANDBOX_STATE_ERROR" || code == "SANDBOX_STATE_CHANGE_IN_PROGRESS" ||
		strings.Contains(m, "state") || strings.Contains(m, "is not started") || strings.Contains(m, "is not stopped")):
		return provider.ErrConflict
	case status == http.StatusTooManyRequests, status >= 500, code == "NO_AVAILABLE_RUNNERS":
		return provider.ErrUnavailable
	}
	return nil
}

// do runs one API operation with retries. idempotent operations are retried
// on any transient failure; others only when the request cannot have been
// acted on.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, in, out any, idempotent bool) error {
	var payload []byte
	if in != nil {
		var err error
		if payload, err = json.Marshal(in); err != nil {
			return err
		}
	}
	// path is already escaped (ids go through url.PathEscape).
	u := c.base.String() + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	for attempt := 1; ; attempt++ {
		status, hdr, body, err := c.once(ctx, method, u, payload)
		var wait time.Duration
		waitSet := false
		var last error
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return fmt.Errorf("%s %s: %w", method, path, ctx.Err())
			}
			last = fmt.Errorf("%s %s: %w: %v", method, path, provider.ErrUnavailable, err)
			if !idempotent && !isDialError(err) {
				return last
			}
		case status >= 200 && status < 300:
			if out == nil || len(bytes.TrimSpace(body)) == 0 {
				return nil
			}
			if err := json.Unmarshal(body, out); err != nil {
				return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
			}
			return nil
		default:
			apiErr := parseError(method, path, status, body)
			apiErr.Attempts = attempt
			last = apiErr
			retryable := status == http.StatusTooManyRequests || status >= 500
			if !idempotent {
				retryable = status == http.StatusTooManyRequests || status == http.StatusBadGateway ||
					status == http.StatusServiceUnavailable || status == http.StatusGatewayTimeout
			}
			if !retryable {
				return apiErr
			}
			if ra, ok := retryAfter(hdr.Get("Retry-After"), time.Now()); ok {
				apiErr.After = ra
				if ra > c.cfg.MaxRetryAfter {
					return fmt.Errorf("%w (Retry-After %s is longer than %s)", apiErr, ra, c.cfg.MaxRetryAfter)
				}
				wait, waitSet = ra, true
			}
		}
		if attempt >= c.cfg.MaxAttempts {
			return last
		}
		if !waitSet {
			wait = c.backoff(attempt)
		}
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
			return fmt.Errorf("%w (the next attempt, in %s, would pass the deadline)", last, wait.Round(time.Millisecond))
		}
		c.log.Debug("daytona: retrying", "method", method, "path", path, "attempt", attempt, "in", wait, "err", last)
		if err := c.cfg.Sleep(ctx, wait); err != nil {
			return fmt.Errorf("%w (gave up waiting to retry: %v)", last, err)
		}
	}
}

// once is one HTTP attempt, bounded by RequestTimeout; it reads the whole
// answer (at most 16 MiB).
func (c *Client) once(ctx context.Context, method, u string, payload []byte) (int, http.Header, []byte, error) {
	actx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer cancel()
	var body io.Reader
	if payload != nil {
		body = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(actx, method, u, body)
	if err != nil {
		return 0, nil, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.cfg.APIKey)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "sandkeep")
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.cfg.OrganizationID != "" {
		req.Header.Set(OrganizationHeader, c.cfg.OrganizationID)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return 0, nil, nil, fmt.Errorf("read answer: %w", err)
	}
	return resp.StatusCode, resp.Header, b, nil
}

// backoff is the wait before attempt+1: RetryMin·2^(attempt-1), capped at
// RetryMax, plus up to 20 % jitter so that replicas do not retry in step.
func (c *Client) backoff(attempt int) time.Duration {
	return retry.Backoff{Min: c.cfg.RetryMin, Max: c.cfg.RetryMax, Jitter: 0.2}.Delay(attempt)
}

// retryAfter parses a Retry-After header: delay-seconds or an HTTP date.
func retryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if n, err := strconv.ParseFloat(v, 64); err == nil && n >= 0 {
		return time.Duration(n * float64(time.Second)), true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
