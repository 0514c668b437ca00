package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sandkeep/sandkeep/internal/id"
	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/metastore/pgstore"
)

// The dbscale part (-only dbscale): a PostgreSQL database the size the
// issue names (projects × versions × files in the head's listing, and as
// many indexed blobs as files per project) is generated with
// generate_series; then the store's own methods run on one project of it
// with a tracer collecting every statement they send, and each statement is
// EXPLAINed (ANALYZE, in a transaction rolled back) with the arguments it
// was sent with. A sequential scan of a table that grows with the fleet is
// flagged: every per-project statement must be an index lookup or range.

type dbscaleOptions struct {
	projects, versions, files, blobs int
	pg                               string
}

// bigTables grow with the number of projects, versions or files.
var bigTables = map[string]bool{
	"projects": true, "tokens": true, "versions": true, "project_files": true, "packs": true, "blobs": true,
	"sandboxes": true, "sandbox_intervals": true, "run_leases": true, "agent_routes": true, "replica_commands": true,
}

type tracedStmt struct {
	method, sql string
	args        []any
}

// stmtLog is a pgx.QueryTracer keeping the first use of each statement
// while a method is being traced.
type stmtLog struct {
	mu     sync.Mutex
	method string
	seen   map[string]bool
	stmts  []tracedStmt
}

func (l *stmtLog) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.method != "" && !l.seen[d.SQL] && explainable(d.SQL) {
		l.seen[d.SQL] = true
		l.stmts = append(l.stmts, tracedStmt{method: l.method, sql: d.SQL, args: slices.Clone(d.Args)})
	}
	return ctx
}

// explainable: not a transaction's begin or end, nor a lock function.
func explainable(sql string) bool {
	s := strings.ToLower(strings.TrimSpace(sql))
	return !strings.HasPrefix(s, "select pg_") && s != "begin" && s != "commit" && s != "rollback"
}

func (l *stmtLog) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (l *stmtLog) trace(method string) {
	l.mu.Lock()
	l.method = method
	l.mu.Unlock()
}

// explained is one statement's plan on the large database.
type explained struct {
	Method    string   `json:"method"`
	SQL       string   `json:"sql"`
	Ms        float64  `json:"execution_ms"`
	Scans     []string `json:"scans"`
	SeqScans  []string `json:"seq_scans_of_big_tables,omitempty"`
	PlanError string   `json:"error,omitempty"`
}

type dbscaleReport struct {
	Projects, Versions, Files, Blobs int
	GenerateSeconds                  map[string]float64
	DatabaseMB                       int64
	Statements                       []explained
}

func (b *bench) dbscalePart(o dbscaleOptions) error {
	ctx := b.r.ctx
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	name := "sk_dbscale_" + hex.EncodeToString(suffix)
	dsn, err := createDatabase(ctx, o.pg, name)
	if err != nil {
		return err
	}
	defer dropDatabase(o.pg, name)
	rep, err := runDBScale(ctx, dsn, o)
	if err != nil {
		return err
	}
	if b.o.json {
		return json.NewEncoder(os.Stdout).Encode(rep)
	}
	printDBScale(rep)
	return nil
}

// runDBScale generates the database in the empty database dsn and
// explains the store's statements on it.
func runDBScale(ctx context.Context, dsn string, o dbscaleOptions) (dbscaleReport, error) {
	rep := dbscaleReport{Projects: o.projects, Versions: o.versions, Files: o.files, Blobs: o.blobs}
	log := &stmtLog{seen: map[string]bool{}}
	st, err := pgstore.Open(ctx, dsn, pgstore.WithTracer(log))
	if err != nil {
		return rep, err
	}
	defer st.Close()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return rep, err
	}
	defer conn.Close(ctx)
	if rep.GenerateSeconds, err = generateScale(ctx, conn, o); err != nil {
		return rep, fmt.Errorf("generate: %w", err)
	}
	_ = conn.QueryRow(ctx, `SELECT pg_database_size(current_database()) / 1000000`).Scan(&rep.DatabaseMB)
	if err := exerciseStore(ctx, st, log, o); err != nil {
		return rep, fmt.Errorf("store methods on the large database: %w", err)
	}
	for _, s := range log.stmts {
		rep.Statements = append(rep.Statements, explain(ctx, conn, s))
	}
	return rep, nil
}

// scaleProject is the id of generated project i (1-based).
func scaleProject(i int) string { return fmt.Sprintf("prj_scale%08d", i) }

