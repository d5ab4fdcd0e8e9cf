package server

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"

	"golang.org/x/time/rate"
)

// Role is what a token may do.
type Role string

// The roles, from least to most.
const (
	// RoleViewer reads pipelines, runs, the dead-letter queue and statistics.
	RoleViewer Role = "viewer"
	// RoleReviewer is a viewer who may also review and signal runs.
	RoleReviewer Role = "reviewer"
	// RoleOperator is a viewer who may also submit, redrive, replay, annotate runs and throw
	// kill switches.
	RoleOperator Role = "operator"
	// RoleAdmin may do everything.
	RoleAdmin Role = "admin"
)

// Roles lists the roles for messages.
var Roles = []Role{RoleViewer, RoleReviewer, RoleOperator, RoleAdmin}

type permission int

const (
	permRead permission = iota
	permReview
	permOperate
)

func (p permission) String() string {
	return [...]string{"read", "review", "operate"}[p]
}

func (r Role) can(p permission) bool {
	switch r {
	case RoleAdmin:
		return true
	case RoleReviewer:
		return p == permRead || p == permReview
	case RoleOperator:
		return p == permRead || p == permOperate
	case RoleViewer:
		return p == permRead
	}
	return false
}

// Valid reports whether r is a known role.
func (r Role) Valid() bool {
	for _, x := range Roles {
		if r == x {
			return true
		}
	}
	return false
}

// Token is a configured bearer token: only the SHA-256 of the secret is kept.
type Token struct {
	Name   string
	Role   Role
	SHA256 string // hex
}

// NewToken returns a random bearer token and the hex SHA-256 to put in the configuration.
func NewToken() (token, sum string, err error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", "", err
	}
	token = "pct_" + base64.RawURLEncoding.EncodeToString(b[:])
	h := sha256.Sum256([]byte(token))
	return token, hex.EncodeToString(h[:]), nil
}

type tokenEntry struct {
	name string
	role Role
	sum  [32]byte
}

// authenticator checks bearer tokens and slows down whoever keeps presenting wrong ones.
type authenticator struct {
	tokens []tokenEntry
	every  rate.Limit
	burst  int

	mu       sync.Mutex
	failures map[string]*rate.Limiter
}

func newAuthenticator(tokens []Token, perSecond float64, burst int) (*authenticator, error) {
	if perSecond <= 0 {
		perSecond = 1
	}
	if burst <= 0 {
		burst = 10
	}
	a := &authenticator{every: rate.Limit(perSecond), burst: burst, failures: map[string]*rate.Limiter{}}
	seen := map[string]bool{}
	for i, t := range tokens {
		if t.Name == "" || seen[t.Name] {
			return nil, fmt.Errorf("server.tokens[%d]: name %q is empty or used twice", i, t.Name)
		}
		seen[t.Name] = true
		if !t.Role.Valid() {
			return nil, fmt.Errorf("server.tokens[%d] (%s): unknown role %q; roles: viewer, reviewer, operator, admin", i, t.Name, t.Role)
		}
		raw, err := hex.DecodeString(strings.TrimPrefix(t.SHA256, "sha256:"))
		if err != nil || len(raw) != sha256.Size {
			return nil, fmt.Errorf("server.tokens[%d] (%s): sha256 must be 64 hex digits", i, t.Name)
		}
		e := tokenEntry{name: t.Name, role: t.Role}
		copy(e.sum[:], raw)
		a.tokens = append(a.tokens, e)
	}
	return a, nil
}

// match finds the token whose hash is the presented token's. Every configured hash is
// compared in constant time, so timing tells nothing about which one came close.
func (a *authenticator) match(presented string) (tokenEntry, bool) {
	sum := sha256.Sum256([]byte(presented))
	var found tokenEntry
	ok := 0
	for _, t := range a.tokens {
		eq := subtle.ConstantTimeCompare(sum[:], t.sum[:])
		if eq == 1 {
			found = t
		}
		ok |= eq
	}
	return found, ok == 1
}

// limiter is the failed-attempt budget of a client address.
func (a *authenticator) limiter(addr string) *rate.Limiter {
	a.mu.Lock()
	defer a.mu.Unlock()
	l := a.failures[addr]
	if l == nil {
		if len(a.failures) > 10000 {
			// Bounded memory under a spray from many addresses: start over.
			a.failures = map[string]*rate.Limiter{}
		}
		l = rate.NewLimiter(a.every, a.burst)
		a.failures[addr] = l
	}
	return l
}

func (a *authenticator) exhausted(addr string) bool {
	a.mu.Lock()
	l := a.failures[addr]
	a.mu.Unlock()
	return l != nil && l.Tokens() < 1
}

func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// authorize admits a request whose bearer token carries the permission. A missing or wrong
// token is 401, a role too low 403; neither reaches the handler, so nothing is recorded.
// An address that keeps failing gets 429 before its token is even looked at.
func (s *Server) authorize(need permission, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		addr := clientAddr(r)
		if s.auth.exhausted(addr) {
			w.Header().Set("Retry-After", "1")
			s.problem(w, r, http.StatusTooManyRequests, "too-many-failures", "too many failed authentication attempts from "+addr+"; wait and retry", nil)
			return
		}
		h := r.Header.Get("Authorization")
		presented, isBearer := strings.CutPrefix(h, "Bearer ")
		var t tokenEntry
		ok := false
		if isBearer && presented != "" {
			t, ok = s.auth.match(strings.TrimSpace(presented))
		}
		if !ok {
			s.auth.limiter(addr).Allow()
			s.metrics.authFailed.Inc()
			w.Header().Set("WWW-Authenticate", `Bearer realm="pipectl"`)
			detail := "a bearer token is required (Authorization: Bearer TOKEN)"
			if isBearer {
				detail = "the bearer token is not valid"
			}
			s.problem(w, r, http.StatusUnauthorized, "unauthorized", detail, nil)
			return
		}
		if slot, _ := r.Context().Value(keyActorSlot).(*string); slot != nil {
			*slot = t.name
		}
		if !t.role.can(need) {
			s.problem(w, r, http.StatusForbidden, "forbidden", fmt.Sprintf("token %s has role %s, which may not %s", t.name, t.role, need), nil)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), keyActor, t.name)))
	})
}
