package console

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sandkeep/sandkeep/internal/progress"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

func statusNotFound(msg string) error { return status.Error(codes.NotFound, msg) }

func projectURL(id, sub string) string { return "/ui/p/" + url.PathEscape(id) + sub }

// liveSandbox is the project's live sandbox: the console never takes a
// sandbox id from a form, so a session acts on its own project's only.
func (c *Console) liveSandbox(r *http.Request, id string) (*pb.Sandbox, error) {
	if c.life == nil {
		return nil, status.Error(codes.Unimplemented, "this coordinator runs no sandbox lifecycle")
	}
	live, err := c.liveSandboxes(r, id)
	if err != nil {
		return nil, err
	}
	sb := live[id]
	if sb == nil {
		return nil, status.Error(codes.FailedPrecondition, "the project has no sandbox; Start creates one")
	}
	return sb, nil
}

func (c *Console) postEnsure(w http.ResponseWriter, r *http.Request, s *session, id string) {
	if c.life == nil {
		c.fail(w, r, s, status.Error(codes.Unimplemented, "this coordinator runs no sandbox lifecycle"))
		return
	}
	resp, err := c.life.EnsureSandbox(r.Context(), &pb.EnsureSandboxRequest{ProjectId: id})
	if err != nil {
		c.fail(w, r, s, err)
		return
	}
	msg := fmt.Sprintf("sandbox %s is ready (version %d, %s)", resp.GetSandbox().GetId(), resp.GetVersion(), resp.GetTook().AsDuration().Round(time.Millisecond))
	done(w, r, projectURL(id, ""), msg)
}

func (c *Console) postStop(w http.ResponseWriter, r *http.Request, s *session, id string) {
	sb, err := c.liveSandbox(r, id)
	if err == nil {
		_, err = c.life.StopSandbox(r.Context(), &pb.StopSandboxRequest{SandboxId: sb.GetId()})
	}
	if err != nil {
		c.fail(w, r, s, err)
		return
	}
	done(w, r, projectURL(id, ""), "sandbox "+sb.GetId()+" stopped; its files are kept")
}

func (c *Console) postDestroy(w http.ResponseWriter, r *http.Request, s *session, id string) {
	sb, err := c.liveSandbox(r, id)
	var resp *pb.DestroySandboxResponse
	if err == nil {
		resp, err = c.life.DestroySandbox(r.Context(), &pb.DestroySandboxRequest{SandboxId: sb.GetId(), Force: r.PostFormValue("force") == "1"})
	}
	if err != nil {
		c.fail(w, r, s, err)
		return
	}
	msg := "sandbox " + sb.GetId() + " destroyed; every file is in version " + strconv.FormatInt(resp.GetSandbox().GetVerifiedVersion(), 10)
	if resp.GetLost() != "" {
		msg = "sandbox " + sb.GetId() + " destroyed; lost: " + resp.GetLost()
	}
	done(w, r, projectURL(id, ""), msg)
}

func (c *Console) postFlush(w http.ResponseWriter, r *http.Request, s *session, id string) {
	resp, err := c.admin.FlushProject(r.Context(), &pb.FlushProjectRequest{ProjectId: id, Timeout: durationpb.New(time.Minute)})
	if err != nil {
		c.fail(w, r, s, err)
		return
	}
	done(w, r, projectURL(id, ""), fmt.Sprintf("flushed: everything on disk is in version %d", resp.GetVersion()))
}

func agentNote(a *pb.AgentApply) string {
	switch {
	case a.GetApplied():
		return fmt.Sprintf("; the running sandbox has it (version %d)", a.GetVersion())
	case a.GetConnected():
		return "; the running sandbox has not applied it yet: " + a.GetError()
	}
	return "; no sandbox is running: the next one starts with it"
}

func (c *Console) postRollback(w http.ResponseWriter, r *http.Request, s *session, id string) {
	v, _ := strconv.ParseInt(r.PostFormValue("version"), 10, 64)
	resp, err := c.admin.RollbackProject(r.Context(), &pb.RollbackProjectRequest{ProjectId: id, Version: v, AgentTimeout: durationpb.New(30 * time.Second)})
	if err != nil {
		c.fail(w, r, s, err)
		return
	}
	a := &pb.AgentApply{Connected: resp.GetAgentConnected(), Applied: resp.GetAgentApplied(), Version: resp.GetAgentVersion(), Error: resp.GetAgentError()}
	done(w, r, projectURL(id, "/versions"), fmt.Sprintf("rolled back to version %d as version %d%s", v, resp.GetVersion().GetNumber(), agentNote(a)))
}