// scaleID is the generated 32-byte id of what, as the SQL below makes it.
func scaleID(what string) id.ID {
	return id.ID(sha256.Sum256([]byte(what)))
}

func generateScale(ctx context.Context, conn *pgx.Conn, o dbscaleOptions) (map[string]float64, error) {
	p, v, f, bl := o.projects, o.versions, o.files, o.blobs
	proj := `(SELECT 'prj_scale' || lpad(i::text, 8, '0') AS id FROM generate_series(1, ` + fmt.Sprint(p) + `) i) p`
	steps := []struct{ table, sql string }{
		{"projects", fmt.Sprintf(`INSERT INTO projects (id, name, created_at, head) SELECT 'prj_scale' || lpad(i::text, 8, '0'), 'scale-' || i, now(), %d FROM generate_series(1, %d) i`, v, p)},
		{"tokens", `INSERT INTO tokens (hash, kind, project_id, created_at) SELECT encode(sha256(convert_to(p.id || '/token', 'UTF8')), 'hex'), 'sandbox', p.id, now() FROM ` + proj},
		{"versions", fmt.Sprintf(`INSERT INTO versions (project_id, number, parent, root, kind, created_at, files, bytes)
			SELECT p.id, n, n - 1, sha256(convert_to(p.id || '/v' || n, 'UTF8')), 'sync', now() - (%d - n) * interval '1 minute', %d, %d
			FROM %s, generate_series(1, %d) n`, v, f, f*1000, proj, v)},
		{"project_files", fmt.Sprintf(`INSERT INTO project_files (project_id, path, size, content_type, created_at, updated_at)
			SELECT p.id, 'd' || (k %% 100) || '/f' || k || '.txt', 1000, 'text/plain', now(), now() FROM %s, generate_series(1, %d) k`, proj, f)},
		{"packs", fmt.Sprintf(`INSERT INTO packs (project_id, id, type, size, created_at)
			SELECT p.id, sha256(convert_to(p.id || '/p' || k, 'UTF8')), 1, 100000, now() FROM %s, generate_series(1, %d) k`, proj, (bl+99)/100)},
		{"blobs", fmt.Sprintf(`INSERT INTO blobs (project_id, id, type, pack_id, "offset", length, raw_length, codec)
			SELECT p.id, sha256(convert_to(p.id || '/b' || k, 'UTF8')), 1, sha256(convert_to(p.id || '/p' || ((k - 1) / 100 + 1), 'UTF8')), ((k - 1) %% 100) * 1000, 1000, 1000, 0
			FROM %s, generate_series(1, %d) k`, proj, bl)},
		// A sandbox per project (the live one for odd projects, a destroyed
		// one for even), two state intervals each, a lease each.
		{"sandboxes", `INSERT INTO sandboxes (id, project_id, provider, state, state_since, created_at, last_activity)
			SELECT 'sbx_' || p.id, p.id, 'local', CASE WHEN right(p.id, 1)::int % 2 = 1 THEN 'started' ELSE 'destroyed' END, now(), now(), now() FROM ` + proj},
		{"sandbox_intervals", `INSERT INTO sandbox_intervals (sandbox_id, seq, project_id, state, started_at, ended_at)
			SELECT 'sbx_' || p.id, k, p.id, 'started', now() - (3 - k) * interval '1 hour', now() - (2 - k) * interval '1 hour' FROM ` + proj + `, generate_series(1, 2) k`},
		{"run_leases", `INSERT INTO run_leases (id, project_id, created_at, expires_at) SELECT 'lse_' || p.id, p.id, now(), now() - interval '1 hour' FROM ` + proj},
		{"analyze", `ANALYZE`},
	}
	took := map[string]float64{}
	for _, s := range steps {
		t0 := time.Now()
		if _, err := conn.Exec(ctx, s.sql); err != nil {
			return took, fmt.Errorf("%s: %w", s.table, err)
		}
		took[s.table] = time.Since(t0).Seconds()
		logf("dbscale: %s generated in %.1f s", s.table, took[s.table])
	}
	return took, nil
}

