package coordcli

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/sandkeep/sandkeep/internal/api"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// tokenJSON is what `token list --json` prints per token and `token revoke
// --json` prints alone (field names are a contract, see the README).
type tokenJSON struct {
	ID        string     `json:"id"`
	Project   string     `json:"project"`
	Created   time.Time  `json:"created"`
	Expires   *time.Time `json:"expires"`   // null: never
	LastUsed  *time.Time `json:"last_used"` // null: never
	Note      string     `json:"note"`
	SandboxID string     `json:"sandbox_id"`
	Revoked   bool       `json:"revoked"`
	Expired   bool       `json:"expired"`
}

func toTokenJSON(t *pb.TokenInfo) tokenJSON {
	j := tokenJSON{ID: t.GetId(), Project: t.GetProjectId(), Created: t.GetCreateTime().AsTime(), Note: t.GetNote(),
		SandboxID: t.GetSandboxId(), Revoked: t.GetRevoked(), Expired: t.GetExpired()}
	if t.GetExpireTime() != nil {
		e := t.GetExpireTime().AsTime()
		j.Expires = &e
	}
	if t.GetLastUseTime() != nil {
		u := t.GetLastUseTime().AsTime()
		j.LastUsed = &u
	}
	return j
}

func fmtOptTime(t *time.Time) string {
	if t == nil {
		return "never"
	}
	return t.Format(time.RFC3339)
}

func tokenState(t tokenJSON) string {
	switch {
	case t.Revoked:
		return "revoked"
	case t.Expired:
		return "expired"
	}
	return "valid"
}

func newToken(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Create, list and revoke sandbox tokens"}
	cmd.AddCommand(newTokenCreate(g), newTokenList(g), newTokenRevoke(g))
	return cmd
}

func newTokenCreate(g *globals) *cobra.Command {
	var project, note string
	var ttl time.Duration
	var asJSON bool
	create := &cobra.Command{
		Use:   "create --project ID [--ttl 720h] [--note TEXT] [--json]",
		Short: "Create a sandbox token scoped to one project; prints it alone on stdout",
		Long: `Create a sandbox token scoped to one project and print it alone on stdout
(it is shown this once; only its hash is stored).

The token expires after --ttl, 30 days (720h) by default; --ttl 0 makes a
token that never expires, which is not recommended: a sandbox runs untrusted
code that can read its token. See what exists with 'sandkeep token list' and
revoke one with 'sandkeep token revoke ID'.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireProject(project); err != nil {
				return err
			}
			if ttl < 0 {
				return errors.New("--ttl must not be negative")
			}
			req := &pb.CreateSandboxTokenRequest{ProjectId: project, Note: note, TtlSeconds: int64(ttl / time.Second), NoExpiry: ttl == 0}
			if ttl > 0 && ttl < time.Second {
				return errors.New("--ttl must be at least 1s (or 0 for a token that never expires)")
			}
			return adminRPC(g, cmd, callTimeout, pb.AdminServiceClient.CreateSandboxToken, req, func(resp *pb.CreateSandboxTokenResponse) error {
				if asJSON {
					out := map[string]any{"token": resp.GetToken(), "id": resp.GetTokenId(), "project": project, "expires": nil}
					if resp.GetExpireTime() != nil {
						out["expires"] = resp.GetExpireTime().AsTime()
					}
					return printJSON(g.stdout, out)
				}
				fmt.Fprintln(g.stdout, resp.GetToken())
				expires := "never expires"
				if resp.GetExpireTime() != nil {
					expires = "expires " + resp.GetExpireTime().AsTime().Format(time.RFC3339)
				}
				fmt.Fprintf(g.stderr, "token %s for project %s, %s\n", resp.GetTokenId(), project, expires)
				return nil
			})
		},
	}
	create.Flags().StringVar(&project, "project", "", "project id")
	create.Flags().StringVar(&note, "note", "", "free text kept with the token")
	create.Flags().DurationVar(&ttl, "ttl", api.DefaultTokenTTL, "token lifetime (0: never expires; not recommended)")
	create.Flags().BoolVar(&asJSON, "json", false, `print {"token", "id", "project", "expires"} as JSON`)
	return create
}

func newTokenList(g *globals) *cobra.Command {
	var project string
	var asJSON bool
	list := &cobra.Command{
		Use:   "list --project ID [--json]",
		Short: "List a project's sandbox tokens: id, created, expires, last used, note, sandbox (never the secret)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireProject(project); err != nil {
				return err
			}
			return adminRPC(g, cmd, callTimeout, pb.AdminServiceClient.ListTokens, &pb.ListTokensRequest{ProjectId: project}, func(resp *pb.ListTokensResponse) error {
				items := jsonList(resp.GetTokens(), toTokenJSON)
				return printList(g.stdout, asJSON, items, func(t tokenJSON) tokenJSON { return t },
					"ID\tSTATE\tCREATED\tEXPIRES\tLAST USED\tSANDBOX\tNOTE", func(w io.Writer, t tokenJSON) {
						fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, tokenState(t), t.Created.Format(time.RFC3339),
							fmtOptTime(t.Expires), fmtOptTime(t.LastUsed), dashIfEmpty(t.SandboxID), t.Note)
					})
			})
		},
	}
	list.Flags().StringVar(&project, "project", "", "project id")
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return list
}

func newTokenRevoke(g *globals) *cobra.Command {
	var asJSON bool
	revoke := &cobra.Command{
		Use:   "revoke ID [--json]",
		Short: "Revoke a token by its id (tok_…, from 'token list'); its agents' streams end at once",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return adminRPC(g, cmd, callTimeout, pb.AdminServiceClient.RevokeToken, &pb.RevokeTokenRequest{TokenId: args[0]}, func(resp *pb.RevokeTokenResponse) error {
				t := toTokenJSON(resp.GetToken())
				if asJSON {
					return printJSON(g.stdout, map[string]any{"token": t, "sessions_closed": resp.GetSessionsClosed()})
				}
				fmt.Fprintf(g.stdout, "revoked %s (project %s); %d agent session(s) closed\n", t.ID, t.Project, resp.GetSessionsClosed())
				return nil
			})
		},
	}
	revoke.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return revoke
}

func dashIfEmpty(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
