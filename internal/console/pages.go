package console

import (
	"cmp"
	"fmt"
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// projectRow is one line of the projects table.
type projectRow struct {
	P       *pb.Project
	Sandbox *pb.Sandbox // live sandbox, or nil
	Cost    *pb.ProjectCost
}

func (r projectRow) LastActivity() time.Time {
	if r.Sandbox != nil && r.Sandbox.GetLastActivityTime() != nil {
		return r.Sandbox.GetLastActivityTime().AsTime()
	}
	return r.P.GetCreateTime().AsTime()
}

// liveSandboxes returns the live sandbox of every project (of one, if
// project is set), by project id: ListSandboxes lists live ones only, and
// a project has at most one.
func (c *Console) liveSandboxes(r *http.Request, project string) (map[string]*pb.Sandbox, error) {
	out := map[string]*pb.Sandbox{}
	if c.life == nil {
		return out, nil
	}
	resp, err := c.life.ListSandboxes(r.Context(), &pb.ListSandboxesRequest{ProjectId: project})
	if err != nil {
		return nil, err
	}
	for _, sb := range resp.GetSandboxes() {
		out[sb.GetProjectId()] = sb
	}
	return out, nil
}

func (c *Console) costs(r *http.Request, project string, since *timestamppb.Timestamp) (*pb.GetCostResponse, error) {
	if c.life == nil {
		return &pb.GetCostResponse{Total: &pb.ProjectCost{}}, nil
	}
	return c.life.GetCost(r.Context(), &pb.GetCostRequest{ProjectId: project, Since: since})
}

func (c *Console) projectRows(r *http.Request) ([]projectRow, *pb.GetCostResponse, error) {
	ps, err := c.admin.ListProjects(r.Context(), &pb.ListProjectsRequest{})
	if err != nil {
		return nil, nil, err
	}
	live, err := c.liveSandboxes(r, "")
	if err != nil {
		return nil, nil, err
	}
	cost, err := c.costs(r, "", nil)
	if err != nil {
		return nil, nil, err
	}
	byProject := map[string]*pb.ProjectCost{}
	for _, pc := range cost.GetProjects() {
		byProject[pc.GetProjectId()] = pc
	}
	rows := make([]projectRow, 0, len(ps.GetProjects()))
	for _, p := range ps.GetProjects() {
		pc := byProject[p.GetId()]
		if pc == nil {
			pc = &pb.ProjectCost{ProjectId: p.GetId()}
		}
		rows = append(rows, projectRow{P: p, Sandbox: live[p.GetId()], Cost: pc})
	}
	return rows, cost, nil
}

type overviewData struct {
	Activity  *pb.GetActivityResponse
	Projects  int
	ByState   []stateCount
	Total     *pb.ProjectCost
	Attention []attention
}

type stateCount struct {
	State string
	N     int
}

type attention struct {
	Project, Name, What string
}

func (c *Console) overview(w http.ResponseWriter, r *http.Request, s *session) {
	if !s.admin() {
		http.Redirect(w, r, "/ui/p/"+s.project, http.StatusSeeOther)
		return
	}
	rows, cost, err := c.projectRows(r)
	if err != nil {
		c.fail(w, r, s, err)
		return
	}
	d := overviewData{Projects: len(rows), Total: cost.GetTotal()}
	if act, err := c.admin.GetActivity(r.Context(), &pb.GetActivityRequest{}); err == nil {
		d.Activity = act
		if n := act.GetPacksFailedVerification(); n > 0 {
			d.Attention = append(d.Attention, attention{What: fmt.Sprintf("%d uploaded packs failed verification since %s (a broken or hostile agent; see the coordinator's log)", n, act.GetStartTime().AsTime().UTC().Format(time.RFC3339))})
		}
		if n := act.GetGcRunsFailed(); n > 0 {
			d.Attention = append(d.Attention, attention{What: fmt.Sprintf("%d garbage collections failed (see the coordinator's log)", n)})
		}
	}
	counts := map[string]int{}
	for _, row := range rows {
		sb := row.Sandbox
		if sb == nil {
			counts["none (files kept)"]++
			continue
		}
		counts[sb.GetState()]++
		switch {
		case sb.GetState() == "error":
			d.Attention = append(d.Attention, attention{row.P.GetId(), row.P.GetName(), "sandbox in error: " + sb.GetLastError()})
		case sb.GetFlushFailures() > 0:
			d.Attention = append(d.Attention, attention{row.P.GetId(), row.P.GetName(), strconv.Itoa(int(sb.GetFlushFailures())) + " failed flushes: " + sb.GetLastFlushError()})
		case sb.GetBackupStatus() != "" && sb.GetBackupStatus() != "ok" && sb.GetBackupStatus() != "clean":
			d.Attention = append(d.Attention, attention{row.P.GetId(), row.P.GetName(), "backup " + sb.GetBackupStatus()})
		}
	}
	for st, n := range counts {
		d.ByState = append(d.ByState, stateCount{st, n})
	}
	slices.SortFunc(d.ByState, func(a, b stateCount) int { return cmp.Compare(a.State, b.State) })
	c.render(w, r, http.StatusOK, s, "overview", page{Title: "Overview", Tab: "overview", Data: d})
}

type projectsData struct {
	Rows []projectRow
	Q    string
	Sort string
}

func (c *Console) projects(w http.ResponseWriter, r *http.Request, s *session) {
	if !s.admin() {
		http.Redirect(w, r, "/ui/p/"+s.project, http.StatusSeeOther)
		return
	}
	rows, _, err := c.projectRows(r)
	if err != nil {
		c.fail(w, r, s, err)
		return
	}
	q := strings.TrimSpace(r.URL.Query().Get("q"))
	if q != "" {
		lq := strings.ToLower(q)
		rows = slices.DeleteFunc(rows, func(row projectRow) bool {
			return !strings.Contains(strings.ToLower(row.P.GetName()), lq) && !strings.Contains(row.P.GetId(), lq)
		})
	}
	sortBy := r.URL.Query().Get("sort")
	slices.SortStableFunc(rows, func(a, b projectRow) int {
		switch sortBy {
		case "activity":
			return b.LastActivity().Compare(a.LastActivity())
		case "bytes":
			return cmp.Compare(b.Cost.GetStoredBytes(), a.Cost.GetStoredBytes())
		case "cost":
			return cmp.Compare(b.Cost.GetTotalDollars(), a.Cost.GetTotalDollars())
		case "versions":
			return cmp.Compare(b.P.GetHead(), a.P.GetHead())
		}
		return cmp.Compare(a.P.GetName(), b.P.GetName())
	})
	c.render(w, r, http.StatusOK, s, "projects", page{Title: "Projects", Tab: "projects", Data: projectsData{Rows: rows, Q: q, Sort: sortBy}})
}

type projectData struct {
	P       *pb.Project
	Sandbox *pb.Sandbox
	Leases  []*pb.RunLease
	Policy  *pb.ProjectPolicy
	Cost    *pb.ProjectCost
	Agents  []*pb.AgentInfo
}

func (c *Console) projectPage(w http.ResponseWriter, r *http.Request, s *session, id string) {
	ctx := r.Context()
	p, err := c.admin.GetProject(ctx, &pb.GetProjectRequest{ProjectId: id})
	if err != nil {
		c.fail(w, r, s, err)
		return
	}
	d := projectData{P: p.GetProject(), Cost: &pb.ProjectCost{}}
	live, err := c.liveSandboxes(r, id)
	if err != nil {
		c.fail(w, r, s, err)
		return
	}
	d.Sandbox = live[id]
	if c.life != nil {
		if l, err := c.life.ListRunLeases(ctx, &pb.ListRunLeasesRequest{ProjectId: id}); err == nil {
			d.Leases = l.GetLeases()
		}
		if pol, err := c.life.GetPolicy(ctx, &pb.GetPolicyRequest{ProjectId: id}); err == nil {
			d.Policy = pol.GetPolicy()
		}
		if cost, err := c.costs(r, id, nil); err == nil && len(cost.GetProjects()) > 0 {
			d.Cost = cost.GetProjects()[0]
		}
	}
	if a, err := c.admin.ListAgents(ctx, &pb.ListAgentsRequest{ProjectId: id}); err == nil {
		d.Agents = a.GetAgents()
	}
	c.render(w, r, http.StatusOK, s, "project", page{Title: d.P.GetName(), Project: id, Tab: "sandbox", Data: d})
}

type versionsData struct {
	P        *pb.Project
	Versions []*pb.Version
	Next     string
}

func (c *Console) versionsPage(w http.ResponseWriter, r *http.Request, s *session, id string) {
	ctx := r.Context()
	p, err := c.admin.GetProject(ctx, &pb.GetProjectRequest{ProjectId: id})
	if err != nil {
		c.fail(w, r, s, err)
		return
	}
	vs, err := c.admin.ListVersions(ctx, &pb.ListVersionsRequest{ProjectId: id, PageSize: 100, PageToken: r.URL.Query().Get("page")})
	if err != nil {
		c.fail(w, r, s, err)
		return
	}
	c.render(w, r, http.StatusOK, s, "versions", page{Title: p.GetProject().GetName() + " · versions", Project: id, Tab: "versions",
		Data: versionsData{P: p.GetProject(), Versions: vs.GetVersions(), Next: vs.GetNextPageToken()}})
}

type diffData struct {
	A, B    int64
	Changes []*pb.FileChange
	Next    string
}

func (c *Console) diffPage(w http.ResponseWriter, r *http.Request, s *session, id string) {
	a, _ := strconv.ParseInt(r.URL.Query().Get("a"), 10, 64)
	b, _ := strconv.ParseInt(r.URL.Query().Get("b"), 10, 64)
	resp, err := c.admin.DiffVersions(r.Context(), &pb.DiffVersionsRequest{ProjectId: id, FromVersion: a, ToVersion: b, PageSize: 500, PageToken: r.URL.Query().Get("page")})
	if err != nil {
		c.fail(w, r, s, err)
		return
	}
	c.render(w, r, http.StatusOK, s, "diff", page{Title: "Diff", Project: id, Tab: "versions",
		Data: diffData{A: a, B: b, Changes: resp.GetChanges(), Next: resp.GetNextPageToken()}})
}

type filesData struct {
	Version *pb.Version
	Dir     string
	Crumbs  []crumb
	Files   []*pb.FileInfo
	Next    string
	Head    bool
}

type crumb struct{ Name, Path string }

func crumbs(dir string) []crumb {
	out := []crumb{{"/", ""}}
	if dir == "" {
		return out
	}
	acc := ""
	for _, e := range strings.Split(dir, "/") {
		acc = path.Join(acc, e)
		out = append(out, crumb{e, acc})
	}
	return out
}

func (c *Console) filesPage(w http.ResponseWriter, r *http.Request, s *session, id string) {
	q := r.URL.Query()
	v, _ := strconv.ParseInt(q.Get("v"), 10, 64)
	dir := strings.Trim(q.Get("dir"), "/")
	resp, err := c.admin.ListFiles(r.Context(), &pb.ListFilesRequest{ProjectId: id, Version: v, Prefix: dir, PageSize: 1000, PageToken: q.Get("page"), ChildrenOnly: true})
	if err != nil {
		c.fail(w, r, s, err)
		return
	}
	c.render(w, r, http.StatusOK, s, "files", page{Title: "Files", Project: id, Tab: "files",
		Data: filesData{Version: resp.GetVersion(), Dir: dir, Crumbs: crumbs(dir), Files: resp.GetFiles(), Next: resp.GetNextPageToken(), Head: v == 0}})
}

type fileData struct {
	Path    string
	Version int64
	Info    *pb.FileInfo
	History []*pb.FileRevision
	Preview string // "text", "image", "pdf" or ""
}

func (c *Console) filePage(w http.ResponseWriter, r *http.Request, s *session, id string) {
	q := r.URL.Query()
	v, _ := strconv.ParseInt(q.Get("v"), 10, 64)
	p := strings.Trim(q.Get("path"), "/")
	// The file's listing entry: ListFiles of a file's path lists it alone.
	resp, err := c.admin.ListFiles(r.Context(), &pb.ListFilesRequest{ProjectId: id, Version: v, Prefix: p, PageSize: 1})
	if err != nil {
		c.fail(w, r, s, err)
		return
	}
	d := fileData{Path: p, Version: resp.GetVersion().GetNumber()}
	for _, f := range resp.GetFiles() {
		if f.GetPath() == p {
			d.Info = f
		}
	}
	if d.Info == nil {
		c.fail(w, r, s, statusNotFound("no file "+p+" in version "+strconv.FormatInt(d.Version, 10)))
		return
	}
	if h, err := c.admin.ListFileHistory(r.Context(), &pb.ListFileHistoryRequest{ProjectId: id, Path: p, PageSize: 50}); err == nil {
		d.History = h.GetRevisions()
	}
	ct := d.Info.GetContentType()
	switch {
	case strings.HasPrefix(ct, "image/"):
		d.Preview = "image"
	case ct == "application/pdf":
		d.Preview = "pdf"
	case strings.HasPrefix(ct, "text/") || ct == "application/json" || ct == "application/xml":
		d.Preview = "text"
	}
	c.render(w, r, http.StatusOK, s, "file", page{Title: path.Base(p), Project: id, Tab: "files", Data: d})
}

// rawFile redirects to a short-lived signed file link (the links handler
// serves the bytes, with its Content-Security-Policy: sandbox).
func (c *Console) rawFile(w http.ResponseWriter, r *http.Request, s *session, id string) {
	q := r.URL.Query()
	v, _ := strconv.ParseInt(q.Get("v"), 10, 64)
	resp, err := c.admin.CreateFileLink(r.Context(), &pb.CreateFileLinkRequest{ProjectId: id, Path: q.Get("path"), Version: v, Ttl: durationpb.New(10 * time.Minute)})
	if err != nil {
		c.fail(w, r, s, err)
		return
	}
	http.Redirect(w, r, resp.GetUrl(), http.StatusFound)
}
