// Package console is the web console served by `sandkeep serve` under
// /ui/: the projects, their sandboxes, versions and files, and the actions
// on them, for an operator (admin session) or one project's owner (a
// project-scoped session, the link a platform embeds for its end user).
//
// Every page renders on the server (html/template, assets embedded, no
// external requests); a little JavaScript adds drag-and-drop upload and
// confirmations. Every action calls the same AdminService and
// LifecycleService implementations the CLI reaches over gRPC, in process:
// the console holds no logic of its own that the API lacks. It is
// coordinator-side code.
package console

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sandkeep/sandkeep/internal/urlsign"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// Prefix is the URL path the console is served under.
const Prefix = "/ui/"

const loginPath = "/ui/login"

//go:embed assets
var assets embed.FS

// Config is what a Console needs.
type Config struct {
	Admin     pb.AdminServiceServer
	Lifecycle pb.LifecycleServiceServer // nil: no lifecycle (no sandbox pages)
	// Signer signs login links (the key of the file links).
	Signer *urlsign.Signer
	// PublicURL is the HTTP listener's public base URL (no trailing slash).
	PublicURL string
	Log       *slog.Logger
	Now       func() time.Time
}

// Console serves the web console.
type Console struct {
	admin     pb.AdminServiceServer
	life      pb.LifecycleServiceServer
	signer    *urlsign.Signer
	publicURL string
	log       *slog.Logger
	now       func() time.Time
	store     *sessionStore
	tmpl      *template.Template
	mux       *http.ServeMux
	csp       string
}

// New returns the console.
func New(cfg Config) (*Console, error) {
	c := &Console{
		admin: cfg.Admin, life: cfg.Lifecycle, signer: cfg.Signer,
		publicURL: strings.TrimSuffix(cfg.PublicURL, "/"), log: cfg.Log, now: cfg.Now,
		store: newSessionStore(),
	}
	if c.log == nil {
		c.log = slog.Default()
	}
	if c.now == nil {
		c.now = time.Now
	}
	t, err := template.New("").Funcs(funcs).ParseFS(assets, "assets/*.html")
	if err != nil {
		return nil, fmt.Errorf("console: templates: %w", err)
	}
	c.tmpl = t
	// Previews load the file links, which may live on the public URL's
	// origin rather than the one the browser used.
	links := "'self'"
	if u, err := url.Parse(c.publicURL); err == nil && u.Host != "" {
		links += " " + u.Scheme + "://" + u.Host
	}
	c.csp = "default-src 'self'; img-src " + links + " data:; frame-src " + links + "; object-src " + links +
		"; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
	c.routes()
	return c, nil
}

func (c *Console) routes() {
	m := http.NewServeMux()
	static, _ := fs.Sub(assets, "assets")
	m.Handle("GET /ui/static/", http.StripPrefix("/ui/static/", staticHandler(static)))
	m.HandleFunc("GET /ui/login", c.serveLogin)
	m.HandleFunc("POST /ui/logout", c.auth(c.postLogout))
	m.HandleFunc("GET /ui/{$}", c.auth(c.overview))
	m.HandleFunc("GET /ui/projects", c.auth(c.projects))
	m.HandleFunc("GET /ui/p/{id}", c.project(c.projectPage))
	m.HandleFunc("GET /ui/p/{id}/versions", c.project(c.versionsPage))
	m.HandleFunc("GET /ui/p/{id}/diff", c.project(c.diffPage))
	m.HandleFunc("GET /ui/p/{id}/files", c.project(c.filesPage))
	m.HandleFunc("GET /ui/p/{id}/file", c.project(c.filePage))
	m.HandleFunc("GET /ui/p/{id}/raw", c.project(c.rawFile))
	m.HandleFunc("GET /ui/p/{id}/cost.svg", c.project(c.costChart))
	for name, h := range map[string]projectHandler{
		"ensure": c.postEnsure, "stop": c.postStop, "destroy": c.postDestroy, "flush": c.postFlush,
		"rollback": c.postRollback, "pin": c.postPin, "policy": c.postPolicy, "delete": c.postDeleteProject,
		"upload": c.postUpload, "remove": c.postRemove,
	} {
		m.HandleFunc("POST /ui/p/{id}/"+name, c.project(c.csrf(h)))
	}
	c.mux = m
}

// ServeHTTP implements http.Handler.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	// Pages load nothing from elsewhere and cannot be framed; file
	// previews are framed from the file links, which keep their own
	// sandboxing CSP.
	h.Set("Content-Security-Policy", c.csp)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	c.mux.ServeHTTP(w, r)
}

type sessionHandler func(w http.ResponseWriter, r *http.Request, s *session)

type projectHandler func(w http.ResponseWriter, r *http.Request, s *session, project string)

// auth runs h with the request's session, or answers 401 with how to log in.
func (c *Console) auth(h sessionHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s := c.session(r)
		if s == nil {
			c.render(w, r, http.StatusUnauthorized, nil, "message", page{Title: "Sign in",
				Message: "You are not signed in, or your session has ended. Open a console link: run `sandkeep console-url` (or ask your platform for a new link)."})
			return
		}
		h(w, r, s)
	}
}

