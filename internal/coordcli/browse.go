package coordcli

import (
	"context"
	"errors"
	"fmt"
	"github.com/sandkeep/sandkeep/internal/atomicfile"
	"github.com/sandkeep/sandkeep/internal/progress"
	"io"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// Commands that browse versions without a sandbox: diff, files, history,
// get, rollback, link, version pin|unpin, retention set|show.

// fileJSON is one file in the --json output of files, diff and history.
type fileJSON struct {
	Path        string    `json:"path"`
	Type        string    `json:"type"`
	Size        int64     `json:"size"`
	Mode        string    `json:"mode"`
	Mtime       time.Time `json:"mtime"`
	Checksum    string    `json:"checksum,omitempty"`
	ContentType string    `json:"content_type,omitempty"`
	Target      string    `json:"target,omitempty"`
}

func toFileJSON(f *pb.FileInfo) *fileJSON {
	if f == nil {
		return nil
	}
	return &fileJSON{
		Path: f.GetPath(), Type: typeName(f.GetType()), Size: f.GetSize(), Mode: fmt.Sprintf("%04o", f.GetMode()),
		Mtime: time.Unix(0, f.GetMtimeNs()).UTC(), Checksum: f.GetChecksum(), ContentType: f.GetContentType(), Target: f.GetTarget(),
	}
}

func typeName(t pb.EntryType) string {
	switch t {
	case pb.EntryType_ENTRY_TYPE_FILE:
		return "file"
	case pb.EntryType_ENTRY_TYPE_DIRECTORY:
		return "dir"
	case pb.EntryType_ENTRY_TYPE_SYMLINK:
		return "symlink"
	}
	return "unknown"
}

func changeName(k pb.ChangeKind) string {
	switch k {
	case pb.ChangeKind_CHANGE_KIND_ADDED:
		return "added"
	case pb.ChangeKind_CHANGE_KIND_MODIFIED:
		return "modified"
	case pb.ChangeKind_CHANGE_KIND_DELETED:
		return "deleted"
	}
	return "unknown"
}

// display is how a path is shown in tables: directories end in "/",
// symlinks show their target.
func display(f *pb.FileInfo) string {
	switch f.GetType() {
	case pb.EntryType_ENTRY_TYPE_DIRECTORY:
		return f.GetPath() + "/"
	case pb.EntryType_ENTRY_TYPE_SYMLINK:
		return f.GetPath() + " -> " + f.GetTarget()
	}
	return f.GetPath()
}

// adminCall runs fn with an admin client and a context bounded by
// callTimeout.
func (g *globals) adminCall(cmd *cobra.Command, fn func(ctx context.Context, c pb.AdminServiceClient) error) error {
	return dialCall(g, cmd, callTimeout, pb.NewAdminServiceClient, fn)
}

func requireProject(project string) error {
	if project == "" {
		return errors.New("--project is required")
	}
	return nil
}

// parseVersionArg parses a version argument: a positive number, or "head"
// (resolved through GetProject).
func parseVersionArg(ctx context.Context, c pb.AdminServiceClient, project, s string) (int64, error) {
	if s == "head" {
		p, err := c.GetProject(ctx, &pb.GetProjectRequest{ProjectId: project})
		if err != nil {
			return 0, err
		}
		return p.GetProject().GetHead(), nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("version %q: want a version number (0 for the empty tree) or \"head\"", s)
	}
	return v, nil
}

func newDiff(g *globals) *cobra.Command {
	var project string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "diff --project ID FROM TO",
		Short: "List the paths added, modified and deleted from version FROM to version TO, with sizes",
		Long: `List the paths that differ between two versions, in path order: added, modified
and deleted files and symlinks, and added or deleted directories (shown with a
trailing /). FROM and TO are version numbers, "head", or 0 for the empty tree.

Output: one line per path, CHANGE SIZE PATH, where SIZE is "old -> new" for a
modification. --json prints an array of {change, path, type, size, old_size,
new_size, old, new}.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireProject(project); err != nil {
				return err
			}
			return g.adminCall(cmd, func(ctx context.Context, c pb.AdminServiceClient) error {
				from, err := parseVersionArg(ctx, c, project, args[0])
				if err != nil {
					return err
				}
				to, err := parseVersionArg(ctx, c, project, args[1])
				if err != nil {
					return err
				}
				type changeJSON struct {
					Change  string    `json:"change"`
					Path    string    `json:"path"`
					Type    string    `json:"type"`
					Size    int64     `json:"size"`
					OldSize *int64    `json:"old_size,omitempty"`
					NewSize *int64    `json:"new_size,omitempty"`
					Old     *fileJSON `json:"old,omitempty"`
					New     *fileJSON `json:"new,omitempty"`
				}
				var out []changeJSON
				tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				token := ""
				for {
					resp, err := c.DiffVersions(ctx, &pb.DiffVersionsRequest{ProjectId: project, FromVersion: from, ToVersion: to, PageSize: 10000, PageToken: token})
					if err != nil {
						return err
					}
					for _, ch := range resp.GetChanges() {
						old, nw := ch.GetOldFile(), ch.GetNewFile()
						cur := nw
						if cur == nil {
							cur = old
						}
						if asJSON {
							j := changeJSON{Change: changeName(ch.GetKind()), Path: ch.GetPath(), Type: typeName(cur.GetType()), Size: cur.GetSize(), Old: toFileJSON(old), New: toFileJSON(nw)}
							if old != nil {
								j.OldSize = ptr(old.GetSize())
							}
							if nw != nil {
								j.NewSize = ptr(nw.GetSize())
							}
							out = append(out, j)
							continue
						}
						size := strconv.FormatInt(cur.GetSize(), 10)
						if old != nil && nw != nil {
							size = fmt.Sprintf("%d -> %d", old.GetSize(), nw.GetSize())
						}
						fmt.Fprintf(tw, "%s\t%s\t%s\n", changeName(ch.GetKind()), size, display(cur))
					}
					if token = resp.GetNextPageToken(); token == "" {
						break
					}
				}
				if asJSON {
					if out == nil {
						out = []changeJSON{}
					}
					return printJSON(g.stdout, out)
				}
				return tw.Flush()
			})
		},
	}
	cmd.Flags().StringVar(&project, "project", "", "project id")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func ptr[T any](v T) *T { return &v }

func newFiles(g *globals) *cobra.Command {
	var project, prefix string
	var version int64
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "files --project ID [--version N] [--prefix DIR]",
		Short: "List the files of a version (default: the head), with sizes",
		Long: `List the files and symlinks of a version (default: the head) in path order,
optionally only those under the directory --prefix. Served from the bucket: no
sandbox is needed.

Output: SIZE MODIFIED PATH (symlinks as "PATH -> TARGET"). --json prints an
array of {path, type, size, mode, mtime, checksum, content_type, target}.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireProject(project); err != nil {
				return err
			}
			if version < 0 {
				return errors.New("--version must not be negative")
			}
			return g.adminCall(cmd, func(ctx context.Context, c pb.AdminServiceClient) error {
				var out []*fileJSON
				tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				if !asJSON {
					fmt.Fprintln(tw, "SIZE\tMODIFIED\tPATH")
				}
				token := ""
				for {
					resp, err := c.ListFiles(ctx, &pb.ListFilesRequest{ProjectId: project, Version: version, Prefix: prefix, PageSize: 10000, PageToken: token})
					if err != nil {
						return err
					}
					for _, f := range resp.GetFiles() {
						if asJSON {
							out = append(out, toFileJSON(f))
							continue
						}
						fmt.Fprintf(tw, "%d\t%s\t%s\n", f.GetSize(), time.Unix(0, f.GetMtimeNs()).UTC().Format(time.RFC3339), display(f))
					}
					if token = resp.GetNextPageToken(); token == "" {
						break
					}
				}
				if asJSON {
					if out == nil {
						out = []*fileJSON{}
					}
					return printJSON(g.stdout, out)
				}
				return tw.Flush()
			})
		},
	}
	cmd.Flags().StringVar(&project, "project", "", "project id")
	cmd.Flags().Int64Var(&version, "version", 0, "version number (default: the head)")
	cmd.Flags().StringVar(&prefix, "prefix", "", "list only under this directory")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newHistory(g *globals) *cobra.Command {
	var project string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "history --project ID PATH",
		Short: "List the versions in which PATH changed, newest first",
		Long: `List the versions in which PATH changed (was added, modified or deleted),
newest first. For a directory: the versions in which anything below it changed.

Output: VERSION TIME KIND CHANGE SIZE. --json prints an array of {version, time,
kind, change, size, checksum}.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireProject(project); err != nil {
				return err
			}
			return g.adminCall(cmd, func(ctx context.Context, c pb.AdminServiceClient) error {
				type revJSON struct {
					Version  int64     `json:"version"`
					Time     time.Time `json:"time"`
					Kind     string    `json:"kind"`
					Change   string    `json:"change"`
					Size     int64     `json:"size"`
					Checksum string    `json:"checksum,omitempty"`
				}
				out := []revJSON{}
				tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				if !asJSON {
					fmt.Fprintln(tw, "VERSION\tTIME\tKIND\tCHANGE\tSIZE")
				}
				revisions := 0
				token := ""
				for {
					resp, err := c.ListFileHistory(ctx, &pb.ListFileHistoryRequest{ProjectId: project, Path: args[0], PageSize: 1000, PageToken: token})
					if err != nil {
						return err
					}
					for _, r := range resp.GetRevisions() {
						revisions++
						v := r.GetVersion()
						j := revJSON{Version: v.GetNumber(), Time: v.GetCreateTime().AsTime(), Kind: kindName(v.GetKind()), Change: changeName(r.GetKind()), Size: r.GetFile().GetSize(), Checksum: r.GetFile().GetChecksum()}
						if asJSON {
							out = append(out, j)
							continue
						}
						size := strconv.FormatInt(j.Size, 10)
						if r.GetFile() == nil {
							size = "-"
						}
						fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", j.Version, j.Time.Format(time.RFC3339), j.Kind, j.Change, size)
					}
					if token = resp.GetNextPageToken(); token == "" {
						break
					}
				}
				if revisions == 0 {
					// Not an error (a script may ask about any path), but
					// say it, so an empty table is not a mystery.
					fmt.Fprintf(g.stderr, "sandkeep: no version of project %s holds %s: it never existed there (paths are relative to the workspace, e.g. src/main.go)\n", project, args[0])
				}
				if asJSON {
					return printJSON(g.stdout, out)
				}
				return tw.Flush()
			})
		},
	}
	cmd.Flags().StringVar(&project, "project", "", "project id")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newGet(g *globals) *cobra.Command {
	var project, output string
	var version int64
	var quiet bool
	cmd := &cobra.Command{
		Use:   "get --project ID PATH [--version N] [-o FILE]",
		Short: "Write a file of a version (default: the head) to stdout or FILE",
		Long: `Write the content of PATH in a version (default: the head) to stdout, or to
FILE with -o. The content is streamed from the bucket, every chunk verified
against its hash; with -o the file appears only complete and verified (written
beside FILE, then renamed), and a failure leaves no partial FILE.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireProject(project); err != nil {
				return err
			}
			if version < 0 {
				return errors.New("--version must not be negative")
			}
			// No overall deadline: a large file takes as long as it takes;
			// the stream fails if the coordinator goes away.
			return dialCall(g, cmd, 0, pb.NewAdminServiceClient, func(ctx context.Context, c pb.AdminServiceClient) error {
				stream, err := c.ReadFile(ctx, &pb.ReadFileRequest{ProjectId: project, Path: args[0], Version: version})
				if err != nil {
					return err
				}
				if output == "" || output == "-" {
					_, err := copyStream(g.stdout, stream)
					return err
				}
				// -o: progress on stderr (stdout may be the data).
				var got, size atomic.Int64
				size.Store(-1)
				stop := func() {}
				if !quiet {
					stop = progress.Start(g.stderr, func(el time.Duration) string {
						return progress.Line("get "+args[0], 0, 1, got.Load(), max(size.Load(), 0), el)
					})
				}
				defer stop()
				return atomicfile.Write(output, 0o644, func(w io.Writer) error {
					_, err := copyStream(&countingWriter{w: w, n: &got}, streamSize(stream, &size))
					return err
				})
			})
		},
	}
	cmd.Flags().StringVar(&project, "project", "", "project id")
	cmd.Flags().Int64Var(&version, "version", 0, "version number (default: the head)")
	cmd.Flags().StringVarP(&output, "output", "o", "", "write to this file instead of stdout")
	cmd.Flags().BoolVar(&quiet, "quiet", false, "with -o: no progress lines on stderr")
	return cmd
}

