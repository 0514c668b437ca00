package coordcli

import (
	"context"
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

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