// exerciseStore runs the store's per-project methods (those a commit, a
// restore, a listing and the lifecycle loop use) on the middle project.
func exerciseStore(ctx context.Context, st *pgstore.Store, log *stmtLog, o dbscaleOptions) error {
	pid := scaleProject(o.projects/2 + 1)
	var have, fresh []id.ID
	for k := 1; k <= 50 && k <= o.blobs; k++ {
		have = append(have, scaleID(fmt.Sprintf("%s/b%d", pid, k*(o.blobs/50+1)%o.blobs+1)))
		fresh = append(fresh, scaleID(fmt.Sprintf("%s/new%d", pid, k)))
	}
	newPack := metastore.Pack{ProjectID: pid, ID: scaleID(pid + "/newpack"), Type: metastore.BlobData, Size: 100 * 1000, CreatedAt: time.Now()}
	var locs []metastore.BlobLocation
	for i, b := range fresh {
		locs = append(locs, metastore.BlobLocation{ID: b, Type: metastore.BlobData, PackID: newPack.ID, Offset: int64(i) * 1000, Length: 1000, RawLength: 1000})
	}
	var up []metastore.ProjectFile
	for k := range 100 {
		up = append(up, metastore.ProjectFile{Path: fmt.Sprintf("new/f%d.txt", k), Size: 10, ContentType: "text/plain"})
	}
	k7 := min(7, o.files)
	file, dir := fmt.Sprintf("d%d/f%d.txt", k7%100, k7), fmt.Sprintf("d%d/", k7%100)
	var del []string
	for k := 1; k <= 10 && k <= o.files; k++ {
		del = append(del, fmt.Sprintf("d%d/f%d.txt", k%100, k))
	}
	calls := []struct {
		name string
		fn   func() error
	}{
		{"GetProject", func() error { _, err := st.GetProject(ctx, pid); return err }},
		{"GetToken", func() error {
			_, err := st.GetToken(ctx, hex.EncodeToString(scaleID(pid+"/token").Bytes()))
			return err
		}},
		{"GetLimits", func() error { _, err := st.GetLimits(ctx, pid); return err }},
		{"HeadVersion", func() error { _, err := st.HeadVersion(ctx, pid); return err }},
		{"GetVersion", func() error { _, err := st.GetVersion(ctx, pid, int64(o.versions/2+1)); return err }},
		{"ListVersions", func() error { _, err := st.ListVersions(ctx, pid, metastore.ListOptions{Limit: 50}); return err }},
		{"ListProjectFiles", func() error {
			_, err := st.ListProjectFiles(ctx, pid, dir, metastore.ListOptions{Limit: 100})
			return err
		}},
		{"GetProjectFile", func() error { _, err := st.GetProjectFile(ctx, pid, file); return err }},
		{"MissingBlobs", func() error { _, err := st.MissingBlobs(ctx, pid, append(slices.Clone(have), fresh...)); return err }},
		{"LocateBlobs", func() error { _, err := st.LocateBlobs(ctx, pid, have); return err }},
		{"PackEpoch", func() error { _, err := st.PackEpoch(ctx, pid); return err }},
		{"AddPack", func() error { return st.AddPack(ctx, newPack, locs) }},
		{"CommitVersion", func() error {
			_, err := st.CommitVersion(ctx, metastore.Version{ProjectID: pid, Parent: int64(o.versions), Root: scaleID(pid + "/newroot"), Kind: metastore.KindSync, Files: int64(o.files), Bytes: 1},
				metastore.FileChanges{Upsert: up, Delete: del, Requires: fresh[:min(10, len(fresh))]})
			return err
		}},
		{"ListPacks", func() error { _, err := st.ListPacks(ctx, pid, metastore.ListOptions{Limit: 1000}); return err }},
		{"GetRetention", func() error { _, err := st.GetRetention(ctx, pid); return err }},
		{"StoredBytes", func() error { _, err := st.StoredBytes(ctx, pid); return err }},
		{"LiveSandbox", func() error { _, err := st.LiveSandbox(ctx, pid); return ignoreNotFound(err) }},
		{"RunLeaseUntil", func() error { _, err := st.RunLeaseUntil(ctx, pid); return err }},
		{"AgentRoutes", func() error { _, err := st.AgentRoutes(ctx, pid); return err }},
		{"TakeCommands", func() error { _, err := st.TakeCommands(ctx, "rep_scale", 16); return err }},
		{"DeleteVersions", func() error { _, err := st.DeleteVersions(ctx, pid, []int64{1}); return err }},
		{"SandboxIntervals", func() error {
			_, err := st.SandboxIntervals(ctx, pid, time.Now().Add(-14*24*time.Hour))
			return ignoreNotFound(err)
		}},
	}
	for _, c := range calls {
		log.trace(c.name)
		err := c.fn()
		log.trace("")
		if err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
	}
	return nil
}