// countingWriter counts what goes through it (for progress).
type countingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	k, err := c.w.Write(p)
	c.n.Add(int64(k))
	return k, err
}

// sizeStream notes the announced file size (for progress) as the stream
// passes.
type sizeStream struct {
	grpc.ServerStreamingClient[pb.ReadFileResponse]
	size *atomic.Int64
}

func streamSize(s grpc.ServerStreamingClient[pb.ReadFileResponse], size *atomic.Int64) grpc.ServerStreamingClient[pb.ReadFileResponse] {
	return &sizeStream{s, size}
}

func (s *sizeStream) Recv() (*pb.ReadFileResponse, error) {
	m, err := s.ServerStreamingClient.Recv()
	if f := m.GetFile(); err == nil && f != nil {
		s.size.Store(f.GetSize())
	}
	return m, err
}

// copyStream writes a ReadFile stream to w and checks that exactly the
// announced size arrived.
func copyStream(w io.Writer, stream grpc.ServerStreamingClient[pb.ReadFileResponse]) (int64, error) {
	var n, want int64 = 0, -1
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return n, err
		}
		if f := msg.GetFile(); f != nil {
			want = f.GetSize()
		}
		if len(msg.GetData()) > 0 {
			k, err := w.Write(msg.GetData())
			n += int64(k)
			if err != nil {
				return n, err
			}
		}
	}
	if want >= 0 && n != want {
		return n, fmt.Errorf("received %d bytes of a %d-byte file", n, want)
	}
	return n, nil
}

