// Package remote is the agent's side of the coordinator API: a gRPC client
// that implements snapshot.Remote (uploading packs through signed URLs) and
// commits and restores versions. The agent never holds storage credentials.
package remote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sandkeep/sandkeep/internal/dial"
	"github.com/sandkeep/sandkeep/internal/errinfo"
	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/redact"
	"github.com/sandkeep/sandkeep/internal/retry"
	"github.com/sandkeep/sandkeep/internal/snapshot"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// ErrConflict is returned (wrapped) by Commit when the parent is no longer
// the head.
var ErrConflict = errors.New("head moved")

// ErrBlobMissing is returned (wrapped) by UploadTrees and Commit when what
// is being committed names a chunk or tree the project does not store:
// the caller's index trusted a chunk that is gone (collected by GC after
// the version holding it was dropped, or never uploaded). Re-reading the
// files without the index, which asks FindMissingChunks again, heals it.
var ErrBlobMissing = errors.New("a referenced chunk is not stored")

// statusError carries a gRPC status under a message of its own (so the
// message is not "rpc error: code = ... desc = ..." twice over).
type statusError struct {
	st  *status.Status
	msg string
}

func (e *statusError) Error() string              { return e.msg }
func (e *statusError) GRPCStatus() *status.Status { return e.st }

// ErrUnreachable is returned (wrapped) by Open when the coordinator did not
// answer within Config.ConnectTimeout.
var ErrUnreachable = errors.New("coordinator unreachable")

// IsTokenRefused reports whether err is the coordinator refusing the token
// (unknown, revoked or expired, or its project deleted): final, retrying
// cannot help until an operator acts.
func IsTokenRefused(err error) bool {
	c := status.Code(err)
	return c == codes.Unauthenticated || c == codes.PermissionDenied
}

// Config says how to reach the coordinator.
type Config struct {
	Addr      string
	Token     string
	TLS       bool
	CAFile    string
	SandboxID string
	Workspace string
	Version   string // agent version
	// HTTPClient does the signed-URL requests (default: a client with
	// timeouts suited to 16 MiB packs).
	HTTPClient *http.Client
	// Retries of one signed-URL PUT on network errors and 5xx (default 5).
	Retries int
	// ConnectTimeout bounds how long Open waits for the coordinator to
	// answer (0: as long as ctx allows); past it Open fails with
	// ErrUnreachable, naming the address.
	ConnectTimeout time.Duration
	// TokenSource says where Token came from ("--token", "SANDKEEP_TOKEN"),
	// for error messages.
	TokenSource string
	// OnWaiting, if set, is called once if the coordinator has not answered
	// within half a second, so a command can say what it waits for.
	OnWaiting func(addr string)
}

// Client is an open session with the coordinator.
type Client struct {
	conn    *grpc.ClientConn
	api     pb.AgentServiceClient
	http    *http.Client
	retries int
	Session *pb.OpenSessionResponse
}

// DefaultHTTPClient is used for signed-URL requests.
func DefaultHTTPClient() *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConnsPerHost:   32,
			IdleConnTimeout:       90 * time.Second,
			ResponseHeaderTimeout: 60 * time.Second,
			ExpectContinueTimeout: time.Second,
		},
	}
}

// Open connects and opens a session.
func Open(ctx context.Context, cfg Config) (*Client, error) {
	if cfg.Token == "" {
		return nil, errors.New("no sandbox token (set SANDKEEP_TOKEN or --token)")
	}
	conn, err := dial.Dial(cfg.Addr, dial.Options{Token: cfg.Token, TLS: cfg.TLS, CAFile: cfg.CAFile})
	if err != nil {
		return nil, err
	}
	c := &Client{conn: conn, api: pb.NewAgentServiceClient(conn), http: cfg.HTTPClient, retries: cfg.Retries}
	if c.http == nil {
		c.http = DefaultHTTPClient()
	}
	if c.retries <= 0 {
		c.retries = 5
	}
	host, _ := os.Hostname()
	octx := ctx
	if cfg.ConnectTimeout > 0 {
		var cancel context.CancelFunc
		octx, cancel = context.WithTimeout(ctx, cfg.ConnectTimeout)
		defer cancel()
	}
	if cfg.OnWaiting != nil {
		t := time.AfterFunc(500*time.Millisecond, func() { cfg.OnWaiting(cfg.Addr) })
		defer t.Stop()
	}
	c.Session, err = c.api.OpenSession(octx, &pb.OpenSessionRequest{SandboxId: cfg.SandboxID, Hostname: host, AgentVersion: cfg.Version, Workspace: cfg.Workspace}, grpc.WaitForReady(true))
	if err != nil {
		conn.Close()
		if ctx.Err() == nil && octx.Err() != nil {
			return nil, fmt.Errorf("%w: no answer from %s within %s: is `sandkeep serve` running there, and is --coordinator (SANDKEEP_COORDINATOR) right? (wait longer with --connect-timeout)",
				ErrUnreachable, cfg.Addr, cfg.ConnectTimeout)
		}
		if IsTokenRefused(err) {
			src := cfg.TokenSource
			if src == "" {
				src = "the configuration"
			}
			st := status.Convert(err)
			return nil, &statusError{st: st, msg: fmt.Sprintf("the coordinator at %s refused the sandbox token from %s (%s): check it, or create one with `sandkeep token create --project ID`",
				cfg.Addr, src, st.Message())}
		}
		return nil, fmt.Errorf("open session with %s: %w", cfg.Addr, err)
	}
	return c, nil
}

