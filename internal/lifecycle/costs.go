package lifecycle

import (
	"context"
	"sort"
	"time"

	"github.com/sandkeep/sandkeep/internal/cost"
	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/policy"
)

// ProjectCost is the cost of one project (or, in CostReport.Total, of all).
type ProjectCost struct {
	ProjectID string `json:"project_id,omitempty"`
	// Seconds spent by the project's sandboxes in each state.
	Seconds map[policy.State]float64 `json:"seconds_by_state"`
	// SandboxHours: hours billed as a running sandbox (creating, starting,
	// started, stopping, error).
	SandboxHours float64        `json:"sandbox_hours"`
	StoredBytes  int64          `json:"stored_bytes"` // now
	Cost         cost.Breakdown `json:"cost"`
	// AlwaysOnHours and AlwaysOn: the baseline of a sandbox started for the
	// whole period since the project's first sandbox was created, at the
	// started rate (compute only: without sandkeep there is no bucket).
	AlwaysOnHours float64 `json:"always_on_hours"`
	AlwaysOn      float64 `json:"always_on_dollars"`
	// Savings: 1 − Cost.Total / AlwaysOn (0.8 = 80 % less).
	Savings float64 `json:"savings"`
}

// CostReport is Cost's answer.
type CostReport struct {
	Since    time.Time     `json:"since"` // zero: since the beginning
	Until    time.Time     `json:"until"`
	Rates    cost.Rates    `json:"rates"`
	Projects []ProjectCost `json:"projects"`
	Total    ProjectCost   `json:"total"`
}

// Cost prices the time the sandboxes of a project ("" for every project)
// spent in each state since since (zero: all time) until now, plus the
// bucket: the project's stored bytes now × the time since max(since,
// project creation) × the storage rate (an approximation: the registry
// keeps no history of stored bytes).
func (m *Manager) Cost(ctx context.Context, projectID string, since time.Time) (CostReport, error) {
	until := m.now()
	rep := CostReport{Since: since, Until: until, Rates: m.cfg.Rates}
	var projects []metastore.Project
	if projectID != "" {
		p, err := m.meta.GetProject(ctx, projectID)
		if err != nil {
			return rep, err
		}
		projects = []metastore.Project{p}
	} else {
		var err error
		if projects, err = m.meta.ListProjects(ctx); err != nil {
			return rep, err
		}
	}
	ivs, err := m.st.SandboxIntervals(ctx, projectID, since)
	if err != nil {
		return rep, err
	}
	byProject := map[string][]cost.Interval{}
	for _, iv := range ivs {
		to := iv.To
		if to.IsZero() || to.After(until) {
			to = until
		}
		byProject[iv.ProjectID] = append(byProject[iv.ProjectID], cost.Interval{State: iv.State, From: iv.From, To: to})
	}
	firstCreated := map[string]time.Time{}
	sbs, err := m.st.ListSandboxes(ctx, metastore.SandboxFilter{ProjectID: projectID})
	if err != nil {
		return rep, err
	}
	for _, sb := range sbs {
		if f, ok := firstCreated[sb.ProjectID]; !ok || sb.CreatedAt.Before(f) {
			firstCreated[sb.ProjectID] = sb.CreatedAt
		}
	}
	var total cost.Usage
	var totalBytes int64
	var totalAlwaysOnHours float64
	for _, p := range projects {
		bytes, err := m.st.StoredBytes(ctx, p.ID)
		if err != nil {
			return rep, err
		}
		_, hasSandboxes := firstCreated[p.ID]
		if projectID == "" && !hasSandboxes && bytes == 0 {
			continue
		}
		u := cost.UsageOf(byProject[p.ID], since, until)
		storeFrom := later(p.CreatedAt, since)
		if until.After(storeFrom) {
			u.AddStorage(float64(bytes), until.Sub(storeFrom).Seconds())
		}
		var aoHours float64
		if f, ok := firstCreated[p.ID]; ok {
			if from := later(f, since); until.After(from) {
				aoHours = until.Sub(from).Hours()
			}
		}
		rep.Projects = append(rep.Projects, m.projectCost(p.ID, u, bytes, aoHours))
		total.Merge(u)
		totalBytes += bytes
		totalAlwaysOnHours += aoHours
	}
	sort.Slice(rep.Projects, func(i, j int) bool { return rep.Projects[i].ProjectID < rep.Projects[j].ProjectID })
	rep.Total = m.projectCost("", total, totalBytes, totalAlwaysOnHours)
	return rep, nil
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func (m *Manager) projectCost(projectID string, u cost.Usage, bytes int64, alwaysOnHours float64) ProjectCost {
	pc := ProjectCost{ProjectID: projectID, Seconds: u.Seconds, SandboxHours: u.RunningHours(), StoredBytes: bytes,
		Cost: cost.Price(m.cfg.Rates, u), AlwaysOnHours: alwaysOnHours, AlwaysOn: alwaysOnHours * m.cfg.Rates.StartedPerHour}
	if pc.Seconds == nil {
		pc.Seconds = map[policy.State]float64{}
	}
	pc.Savings = cost.Savings(pc.Cost.Total, pc.AlwaysOn)
	return pc
}

// UpdateCostMetrics sets sandkeep_cost_dollars{project, kind} (kind compute
// or storage) from an all-time Cost report, and returns the report.
func (m *Manager) UpdateCostMetrics(ctx context.Context) (CostReport, error) {
	rep, err := m.Cost(ctx, "", time.Time{})
	if err != nil || m.cfg.Metrics == nil {
		return rep, err
	}
	for _, p := range rep.Projects {
		m.cfg.Metrics.CostDollars.WithLabelValues(p.ProjectID, "compute").Set(p.Cost.Compute)
		m.cfg.Metrics.CostDollars.WithLabelValues(p.ProjectID, "storage").Set(p.Cost.Storage)
	}
	return rep, nil
}