func ignoreNotFound(err error) error {
	if err != nil && strings.Contains(err.Error(), "not found") {
		return nil
	}
	return err
}

// minRows is the size from which a sequential scan is flagged.
const minRows = 10_000

func tableRows(ctx context.Context, conn *pgx.Conn, table string) float64 {
	var n float64
	_ = conn.QueryRow(ctx, `SELECT reltuples FROM pg_class WHERE relname = $1 AND relkind = 'r'`, table).Scan(&n)
	return n
}

type planNode struct {
	NodeType string     `json:"Node Type"`
	Relation string     `json:"Relation Name"`
	Index    string     `json:"Index Name"`
	Plans    []planNode `json:"Plans"`
}

func (n planNode) walk(fn func(planNode)) {
	fn(n)
	for _, c := range n.Plans {
		c.walk(fn)
	}
}

// planOf runs EXPLAIN (options) of s in a transaction it rolls back.
func planOf(ctx context.Context, conn *pgx.Conn, options string, s tracedStmt) ([]byte, error) {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return nil, err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	var raw []byte
	err = tx.QueryRow(ctx, "EXPLAIN ("+options+") "+s.sql, s.args...).Scan(&raw)
	return raw, err
}

// explain runs EXPLAIN ANALYZE of s, or (a write that cannot run twice,
// such as the insert of a version already inserted) plain EXPLAIN. A
// sequential scan is flagged when its table holds minRows rows or more:
// on a small table it is the planner's right choice.
func explain(ctx context.Context, conn *pgx.Conn, s tracedStmt) explained {
	e := explained{Method: s.method, SQL: oneLine(s.sql)}
	raw, err := planOf(ctx, conn, "ANALYZE, FORMAT JSON", s)
	if err != nil {
		e.Method += "*" // planned, not run
		raw, err = planOf(ctx, conn, "FORMAT JSON", s)
	}
	if err != nil {
		e.PlanError = err.Error()
		return e
	}
	var plans []struct {
		Plan planNode `json:"Plan"`
		Time float64  `json:"Execution Time"`
	}
	if err := json.Unmarshal(raw, &plans); err != nil || len(plans) == 0 {
		e.PlanError = fmt.Sprintf("plan: %v", err)
		return e
	}
	e.Ms = plans[0].Time
	plans[0].Plan.walk(func(n planNode) {
		switch {
		case n.Index != "":
			e.Scans = append(e.Scans, n.NodeType+" "+n.Index)
		case n.Relation != "":
			e.Scans = append(e.Scans, n.NodeType+" "+n.Relation)
			if n.NodeType == "Seq Scan" && bigTables[n.Relation] && tableRows(ctx, conn, n.Relation) >= minRows {
				e.SeqScans = append(e.SeqScans, n.Relation)
			}
		}
	})
	return e
}

var spaces = regexp.MustCompile(`\s+`)

func oneLine(sql string) string {
	s := spaces.ReplaceAllString(strings.TrimSpace(sql), " ")
	if len(s) > 90 {
		s = s[:87] + "..."
	}
	return s
}

func printDBScale(r dbscaleReport) {
	fmt.Println()
	fmt.Printf("dbscale: PostgreSQL with %d projects × %d versions × %d files (and %d blobs) per project, %d MB\n", r.Projects, r.Versions, r.Files, r.Blobs, r.DatabaseMB)
	keys := make([]string, 0, len(r.GenerateSeconds))
	for k := range r.GenerateSeconds {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Printf("  generated %-14s %7.1f s\n", k, r.GenerateSeconds[k])
	}
	fmt.Printf("%-17s %8s  %-44s %s\n", "method", "ms", "scans", "statement")
	bad := 0
	for _, s := range r.Statements {
		scans := strings.Join(s.Scans, ", ")
		if s.PlanError != "" {
			scans = "error: " + s.PlanError
		}
		flag := ""
		if len(s.SeqScans) > 0 {
			flag, bad = " SEQ SCAN of "+strings.Join(s.SeqScans, ","), bad+1
		}
		fmt.Printf("%-17s %8.3f  %-44s %s%s\n", s.Method, s.Ms, trunc(scans, 44), s.SQL, flag)
	}
	fmt.Printf("%d statements (* planned, not run: a write that cannot run twice), %d with a sequential scan of a table of %d rows or more\n", len(r.Statements), bad, minRows)
}

func trunc(s string, n int) string {
	if len(s) > n {
		return s[:n-3] + "..."
	}
	return s
}
