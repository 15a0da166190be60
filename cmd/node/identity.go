package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"net/http"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/ratethrottle/ratethrottle/pkg/identity"
	"github.com/ratethrottle/ratethrottle/pkg/wshandler"
)

// IdentityConfig configures who a connection is: a user with a verified
// JWT, else its address.
type IdentityConfig struct {
	// SecretFile holds the HMAC secret of HS256/384/512 tokens.
	SecretFile string
	// PublicKeyFile holds PEM public keys (RSA, ECDSA) of RS/PS/ES tokens.
	PublicKeyFile string
	// JWKSFile holds a JSON Web Key Set.
	JWKSFile string
	// TierClaim is the claim that names the user's tier.
	TierClaim string
	// DemoTokens serves /demo-token, signed with a secret made at start-up;
	// for development, refused unless the public listener is loopback.
	DemoTokens bool
}

// Enabled reports whether connections are resolved from tokens at all.
func (c IdentityConfig) Enabled() bool {
	return c.SecretFile != "" || c.PublicKeyFile != "" || c.JWKSFile != "" || c.DemoTokens
}

// validate checks the identity settings: readable files, and demo tokens
// only on a loopback listener and without a configured secret.
func (c *Config) validateIdentity(bad func(key, value, reason string) error) error {
	id := c.Identity
	for _, f := range []struct{ key, path string }{
		{"identity.jwt_secret_file", id.SecretFile}, {"identity.jwt_public_key_file", id.PublicKeyFile}, {"identity.jwks_file", id.JWKSFile},
	} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			return bad(f.key, f.path, "cannot read the file")
		}
	}
	if !id.DemoTokens {
		return nil
	}
	if id.SecretFile != "" {
		return bad("identity.demo_tokens", "true", "demo tokens sign with a secret of their own; leave identity.jwt_secret_file empty")
	}
	if !loopbackListen(c.Listen) {
		return bad("identity.demo_tokens", "true", fmt.Sprintf("demo tokens let anyone sign in as anyone: the public listener %q must be a loopback address (127.0.0.1:PORT or [::1]:PORT)", c.Listen))
	}
	return nil
}