func newRollback(g *globals) *cobra.Command {
	var project string
	var version int64
	var wait time.Duration
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "rollback --project ID --version N",
		Short: "Make version N's tree the new head; prints the new version number",
		Long: `Commit a new head version (kind rollback) whose tree is version N's: nothing is
copied and every version stays in the history. If an agent of the project is
connected it brings its workspace to the new head (files written after version
N are removed, older contents come back); changes on disk that it had not
committed yet are kept and committed on top. Prints the new version number
alone on stdout; what the agent did goes to stderr.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireProject(project); err != nil {
				return err
			}
			if version <= 0 {
				return errors.New("--version is required (a positive version number)")
			}
			req := &pb.RollbackProjectRequest{ProjectId: project, Version: version, AgentTimeout: durationpb.New(wait)}
			return adminRPC(g, cmd, wait+30*time.Second, pb.AdminServiceClient.RollbackProject, req, func(resp *pb.RollbackProjectResponse) error {
				if asJSON {
					return printJSON(g.stdout, map[string]any{"version": resp.GetVersion().GetNumber(), "to": version,
						"agent_connected": resp.GetAgentConnected(), "agent_applied": resp.GetAgentApplied(),
						"agent_version": resp.GetAgentVersion(), "agent_error": resp.GetAgentError()})
				}
				fmt.Fprintln(g.stdout, resp.GetVersion().GetNumber())
				switch {
				case resp.GetAgentApplied():
					fmt.Fprintf(g.stderr, "the running agent brought its workspace to version %d\n", resp.GetAgentVersion())
				case resp.GetAgentConnected():
					fmt.Fprintf(g.stderr, "warning: the running agent has not applied the rollback yet (%s); it will on its next sync\n", resp.GetAgentError())
				default:
					fmt.Fprintln(g.stderr, "no agent is connected; the next one to start restores the new head")
				}
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&project, "project", "", "project id")
	cmd.Flags().Int64Var(&version, "version", 0, "the version to roll back to")
	cmd.Flags().DurationVar(&wait, "wait", time.Minute, "how long to wait for a running agent to apply it")
	cmd.Flags().BoolVar(&asJSON, "json", false, `print {"version", "to", "agent_connected", "agent_applied", "agent_version", "agent_error"}`)
	return cmd
}

func newLink(g *globals) *cobra.Command {
	var linkJSON bool
	var project string
	var version int64
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "link --project ID PATH [--version N] [--ttl 24h]",
		Short: "Print a signed URL serving a file of a version (default: the head's)",
		Long: `Print a signed URL of the coordinator's HTTP listener that serves PATH as it is
in version N (default: the head now; the link stays on that version) until it
expires, whether or not a sandbox exists. The URL alone goes to stdout.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireProject(project); err != nil {
				return err
			}
			if version < 0 {
				return errors.New("--version must not be negative")
			}
			return g.adminCall(cmd, func(ctx context.Context, c pb.AdminServiceClient) error {
				resp, err := c.CreateFileLink(ctx, &pb.CreateFileLinkRequest{ProjectId: project, Path: args[0], Version: version, Ttl: durationpb.New(ttl)})
				if err != nil {
					return err
				}
				if linkJSON {
					return printJSON(g.stdout, map[string]any{"url": resp.GetUrl(), "version": resp.GetVersion(), "expires": tsOrNil(resp.GetExpireTime())})
				}
				fmt.Fprintln(g.stdout, resp.GetUrl())
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&project, "project", "", "project id")
	cmd.Flags().Int64Var(&version, "version", 0, "version number (default: the head)")
	cmd.Flags().DurationVar(&ttl, "ttl", 24*time.Hour, "lifetime of the link")
	cmd.Flags().BoolVar(&linkJSON, "json", false, `print {"url", "version", "expires"}`)
	return cmd
}

func newVersion(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version [pin|unpin]",
		Short: "Print sandkeep's version; pin or unpin a project version",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if asJSON {
				return printJSON(g.stdout, map[string]string{"version": Version, "go": runtime.Version()})
			}
			fmt.Fprintf(g.stdout, "sandkeep %s (%s)\n", Version, runtime.Version())
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, `print {"version", "go"}`)
	for _, pin := range []bool{true, false} {
		var project string
		var version int64
		var pinJSON bool
		name := "pin"
		short := "Pin a version: garbage collection never removes it"
		if !pin {
			name, short = "unpin", "Unpin a version: retention applies to it again"
		}
		sub := &cobra.Command{
			Use:   name + " --project ID --version N",
			Short: short,
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				if err := requireProject(project); err != nil {
					return err
				}
				if version <= 0 {
					return errors.New("--version is required (a positive version number)")
				}
				return g.adminCall(cmd, func(ctx context.Context, c pb.AdminServiceClient) error {
					resp, err := c.PinVersion(ctx, &pb.PinVersionRequest{ProjectId: project, Version: version, Pinned: pin})
					if err != nil {
						return err
					}
					if pinJSON {
						return printJSON(g.stdout, toVersionJSON(resp.GetVersion()))
					}
					state := "pinned"
					if !resp.GetVersion().GetPinned() {
						state = "unpinned"
					}
					fmt.Fprintf(g.stdout, "version %d %s\n", resp.GetVersion().GetNumber(), state)
					return nil
				})
			},
		}
		sub.Flags().StringVar(&project, "project", "", "project id")
		sub.Flags().Int64Var(&version, "version", 0, "version number")
		sub.Flags().BoolVar(&pinJSON, "json", false, "print the version as JSON (as in versions --json)")
		cmd.AddCommand(sub)
	}
	return cmd
}