// project runs h for the project of the path, if the session may see it;
// another project is 404, as if it did not exist.
func (c *Console) project(h projectHandler) http.HandlerFunc {
	return c.auth(func(w http.ResponseWriter, r *http.Request, s *session) {
		id := r.PathValue("id")
		if !s.maysee(id) {
			c.fail(w, r, s, status.Error(codes.NotFound, "not found"))
			return
		}
		h(w, r, s, id)
	})
}

// csrf refuses a POST without the session's CSRF token.
func (c *Console) csrf(h projectHandler) projectHandler {
	return func(w http.ResponseWriter, r *http.Request, s *session, id string) {
		if !checkCSRF(r, s) {
			c.render(w, r, http.StatusForbidden, s, "message", page{Title: "Refused",
				Message: "This request lacks the console's CSRF token. Reload the page and try again."})
			return
		}
		h(w, r, s, id)
	}
}

func (c *Console) serveLogin(w http.ResponseWriter, r *http.Request) {
	s, err := c.login(r.URL.Query())
	if err != nil {
		c.render(w, r, http.StatusForbidden, nil, "message", page{Title: "Sign in", Message: err.Error()})
		return
	}
	setSessionCookie(w, r, s)
	next := "/ui/"
	if !s.admin() {
		next = "/ui/p/" + url.PathEscape(s.project)
	}
	c.log.InfoContext(r.Context(), "console login", "project", s.project, "admin", s.admin(), "expires", s.expires)
	// Not a redirect: the cookie is SameSite=Strict, and a browser that
	// came from another site (the platform's page) would not send it on a
	// redirect of that navigation. A page of our own moves on.
	c.render(w, r, http.StatusOK, s, "login", page{Title: "Signed in", Next: next})
}

func (c *Console) postLogout(w http.ResponseWriter, r *http.Request, s *session) {
	if !checkCSRF(r, s) {
		c.render(w, r, http.StatusForbidden, s, "message", page{Title: "Refused", Message: "This request lacks the console's CSRF token."})
		return
	}
	c.logout(s)
	clearSessionCookie(w, r)
	c.render(w, r, http.StatusOK, nil, "message", page{Title: "Signed out", Message: "You are signed out. A new console link signs you in again."})
}

// page is what every template gets.
type page struct {
	Title   string
	S       *session
	Project string // the project of the page, if any
	Tab     string
	Flash   string
	Message string
	Next    string
	Data    any
}

func (c *Console) render(w http.ResponseWriter, r *http.Request, code int, s *session, name string, p page) {
	p.S = s
	if p.Flash == "" {
		p.Flash = r.URL.Query().Get("ok")
	}
	var b strings.Builder
	if err := c.tmpl.ExecuteTemplate(&b, name, p); err != nil {
		c.log.ErrorContext(r.Context(), "console: render", "page", name, "err", err)
		http.Error(w, "internal error rendering the page", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(b.String()))
}

// fail renders an API error as a page with the HTTP status of its code.
func (c *Console) fail(w http.ResponseWriter, r *http.Request, s *session, err error) {
	code := http.StatusInternalServerError
	msg := "internal error"
	if st, ok := status.FromError(err); ok {
		msg = st.Message()
		code = httpStatus(st.Code())
	} else if errors.Is(err, context.Canceled) {
		code, msg = 499, "cancelled"
	}
	if code == http.StatusInternalServerError {
		c.log.ErrorContext(r.Context(), "console", "path", r.URL.Path, "err", err)
	}
	c.render(w, r, code, s, "message", page{Title: http.StatusText(code), Message: msg})
}

func httpStatus(code codes.Code) int {
	switch code {
	case codes.OK:
		return http.StatusOK
	case codes.NotFound:
		return http.StatusNotFound
	case codes.InvalidArgument, codes.OutOfRange:
		return http.StatusBadRequest
	case codes.FailedPrecondition, codes.AlreadyExists, codes.Aborted:
		return http.StatusConflict
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	case codes.ResourceExhausted:
		return http.StatusTooManyRequests
	case codes.Unavailable:
		return http.StatusServiceUnavailable
	case codes.DeadlineExceeded:
		return http.StatusGatewayTimeout
	case codes.Unimplemented:
		return http.StatusNotImplemented
	}
	return http.StatusInternalServerError
}

// done answers a POST that worked: back to the page it came from (or to),
// with a message.
func done(w http.ResponseWriter, r *http.Request, to, msg string) {
	u := to
	if msg != "" {
		sep := "?"
		if strings.Contains(u, "?") {
			sep = "&"
		}
		u += sep + "ok=" + url.QueryEscape(msg)
	}
	http.Redirect(w, r, u, http.StatusSeeOther)
}

func staticHandler(fsys fs.FS) http.Handler {
	fileServer := http.FileServerFS(fsys)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, ".css") && !strings.HasSuffix(r.URL.Path, ".js") && !strings.HasSuffix(r.URL.Path, ".svg") {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Cache-Control", "public, max-age=3600")
		fileServer.ServeHTTP(w, r)
	})
}
