package coordcli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sandkeep/sandkeep/internal/cli"
	"github.com/sandkeep/sandkeep/internal/envflag"
	"github.com/sandkeep/sandkeep/internal/server"
)

// cliError is what a command failed with, as the user reads it: the
// gRPC code (if any), a message without gRPC's "rpc error: code = …"
// wrapping, and the next step.
type cliError cli.Error

func (e cliError) text() string {
	s := e.Message
	if e.Code != "" && e.Code != codes.Unknown.String() {
		s += " (" + e.Code + ")"
	}
	if e.Hint != "" {
		s += "\n  " + e.Hint
	}
	return s
}

// explain turns err into a cliError naming where things came from (the
// coordinator address, the admin token's source) and what to do next.
func (g *globals) explain(err error) cliError {
	st, ok := status.FromError(err)
	if !ok {
		// A gRPC status wrapped in a plain error (e.g. by the retry
		// interceptor): find it.
		var se interface{ GRPCStatus() *status.Status }
		if errors.As(err, &se) {
			st, ok = se.GRPCStatus(), true
		}
	}
	if !ok {
		return cliError{Code: "", Message: err.Error()}
	}
	e := cliError{Code: st.Code().String(), Message: st.Message()}
	switch st.Code() {
	case codes.Unavailable:
		// gRPC's retries wrap the last answer: show that answer alone.
		if i := strings.LastIndex(e.Message, "desc = "); i >= 0 && strings.HasPrefix(e.Message, "max retries exhausted") {
			e.Message = e.Message[i+len("desc = "):]
		}
		if strings.Contains(e.Message, "no agent of this project is connected") {
			e.Hint = "start the project's sandbox first (sandkeep sandbox ensure --project ID), then try again."
		}
		if transportFailure(st.Message()) {
			e.Message = fmt.Sprintf("cannot reach the coordinator at %s (%s)", g.coordinator, transportCause(st.Message()))
			e.Hint = fmt.Sprintf("is `sandkeep serve` running there? The address comes from %s.", g.addrSource())
		}
	case codes.Unauthenticated:
		e.Hint = fmt.Sprintf("the coordinator at %s refused the admin token read from %s; use the admin token of that coordinator (printed on its first start, kept in its <data>/admin.token).", g.coordinator, g.tokenSource())
	case codes.PermissionDenied:
		if strings.Contains(st.Message(), "sandbox token") || strings.Contains(st.Message(), "admin") {
			e.Hint = fmt.Sprintf("the token read from %s is not an admin token; admin commands need the coordinator's admin token.", g.tokenSource())
		}
	}
	return e
}

// transportFailure: the call never reached a coordinator.
func transportFailure(msg string) bool {
	for _, s := range []string{"connection refused", "connection error", "Error while dialing", "no such host", "i/o timeout", "connection reset"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// transportCause is the innermost cause of a transport failure ("connect:
// connection refused").
func transportCause(msg string) string {
	for _, s := range []string{"connection refused", "no such host", "i/o timeout", "connection reset by peer"} {
		if strings.Contains(msg, s) {
			return s
		}
	}
	return "connection failed"
}

func (g *globals) addrSource() string {
	if g.flagChanged["coordinator"] {
		return "--coordinator"
	}
	if os.Getenv(envflag.Name("coordinator")) != "" {
		return envflag.Name("coordinator")
	}
	return "the default (--coordinator / " + envflag.Name("coordinator") + " to change it)"
}

func (g *globals) tokenSource() string {
	switch {
	case g.flagChanged["admin-token"]:
		return "--admin-token"
	case os.Getenv(envflag.Name("admin-token")) != "":
		return envflag.Name("admin-token")
	}
	return server.AdminTokenFile(g.dataDir)
}

// report prints a failed command's error on stderr: a JSON object
// {"error": {code, message, hint}} under --json, else "sandkeep: MESSAGE
// (CODE)" and the hint on the next line.
func (g *globals) report(stderr io.Writer, err error, asJSON bool) {
	e := g.explain(err)
	if asJSON {
		cli.PrintError(stderr, cli.Error(e))
		return
	}
	fmt.Fprintln(stderr, "sandkeep:", e.text())
}