func (c *Console) postPin(w http.ResponseWriter, r *http.Request, s *session, id string) {
	v, _ := strconv.ParseInt(r.PostFormValue("version"), 10, 64)
	pin := r.PostFormValue("pinned") == "1"
	if _, err := c.admin.PinVersion(r.Context(), &pb.PinVersionRequest{ProjectId: id, Version: v, Pinned: pin}); err != nil {
		c.fail(w, r, s, err)
		return
	}
	what := "unpinned"
	if pin {
		what = "pinned"
	}
	done(w, r, projectURL(id, "/versions"), fmt.Sprintf("version %d %s", v, what))
}

// postPolicy sets the project's policy override: each field a duration
// ("30m", "2h"), empty for the global value; reset drops the override.
func (c *Console) postPolicy(w http.ResponseWriter, r *http.Request, s *session, id string) {
	req := &pb.SetPolicyRequest{ProjectId: id, ResetOverride: r.PostFormValue("reset") == "1", Override: &pb.PolicyValues{}}
	if !req.ResetOverride {
		for _, f := range []struct {
			name string
			set  func(*durationpb.Duration)
		}{
			{"stop_after", func(d *durationpb.Duration) { req.Override.StopAfter = d }},
			{"destroy_after", func(d *durationpb.Duration) { req.Override.DestroyAfter = d }},
			{"archive_after", func(d *durationpb.Duration) { req.Override.ArchiveAfter = d }},
			{"delete_history_after", func(d *durationpb.Duration) { req.Override.DeleteHistoryAfter = d }},
		} {
			v := strings.TrimSpace(r.PostFormValue(f.name))
			if v == "" {
				continue
			}
			d, err := time.ParseDuration(v)
			if err != nil {
				c.fail(w, r, s, status.Errorf(codes.InvalidArgument, "%s: %q is not a duration (e.g. 30m, 2h)", f.name, v))
				return
			}
			f.set(durationpb.New(d))
		}
	}
	if _, err := c.life.SetPolicy(r.Context(), req); err != nil {
		c.fail(w, r, s, err)
		return
	}
	done(w, r, projectURL(id, ""), "policy saved")
}

func (c *Console) postDeleteProject(w http.ResponseWriter, r *http.Request, s *session, id string) {
	p, err := c.admin.GetProject(r.Context(), &pb.GetProjectRequest{ProjectId: id})
	if err != nil {
		c.fail(w, r, s, err)
		return
	}
	if typed := strings.TrimSpace(r.PostFormValue("confirm")); typed != p.GetProject().GetName() {
		c.fail(w, r, s, status.Errorf(codes.InvalidArgument, "to delete the project, type its name (%q) in the confirmation box", p.GetProject().GetName()))
		return
	}
	if c.life != nil {
		if sb, err := c.liveSandbox(r, id); err == nil {
			if _, err := c.life.DestroySandbox(r.Context(), &pb.DestroySandboxRequest{SandboxId: sb.GetId(), Force: true}); err != nil {
				c.fail(w, r, s, err)
				return
			}
		}
	}
	resp, err := c.admin.DeleteProject(r.Context(), &pb.DeleteProjectRequest{ProjectId: id})
	if err != nil {
		c.fail(w, r, s, err)
		return
	}
	msg := fmt.Sprintf("project %s deleted: %d objects, %s freed", p.GetProject().GetName(), resp.GetObjectsDeleted(), progress.Bytes(resp.GetBytesFreed()))
	if !s.admin() {
		c.logout(s)
		clearSessionCookie(w, r)
		c.render(w, r, http.StatusOK, nil, "message", page{Title: "Project deleted", Message: msg})
		return
	}
	done(w, r, "/ui/projects", msg)
}

