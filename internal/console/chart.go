package console

import (
	"fmt"
	"html/template"
	"net/http"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sandkeep/sandkeep/internal/progress"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// chartDays is how many days the cost chart shows.
const chartDays = 14

// day is one day of a project's cost.
type day struct {
	Start    time.Time
	Hours    map[string]float64 // sandbox-hours by state
	Dollars  float64
	AlwaysOn float64
}

// costDays returns the project's cost per day over the last chartDays
// days, from GetCost's totals since each midnight (UTC): a day is the
// difference of two.
func (c *Console) costDays(r *http.Request, id string) ([]day, error) {
	today := c.now().UTC().Truncate(24 * time.Hour)
	cum := make([]*pb.ProjectCost, chartDays+1) // cum[i]: since today-(chartDays-1-i) days; cum[chartDays]: zero
	for i := range chartDays {
		since := today.AddDate(0, 0, -(chartDays - 1 - i))
		resp, err := c.costs(r, id, timestamppb.New(since))
		if err != nil {
			return nil, err
		}
		cum[i] = &pb.ProjectCost{}
		if len(resp.GetProjects()) > 0 {
			cum[i] = resp.GetProjects()[0]
		}
	}
	cum[chartDays] = &pb.ProjectCost{}
	days := make([]day, chartDays)
	for i := range chartDays {
		a, b := cum[i], cum[i+1]
		d := day{Start: today.AddDate(0, 0, -(chartDays - 1 - i)), Hours: map[string]float64{}}
		for _, st := range a.GetStates() {
			d.Hours[st.GetState()] += st.GetSeconds() / 3600
		}
		for _, st := range b.GetStates() {
			d.Hours[st.GetState()] -= st.GetSeconds() / 3600
		}
		d.Dollars = a.GetComputeDollars() - b.GetComputeDollars()
		d.AlwaysOn = a.GetAlwaysOnDollars() - b.GetAlwaysOnDollars()
		days[i] = d
	}
	return days, nil
}

var stateColors = []struct{ state, color string }{
	{"started", "#2f7d32"}, {"stopped", "#f0a500"}, {"archived", "#7a7a7a"},
}

// costChart draws the project's last chartDays days as an SVG: stacked
// bars of sandbox-hours by state, the compute dollars of each day as a
// line, and what an always-on sandbox would have cost as a dashed line.
func (c *Console) costChart(w http.ResponseWriter, r *http.Request, s *session, id string) {
	days, err := c.costDays(r, id)
	if err != nil {
		c.fail(w, r, s, err)
		return
	}
	w.Header().Set("Content-Type", "image/svg+xml")
	_, _ = w.Write([]byte(renderChart(days)))
}

func renderChart(days []day) string {
	const W, H, left, right, top, bottom = 720, 260, 48, 56, 16, 40
	pw, ph := float64(W-left-right), float64(H-top-bottom)
	maxH, maxD := 24.0, 0.0
	for _, d := range days {
		t := 0.0
		for _, h := range d.Hours {
			t += max(h, 0)
		}
		maxH = max(maxH, t)
		maxD = max(maxD, d.Dollars, d.AlwaysOn)
	}
	if maxD == 0 {
		maxD = 1
	}
	bw := pw / float64(len(days))
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" width="100%%" role="img" aria-label="Sandbox hours and cost per day, last %d days" font-family="system-ui,sans-serif" font-size="11">`, W, H, len(days))
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.0f" height="%.0f" fill="none" stroke="#ccc"/>`, left, top, pw, ph)
	fmt.Fprintf(&b, `<text x="4" y="%d">%.0f h</text><text x="4" y="%d">0</text>`, top+10, maxH, top+int(ph))
	dfmt := "$%.2f"
	if maxD < 1 {
		dfmt = "$%.4f"
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d">`+dfmt+`</text><text x="%d" y="%d">$0</text>`, W-right+4, top+10, maxD, W-right+4, top+int(ph))
	var line, always []string
	for i, d := range days {
		x := float64(left) + float64(i)*bw
		y := float64(top) + ph
		for _, sc := range stateColors {
			h := max(d.Hours[sc.state], 0)
			if h == 0 {
				continue
			}
			bh := h / maxH * ph
			y -= bh
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s: %.1f h %s</title></rect>`,
				x+2, y, bw-4, bh, sc.color, d.Start.Format("Jan 2"), h, sc.state)
		}
		cx := x + bw/2
		line = append(line, fmt.Sprintf("%.1f,%.1f", cx, float64(top)+ph-d.Dollars/maxD*ph))
		always = append(always, fmt.Sprintf("%.1f,%.1f", cx, float64(top)+ph-d.AlwaysOn/maxD*ph))
		if i%2 == 0 {
			fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`, cx, H-bottom+14, d.Start.Format("Jan 2"))
		}
	}
	fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="#888" stroke-dasharray="4 3" stroke-width="1.5"/>`, strings.Join(always, " "))
	fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="#1565c0" stroke-width="2"/>`, strings.Join(line, " "))
	lx := left
	for _, sc := range stateColors {
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="10" height="10" fill="%s"/><text x="%d" y="%d">%s h</text>`, lx, H-14, sc.color, lx+14, H-5, sc.state)
		lx += 90
	}
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#1565c0" stroke-width="2"/><text x="%d" y="%d">$ per day</text>`, lx, H-9, lx+16, H-9, lx+20, H-5)
	lx += 90
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#888" stroke-dasharray="4 3" stroke-width="1.5"/><text x="%d" y="%d">$ always on</text>`, lx, H-9, lx+16, H-9, lx+20, H-5)
	b.WriteString(`</svg>`)
	return b.String()
}

var funcs = template.FuncMap{
	"bytes": progress.Bytes,
	"ts": func(t *timestamppb.Timestamp) string {
		if t == nil || t.AsTime().IsZero() || t.AsTime().Unix() <= 0 {
			return "—"
		}
		return t.AsTime().UTC().Format("2006-01-02 15:04:05 UTC")
	},
	"tm": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04 UTC")
	},
	"ns":      func(ns int64) string { return time.Unix(0, ns).UTC().Format("2006-01-02 15:04:05 UTC") },
	"dollars": func(f float64) string { return fmt.Sprintf("$%.2f", f) },
	"kind": func(k pb.VersionKind) string {
		return strings.ToLower(strings.TrimPrefix(k.String(), "VERSION_KIND_"))
	},
	"etype":  func(t pb.EntryType) string { return strings.ToLower(strings.TrimPrefix(t.String(), "ENTRY_TYPE_")) },
	"change": func(k pb.ChangeKind) string { return strings.ToLower(strings.TrimPrefix(k.String(), "CHANGE_KIND_")) },
	"mode":   func(m uint32) string { return fmt.Sprintf("%04o", m) },
	"dur": func(d *durationpb.Duration) string {
		if d == nil {
			return ""
		}
		return d.AsDuration().String()
	},
	"base": func(p string) string {
		if i := strings.LastIndexByte(p, '/'); i >= 0 {
			return p[i+1:]
		}
		return p
	},
	"isdir": func(t pb.EntryType) bool { return t == pb.EntryType_ENTRY_TYPE_DIRECTORY },
}