// Close ends the session.
func (c *Client) Close() error { return c.conn.Close() }

// API returns the raw gRPC client.
func (c *Client) API() pb.AgentServiceClient { return c.api }

// ProjectID is the token's project.
func (c *Client) ProjectID() string { return c.Session.GetProjectId() }

// FindMissing implements snapshot.Remote.
func (c *Client) FindMissing(ctx context.Context, ids []id.ID) ([]id.ID, error) {
	req := &pb.FindMissingChunksRequest{Ids: make([][]byte, len(ids))}
	for i, v := range ids {
		req.Ids[i] = v.Bytes()
	}
	resp, err := c.api.FindMissingChunks(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("find missing chunks: %w", err)
	}
	out := make([]id.ID, 0, len(resp.GetMissing()))
	for _, b := range resp.GetMissing() {
		v, err := id.FromBytes(b)
		if err != nil {
			return nil, fmt.Errorf("find missing chunks: coordinator sent %w", err)
		}
		out = append(out, v)
	}
	return out, nil
}

// UploadPack implements snapshot.Remote: signed PUT, then CompletePacks,
// with sent (if not nil) called between the two, when data is no longer
// needed. A pack the project already stores needs neither (the coordinator
// refuses to sign a URL for it); a PUT refused because the object exists
// (412: signed PUTs are create-only) goes on to CompletePacks, which
// verifies whatever is stored under the pack's id.
func (c *Client) UploadPack(ctx context.Context, packID id.ID, data []byte, sent func()) error {
	ref := &pb.PackUpload{PackId: packID.Bytes(), Size: int64(len(data))}
	resp, err := c.api.GetUploadTargets(ctx, &pb.GetUploadTargetsRequest{Packs: []*pb.PackUpload{ref}})
	if status.Code(err) == codes.AlreadyExists && errinfo.Reason(err) == errinfo.PackStored {
		return nil
	}
	if err != nil {
		return fmt.Errorf("get upload target for pack %s: %w", packID.Short(), err)
	}
	if len(resp.GetTargets()) != 1 {
		return fmt.Errorf("get upload target for pack %s: coordinator sent %d targets", packID.Short(), len(resp.GetTargets()))
	}
	putErr := c.put(ctx, resp.GetTargets()[0].GetRequest(), data)
	if putErr != nil && !errors.Is(putErr, errObjectExists) && !errors.Is(putErr, errClosedEarly) {
		return fmt.Errorf("upload pack %s: %w", packID.Short(), putErr)
	}
	// Uploaded, or refused because it is there already (412, or the
	// server closed on the body it would refuse): the coordinator reads
	// the object back and verifies it, so asking is always safe. Nothing
	// reads data from here on.
	if sent != nil {
		sent()
	}
	if _, err := c.api.CompletePacks(ctx, &pb.CompletePacksRequest{Packs: []*pb.PackUpload{ref}}); err != nil {
		if putErr != nil {
			return fmt.Errorf("upload pack %s: %w (and completing it: %v)", packID.Short(), putErr, err)
		}
		return fmt.Errorf("complete pack %s: %w", packID.Short(), err)
	}
	return nil
}

// errClosedEarly: every attempt of a PUT ended with the server closing the
// connection while the body was being sent (connection reset, broken
// pipe) — what some S3 servers do when they refuse a create-only PUT
// before reading it (the 412 never reaches the client).
var errClosedEarly = errors.New("the server closed the connection during the upload")