// loopbackListen reports whether addr listens on a loopback address only.
func loopbackListen(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// newResolver returns the node's JWT resolver, or nil when identity is
// off. With demo tokens it also returns the random secret they are signed
// with.
func (c *Config) newResolver(address func(*http.Request) string) (*identity.JWT, []byte, error) {
	id := c.Identity
	if !id.Enabled() {
		return nil, nil, nil
	}
	jc := identity.JWTConfig{JWKSFile: id.JWKSFile, TierClaim: id.TierClaim, Address: address}
	var demo []byte
	switch {
	case id.DemoTokens:
		demo = make([]byte, 32)
		if _, err := rand.Read(demo); err != nil {
			return nil, nil, err
		}
		jc.HMACSecret = demo
	case id.SecretFile != "":
		b, err := os.ReadFile(id.SecretFile)
		if err != nil {
			return nil, nil, configError("identity.jwt_secret_file", "", id.SecretFile, err.Error())
		}
		jc.HMACSecret = []byte(strings.TrimRight(string(b), "\r\n"))
	}
	if id.PublicKeyFile != "" {
		b, err := os.ReadFile(id.PublicKeyFile)
		if err == nil {
			jc.PublicKeys, err = identity.ParsePublicKeys(b)
		}
		if err != nil {
			return nil, nil, configError("identity.jwt_public_key_file", "", id.PublicKeyFile, err.Error())
		}
	}
	j, err := identity.NewJWT(jc)
	if err != nil {
		key, val := "identity", ""
		switch {
		case id.SecretFile != "" && strings.Contains(err.Error(), "HMACSecret"):
			key, val = "identity.jwt_secret_file", id.SecretFile
		case id.JWKSFile != "":
			key, val = "identity.jwks_file", id.JWKSFile
		}
		return nil, nil, configError(key, "", val, err.Error())
	}
	return j, demo, nil
}

// identityKey is the request context key of a connection's identity, and
// refusedKey that of the error of a refused token.
type (
	identityKey struct{}
	refusedKey  struct{}
)

// userKeyPrefix starts the client key of a signed-in user, which no
// address key starts with.
const userKeyPrefix = "user:"

// clientKey is the handler's KeyFunc when identity is on: "user:<sub>" for
// a signed-in connection, its address key otherwise. A refused token
// (resolveIdentity) is an error wrapping wshandler.ErrUnauthenticated, which
// the handler answers with 401 and a Bearer challenge, or, with
// reject_with_close, an unauthenticated error frame and a 1008 close.
func clientKey(address wshandler.KeyFunc) wshandler.KeyFunc {
	return func(r *http.Request) (string, error) {
		if err, ok := r.Context().Value(refusedKey{}).(error); ok {
			return "", fmt.Errorf("%w: %w", wshandler.ErrUnauthenticated, err)
		}
		if id, ok := r.Context().Value(identityKey{}).(identity.Identity); ok && !id.Anonymous() {
			return userKeyPrefix + id.User, nil
		}
		return address(r)
	}
}

// connMetadata records a signed-in connection's user and tier with it.
func connMetadata(r *http.Request) map[string]string {
	id, ok := r.Context().Value(identityKey{}).(identity.Identity)
	if !ok || id.Anonymous() {
		return nil
	}
	m := map[string]string{"user": id.User}
	if id.Tier != "" {
		m["tier"] = id.Tier
	}
	return m
}

// resolveIdentity resolves the identity of a WebSocket handshake once, into
// its context, for clientKey and connMetadata; a refused token's error
// goes there too, and clientKey refuses the request with it.
func (n *node) resolveIdentity(r *http.Request) *http.Request {
	if n.ident == nil {
		return r
	}
	id, err := n.ident.Resolve(r)
	if err != nil {
		return r.WithContext(context.WithValue(r.Context(), refusedKey{}, err))
	}
	return r.WithContext(context.WithValue(r.Context(), identityKey{}, id))
}

// demoName is what a demo token's user and tier may be.
var demoName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)

// demoTokenTTL is how long a demo token is valid.
const demoTokenTTL = time.Hour

// serveDemoToken issues a demo token: GET /demo-token?user=NAME&tier=TIER
// answers {"token", "user", "tier", "expires", "client", "limits"} with the
// limits the tier gets under the policy in force; GET /demo-token alone
// answers {"demo": true, "tiers": [...]}. Development only (see
// IdentityConfig.DemoTokens).
func (n *node) serveDemoToken(w http.ResponseWriter, r *http.Request) {
	if r.URL.RawQuery == "" {
		// The chat page asks whether demo tokens are served, and for which tiers.
		writeJSON(w, http.StatusOK, map[string]any{"demo": true, "tiers": n.tierNames()})
		return
	}
	q := r.URL.Query()
	user, tier := q.Get("user"), q.Get("tier")
	if !demoName.MatchString(user) {
		writeError(w, http.StatusBadRequest, "user: 1 to 32 letters, digits, '-' or '_'")
		return
	}
	if tier != "" && !demoName.MatchString(tier) {
		writeError(w, http.StatusBadRequest, "tier: 1 to 32 letters, digits, '-' or '_'")
		return
	}
	exp := time.Now().Add(demoTokenTTL)
	claims := jwt.MapClaims{"sub": user, "exp": exp.Unix(), "iat": time.Now().Unix()}
	if tier != "" {
		claims[n.tierClaim()] = tier
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(n.demoSecret)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "cannot sign the token")
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, map[string]any{
		"token": tok, "user": user, "tier": tier, "expires": exp.UTC().Format(time.RFC3339),
		"client": userKeyPrefix + user, "limits": limitsJSON(n.tierLimits(tier)),
	})
}

func (n *node) tierClaim() string {
	if c := n.cfg.Identity.TierClaim; c != "" {
		return c
	}
	return identity.DefaultTierClaim
}

// tierNames returns the tiers of the policy in force.
func (n *node) tierNames() []string {
	if s := n.stack.Load(); s != nil {
		return s.policy.Current().Table.TierNames()
	}
	return nil
}
