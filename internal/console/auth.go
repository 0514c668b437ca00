package console

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sandkeep/sandkeep/internal/urlsign"
)

// Login links and sessions.
//
// A login link is a signed URL of GET /ui/login (urlsign, the key of the
// file links) carrying the scope (a project id, or none for an admin), a
// random nonce and the session's lifetime. The server trades it, once, for
// a session: a random id in an HttpOnly, SameSite=Strict cookie (Secure
// under TLS) and a CSRF token every POST must carry. Sessions and spent
// nonces live in this process's memory: a restart logs every browser out
// (a new console-url logs back in), and behind several replicas a browser
// must stay on the replica that logged it in.

const (
	cookieName = "sandkeep_console"
	// DefaultLinkTTL and MaxLinkTTL bound how long a login link may be used.
	DefaultLinkTTL = 15 * time.Minute
	MaxLinkTTL     = 24 * time.Hour
	// DefaultSessionTTL and MaxSessionTTL bound how long a session lasts.
	DefaultSessionTTL = 12 * time.Hour
	MaxSessionTTL     = 7 * 24 * time.Hour
	// maxSessions bounds the sessions kept; logging in past it ends the
	// oldest.
	maxSessions = 10000
)

// ErrLinkUsed is returned for a login link used before.
var ErrLinkUsed = errors.New("this console link was used already; ask for a new one (sandkeep console-url)")

// session is one logged-in browser.
type session struct {
	id      string
	project string // "" = admin: every project
	csrf    string
	expires time.Time
	created time.Time
}

func (s *session) admin() bool { return s.project == "" }

// For the templates: the CSRF token of the forms, the scope.
func (s *session) CSRF() string  { return s.csrf }
func (s *session) IsAdmin() bool { return s.admin() }
func (s *session) Scope() string { return s.project }

// maysee reports whether the session may see and act on project.
func (s *session) maysee(project string) bool { return s.admin() || s.project == project }

type sessionStore struct {
	mu       sync.Mutex
	sessions map[string]*session
	spent    map[string]time.Time // nonce -> link expiry
}

func newSessionStore() *sessionStore {
	return &sessionStore{sessions: map[string]*session{}, spent: map[string]time.Time{}}
}

func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b)
}

// LoginURL returns a login link for project ("" = admin) usable once
// until now+ttl, that starts a session of sessionTTL.
func (c *Console) LoginURL(project string, ttl, sessionTTL time.Duration) (string, time.Time, error) {
	if ttl == 0 {
		ttl = DefaultLinkTTL
	}
	if sessionTTL == 0 {
		sessionTTL = DefaultSessionTTL
	}
	if ttl < time.Second || ttl > MaxLinkTTL {
		return "", time.Time{}, fmt.Errorf("%w: link ttl must be in [1s, %s]", errInvalid, MaxLinkTTL)
	}
	if sessionTTL < time.Minute || sessionTTL > MaxSessionTTL {
		return "", time.Time{}, fmt.Errorf("%w: session ttl must be in [1m, %s]", errInvalid, MaxSessionTTL)
	}
	exp := c.now().Add(ttl)
	q := url.Values{"n": {randomToken()}, "s": {strconv.FormatInt(int64(sessionTTL/time.Second), 10)}}
	if project != "" {
		q.Set("p", project)
	}
	return c.publicURL + loginPath + "?" + c.signer.Sign(http.MethodGet, loginPath, exp, q), exp, nil
}

var errInvalid = errors.New("invalid argument")

// login trades a login link's query for a new session.
func (c *Console) login(q url.Values) (*session, error) {
	if err := c.signer.Verify(http.MethodGet, loginPath, q, c.now()); err != nil {
		if errors.Is(err, urlsign.ErrExpired) {
			return nil, errors.New("this console link has expired; ask for a new one (sandkeep console-url)")
		}
		return nil, errors.New("this console link is not valid (altered or from another coordinator); ask for a new one (sandkeep console-url)")
	}
	nonce := q.Get("n")
	secs, err := strconv.ParseInt(q.Get("s"), 10, 64)
	if nonce == "" || err != nil || secs <= 0 || time.Duration(secs)*time.Second > MaxSessionTTL {
		return nil, errors.New("this console link is malformed")
	}
	exp, _ := strconv.ParseInt(q.Get(urlsign.ParamExpires), 10, 64)
	now := c.now()
	st := c.store
	st.mu.Lock()
	defer st.mu.Unlock()
	for n, e := range st.spent { // forget nonces whose links expired
		if !now.Before(e) {
			delete(st.spent, n)
		}
	}
	if _, used := st.spent[nonce]; used {
		return nil, ErrLinkUsed
	}
	st.spent[nonce] = time.Unix(exp, 0)
	st.gcLocked(now)
	s := &session{id: randomToken(), project: q.Get("p"), csrf: randomToken(), created: now, expires: now.Add(time.Duration(secs) * time.Second)}
	st.sessions[s.id] = s
	return s, nil
}

// gcLocked drops expired sessions and, past maxSessions, the oldest.
func (st *sessionStore) gcLocked(now time.Time) {
	var oldest *session
	for id, s := range st.sessions {
		if !now.Before(s.expires) {
			delete(st.sessions, id)
			continue
		}
		if oldest == nil || s.created.Before(oldest.created) {
			oldest = s
		}
	}
	if len(st.sessions) >= maxSessions && oldest != nil {
		delete(st.sessions, oldest.id)
	}
}

// session returns the live session of r's cookie, or nil.
func (c *Console) session(r *http.Request) *session {
	ck, err := r.Cookie(cookieName)
	if err != nil || ck.Value == "" {
		return nil
	}
	st := c.store
	st.mu.Lock()
	defer st.mu.Unlock()
	s, ok := st.sessions[ck.Value]
	if !ok {
		return nil
	}
	if !c.now().Before(s.expires) {
		delete(st.sessions, s.id)
		return nil
	}
	return s
}

func (c *Console) logout(s *session) {
	c.store.mu.Lock()
	delete(c.store.sessions, s.id)
	c.store.mu.Unlock()
}

// checkCSRF reports whether a state-changing request carries the
// session's CSRF token: header X-CSRF-Token, else (an upload, whose
// multipart body is streamed, not parsed first) query parameter csrf,
// else form field csrf.
func checkCSRF(r *http.Request, s *session) bool {
	tok := r.Header.Get("X-CSRF-Token")
	if tok == "" {
		tok = r.URL.Query().Get("csrf")
	}
	if tok == "" && !strings.HasPrefix(r.Header.Get("Content-Type"), "multipart/") {
		tok = r.PostFormValue("csrf")
	}
	return tok != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(s.csrf)) == 1
}

func setSessionCookie(w http.ResponseWriter, r *http.Request, s *session) {
	http.SetCookie(w, &http.Cookie{
		Name: cookieName, Value: s.id, Path: "/ui/", Expires: s.expires,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil,
	})
}

func clearSessionCookie(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: "/ui/", MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
}