// postRemove commits a version without one path (DeleteFiles).
func (c *Console) postRemove(w http.ResponseWriter, r *http.Request, s *session, id string) {
	p := r.PostFormValue("path")
	resp, err := c.admin.DeleteFiles(r.Context(), &pb.DeleteFilesRequest{ProjectId: id, Paths: []string{p}, AgentTimeout: durationpb.New(30 * time.Second)})
	if err != nil {
		c.fail(w, r, s, err)
		return
	}
	dir := strings.TrimSuffix(p[:strings.LastIndex("/"+p, "/")], "/")
	done(w, r, projectURL(id, "/files?dir="+url.QueryEscape(dir)), fmt.Sprintf("%s removed in version %d%s", p, resp.GetVersion().GetNumber(), agentNote(resp.GetAgent())))
}

// postUpload streams a multipart upload (fields "dir", then one or more
// "file" parts) into PutFiles, in process: the same RPC `sandkeep put`
// calls, so the same checks, limits and data path.
func (c *Console) postUpload(w http.ResponseWriter, r *http.Request, s *session, id string) {
	mr, err := r.MultipartReader()
	if err != nil {
		c.fail(w, r, s, status.Error(codes.InvalidArgument, "an upload is a multipart/form-data POST"))
		return
	}
	st := &uploadStream{r: r, project: id, mr: mr, dir: strings.Trim(r.URL.Query().Get("dir"), "/")}
	if err := c.admin.PutFiles(st); err != nil {
		c.fail(w, r, s, err)
		return
	}
	if st.resp == nil {
		c.fail(w, r, s, errors.New("upload: no answer"))
		return
	}
	res := st.resp
	msg := fmt.Sprintf("%d file(s), %s, committed as version %d%s", res.GetFiles(), progress.Bytes(res.GetBytes()), res.GetVersion().GetNumber(), agentNote(res.GetAgent()))
	if r.Header.Get("Accept") == "application/json" {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"version":%d,"files":%d,"bytes":%d,"message":%q}`+"\n", res.GetVersion().GetNumber(), res.GetFiles(), res.GetBytes(), msg)
		return
	}
	done(w, r, projectURL(id, "/files?dir="+url.QueryEscape(st.dir)), msg)
}

// uploadStream adapts a multipart body to pb.AdminService_PutFilesServer:
// each "file" part becomes a header (dir/filename) and its data messages.
type uploadStream struct {
	grpc.ServerStream // unused: PutFiles calls only the methods below
	r                 *http.Request
	project, dir      string
	mr                *multipart.Reader
	part              *multipart.Part
	buf               []byte
	resp              *pb.PutFilesResponse
}

func (u *uploadStream) Context() context.Context { return u.r.Context() }

func (u *uploadStream) SendAndClose(m *pb.PutFilesResponse) error {
	u.resp = m
	return nil
}

func (u *uploadStream) Recv() (*pb.PutFilesRequest, error) {
	if u.buf == nil {
		u.buf = make([]byte, 256<<10)
	}
	for {
		if u.part != nil {
			n, err := u.part.Read(u.buf)
			if n > 0 {
				// PutFiles consumes a data message before the next Recv,
				// so the buffer is reused.
				return &pb.PutFilesRequest{Msg: &pb.PutFilesRequest_Data{Data: u.buf[:n]}}, nil
			}
			if errors.Is(err, io.EOF) {
				u.part.Close()
				u.part = nil
				continue
			}
			if err != nil {
				return nil, status.Errorf(codes.InvalidArgument, "upload: %v", err)
			}
			continue
		}
		p, err := u.mr.NextPart()
		if errors.Is(err, io.EOF) {
			return nil, io.EOF
		}
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "upload: %v", err)
		}
		switch p.FormName() {
		case "file":
			if p.FileName() == "" {
				continue // an empty file input
			}
			u.part = p
			name := p.FileName()
			if u.dir != "" {
				name = u.dir + "/" + name
			}
			return &pb.PutFilesRequest{Msg: &pb.PutFilesRequest_Header{Header: &pb.PutFileHeader{
				ProjectId: u.project, Path: name, AgentTimeout: durationpb.New(30 * time.Second),
			}}}, nil
		case "dir":
			b, err := io.ReadAll(io.LimitReader(p, 4097))
			if err != nil || len(b) > 4096 {
				return nil, status.Error(codes.InvalidArgument, "upload: dir field missing or longer than 4096 bytes")
			}
			u.dir = strings.Trim(string(b), "/")
		}
	}
}