func newRetention(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "retention", Short: "Show or change a project's retention policy"}
	printPolicy := func(p *pb.RetentionPolicy, asJSON bool) error {
		within := p.GetKeepWithin().AsDuration()
		days := strconv.FormatFloat(within.Hours()/24, 'f', -1, 64)
		if asJSON {
			return printJSON(g.stdout, map[string]any{"keep_last": p.GetKeepLast(), "keep_days": within.Hours() / 24, "keep_within_seconds": int64(within / time.Second)})
		}
		fmt.Fprintf(g.stdout, "keep-last %d\nkeep-days %s\n", p.GetKeepLast(), days)
		return nil
	}
	var project string
	var asJSON bool
	show := &cobra.Command{
		Use:   "show --project ID",
		Short: "Show the retention policy in effect",
		Long: `Show the retention policy in effect: garbage collection keeps the newest
keep-last versions and every version younger than keep-days, plus pinned
versions and the head. The default is keep-last 50, keep-days 30.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireProject(project); err != nil {
				return err
			}
			return g.adminCall(cmd, func(ctx context.Context, c pb.AdminServiceClient) error {
				resp, err := c.GetRetention(ctx, &pb.GetRetentionRequest{ProjectId: project})
				if err != nil {
					return err
				}
				return printPolicy(resp.GetPolicy(), asJSON)
			})
		},
	}
	show.Flags().StringVar(&project, "project", "", "project id")
	show.Flags().BoolVar(&asJSON, "json", false, "print JSON {keep_last, keep_days, keep_within_seconds}")
	var setProject string
	var keepLast int64
	var keepDays float64
	var setJSON bool
	set := &cobra.Command{
		Use:   "set --project ID [--keep-last N] [--keep-days D]",
		Short: "Change the retention policy (only the flags given); prints the policy in effect",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireProject(setProject); err != nil {
				return err
			}
			p := &pb.RetentionPolicy{}
			if cmd.Flags().Changed("keep-last") {
				if keepLast < 0 {
					return errors.New("--keep-last must not be negative")
				}
				p.KeepLast = ptr(keepLast)
			}
			if cmd.Flags().Changed("keep-days") {
				if keepDays < 0 || keepDays > 100*365 {
					return errors.New("--keep-days must be in [0, 36500]")
				}
				p.KeepWithin = durationpb.New(time.Duration(keepDays * 24 * float64(time.Hour)))
			}
			if p.KeepLast == nil && p.KeepWithin == nil {
				return errors.New("nothing to set: give --keep-last and/or --keep-days")
			}
			return g.adminCall(cmd, func(ctx context.Context, c pb.AdminServiceClient) error {
				resp, err := c.SetRetention(ctx, &pb.SetRetentionRequest{ProjectId: setProject, Policy: p})
				if err != nil {
					return err
				}
				return printPolicy(resp.GetPolicy(), setJSON)
			})
		},
	}
	set.Flags().StringVar(&setProject, "project", "", "project id")
	set.Flags().Int64Var(&keepLast, "keep-last", 0, "keep the newest N versions (0: none by count)")
	set.Flags().Float64Var(&keepDays, "keep-days", 0, "keep versions younger than D days (0: none by age)")
	set.Flags().BoolVar(&setJSON, "json", false, "print JSON {keep_last, keep_days, keep_within_seconds}")
	cmd.AddCommand(show, set)
	return cmd
}

// newGC is `sandkeep gc`.
func newGC(g *globals) *cobra.Command {
	var project string
	var dryRun, asJSON, quiet bool
	cmd := &cobra.Command{
		Use:   "gc [--project ID] [--dry-run]",
		Short: "Apply retention and delete what no kept version references; prints what was freed",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := &pb.CollectGarbageRequest{ProjectId: project, DryRun: dryRun}
			if !quiet {
				what := "every project"
				if project != "" {
					what = project
				}
				stop := progress.Start(g.stderr, func(el time.Duration) string {
					return fmt.Sprintf("gc: collecting %s, %s", what, el.Truncate(100*time.Millisecond))
				})
				defer stop()
			}
			return adminRPC(g, cmd, 6*time.Hour, pb.AdminServiceClient.CollectGarbage, req, func(resp *pb.CollectGarbageResponse) error {
				if asJSON {
					if err := printJSON(g.stdout, map[string]any{"dry_run": dryRun, "projects": resp.GetProjects(), "versions_deleted": resp.GetVersionsDeleted(),
						"packs_deleted": resp.GetPacksDeleted(), "bytes_freed": resp.GetBytesFreed(), "packs_condemned": resp.GetPacksCondemned(),
						"bytes_condemned": resp.GetBytesCondemned(), "bytes_before": resp.GetBytesBefore(), "bytes_after": resp.GetBytesAfter(),
						"failed": nonNilStrings(resp.GetFailed()), "report": strings.TrimRight(resp.GetReport(), "\n")}); err != nil {
						return err
					}
				} else {
					fmt.Fprint(g.stdout, strings.TrimRight(resp.GetReport(), "\n")+"\n")
				}
				if len(resp.GetFailed()) > 0 {
					return fmt.Errorf("gc failed for %d project(s): %s", len(resp.GetFailed()), strings.Join(resp.GetFailed(), "; "))
				}
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&project, "project", "", "only this project (default: every project)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "report what would be freed; delete nothing")
	cmd.Flags().BoolVar(&quiet, "quiet", false, "no progress lines on stderr")
	cmd.Flags().BoolVar(&asJSON, "json", false, `print {"dry_run", "projects", "versions_deleted", "packs_deleted", "bytes_freed", "packs_condemned", "bytes_condemned", "bytes_before", "bytes_after", "failed", "report"}`)
	return cmd
}

func nonNilStrings(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// newProjectDelete is `sandkeep project delete`.
func newProjectDelete(g *globals) *cobra.Command {
	var asJSON, quiet bool
	cmd := &cobra.Command{
		Use:   "delete ID",
		Short: "Delete a project: every object and row, its tokens and links; prints the bytes freed",
		Long: `Delete a project: every object under its bucket prefix, every row, its sandbox
tokens (revoked at once, as are its file links). Prints the number of bytes
freed alone on stdout, and the number of objects on stderr.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &pb.DeleteProjectRequest{ProjectId: args[0]}
			if !quiet {
				stop := progress.Start(g.stderr, func(el time.Duration) string {
					return fmt.Sprintf("deleting project %s (every object under its prefix, then its rows), %s", args[0], el.Truncate(100*time.Millisecond))
				})
				defer stop()
			}
			return adminRPC(g, cmd, time.Hour, pb.AdminServiceClient.DeleteProject, req, func(resp *pb.DeleteProjectResponse) error {
				if asJSON {
					return printJSON(g.stdout, map[string]any{"project": args[0], "objects_deleted": resp.GetObjectsDeleted(), "bytes_freed": resp.GetBytesFreed()})
				}
				fmt.Fprintln(g.stdout, resp.GetBytesFreed())
				fmt.Fprintf(g.stderr, "deleted project %s: %d objects, %d bytes freed\n", args[0], resp.GetObjectsDeleted(), resp.GetBytesFreed())
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, `print {"project", "objects_deleted", "bytes_freed"}`)
	cmd.Flags().BoolVar(&quiet, "quiet", false, "no progress lines on stderr")
	return cmd
}