// errObjectExists: a create-only signed PUT found the object there already
// (an earlier attempt whose answer was lost, or the same pack from before).
var errObjectExists = errors.New("object exists")

// put sends data to a signed URL, retrying network errors and 5xx. It
// returns only once the HTTP transport is done with data: a transport may
// go on reading a request's body after the response (a 412 sent before the
// body was read), and the caller reuses data's buffer. If ctx ends first,
// it returns ctx's error, whatever the server answered.
func (c *Client) put(ctx context.Context, sr *pb.SignedRequest, data []byte) (err error) {
	var bodies sync.WaitGroup
	defer func() {
		closed := make(chan struct{})
		go func() { bodies.Wait(); close(closed) }()
		select {
		case <-closed:
		case <-ctx.Done():
			err = ctx.Err()
		}
	}()
	newBody := func() io.ReadCloser {
		bodies.Add(1)
		return &putBody{Reader: bytes.NewReader(data), closed: bodies.Done}
	}
	var last error
	bo := retry.Backoff{Min: 200 * time.Millisecond, Max: 5 * time.Second, Jitter: 0.2}
	for attempt := 0; attempt < c.retries; attempt++ {
		if attempt > 0 {
			if err := retry.Sleep(ctx, bo.Delay(attempt)); err != nil {
				return ctx.Err()
			}
		}
		req, err := http.NewRequestWithContext(ctx, sr.GetMethod(), sr.GetUrl(), nil)
		if err != nil {
			return fmt.Errorf("bad signed request: %w", err)
		}
		req.Body, req.ContentLength = newBody(), int64(len(data))
		req.GetBody = func() (io.ReadCloser, error) { return newBody(), nil }
		for k, v := range sr.GetHeaders() {
			req.Header.Set(k, v)
		}
		resp, err := c.http.Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			last = redact.Error(err) // never a signed URL in a log
			if errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
				last = fmt.Errorf("%w: %w", errClosedEarly, last)
			}
			continue
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		switch {
		case resp.StatusCode >= 200 && resp.StatusCode < 300:
			return nil
		case resp.StatusCode == http.StatusPreconditionFailed:
			return errObjectExists
		case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests:
			last = fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(body))
			continue
		default:
			return fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(body))
		}
	}
	return fmt.Errorf("after %d attempts: %w", c.retries, last)
}

// putBody is a PUT's body that says when the transport closed it, which
// every http.RoundTripper does, on errors too, though maybe after RoundTrip
// returned.
type putBody struct {
	*bytes.Reader
	once   sync.Once
	closed func()
}

func (b *putBody) Close() error {
	b.once.Do(b.closed)
	return nil
}

// UploadTrees implements snapshot.Remote. If a tree names a chunk the
// project does not store, the error wraps ErrBlobMissing.
func (c *Client) UploadTrees(ctx context.Context, trees [][]byte) error {
	if _, err := c.api.UploadTrees(ctx, &pb.UploadTreesRequest{Trees: trees}); err != nil {
		if errinfo.Reason(err) == errinfo.BlobMissing {
			return fmt.Errorf("upload trees: %w: %v", ErrBlobMissing, status.Convert(err).Message())
		}
		return fmt.Errorf("upload trees: %w", err)
	}
	return nil
}

// Commit makes root the new head on top of parent. If the head moved, the
// error wraps ErrConflict.
func (c *Client) Commit(ctx context.Context, parent int64, root id.ID, kind pb.VersionKind) (*pb.Version, error) {
	resp, err := c.api.CommitVersion(ctx, &pb.CommitVersionRequest{Parent: parent, Root: root.Bytes(), Kind: kind, SessionId: c.Session.GetSessionId()})
	if status.Code(err) == codes.FailedPrecondition {
		if errinfo.Reason(err) == errinfo.BlobMissing {
			return nil, fmt.Errorf("commit on version %d: %w: %v", parent, ErrBlobMissing, status.Convert(err).Message())
		}
		return nil, fmt.Errorf("commit on version %d: %w: %v", parent, ErrConflict, status.Convert(err).Message())
	}
	if err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	return resp.GetVersion(), nil
}

// RestorePlan opens the plan stream of a version (0 = head).
func (c *Client) RestorePlan(ctx context.Context, version int64) (pb.AgentService_GetRestorePlanClient, error) {
	s, err := c.api.GetRestorePlan(ctx, &pb.GetRestorePlanRequest{Version: version})
	if err != nil {
		return nil, fmt.Errorf("restore plan: %w", err)
	}
	return s, nil
}

var _ snapshot.Remote = (*Client)(nil)
