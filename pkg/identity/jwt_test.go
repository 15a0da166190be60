package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"

	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

var t0 = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

var secret = []byte("0123456789abcdef0123456789abcdef")

type testKeys struct {
	rsa, rsa2 *rsa.PrivateKey
	ec        *ecdsa.PrivateKey
}

var keysOnce = sync.OnceValue(func() testKeys {
	r1, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	r2, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	return testKeys{rsa: r1, rsa2: r2, ec: ec}
})

func claims(sub string, mod func(jwt.MapClaims)) jwt.MapClaims {
	c := jwt.MapClaims{"sub": sub, "exp": t0.Add(time.Hour).Unix(), "iat": t0.Unix()}
	if mod != nil {
		mod(c)
	}
	return c
}

func sign(t *testing.T, m jwt.SigningMethod, key any, c jwt.MapClaims, kid string) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	require.NoError(t, err)
	return s
}

func newJWT(t *testing.T, cfg JWTConfig) *JWT {
	t.Helper()
	cfg.Now = func() time.Time { return t0 }
	j, err := NewJWT(cfg)
	require.NoError(t, err)
	return j
}

func request(header, query string) *http.Request {
	u := "/ws"
	if query != "" {
		u += "?token=" + query
	}
	r := httptest.NewRequest(http.MethodGet, u, nil)
	r.RemoteAddr = "203.0.113.9:4567"
	if header != "" {
		r.Header.Set("Authorization", header)
	}
	return r
}

func TestHMAC(t *testing.T) {
	j := newJWT(t, JWTConfig{HMACSecret: secret, AttributeClaims: []string{"org", "seats"}})
	tok := sign(t, jwt.SigningMethodHS256, secret, claims("ada", func(c jwt.MapClaims) {
		c["tier"] = "pro"
		c["org"] = "acme"
		c["seats"] = 12
	}), "")

	id, err := j.Resolve(request("Bearer "+tok, ""))
	require.NoError(t, err)
	require.Equal(t, Identity{User: "ada", Tier: "pro", Address: "203.0.113.9",
		Attributes: map[string]string{"org": "acme", "seats": "12"}}, id)
	require.False(t, id.Anonymous())

	// From the query parameter, as a browser sends it.
	id, err = j.Resolve(request("", tok))
	require.NoError(t, err)
	require.Equal(t, "ada", id.User)

	// HS512 with the same secret.
	id, err = j.Resolve(request("bearer "+sign(t, jwt.SigningMethodHS512, secret, claims("bo", nil), ""), ""))
	require.NoError(t, err)
	require.Equal(t, "bo", id.User)
	require.Empty(t, id.Tier, "no tier claim: the policy's default")
}

func TestAnonymousAndRequired(t *testing.T) {
	j := newJWT(t, JWTConfig{HMACSecret: secret})
	id, err := j.Resolve(request("", ""))
	require.NoError(t, err)
	require.True(t, id.Anonymous())
	require.Equal(t, "203.0.113.9", id.Address)

	j = newJWT(t, JWTConfig{HMACSecret: secret, RequireToken: true})
	_, err = j.Resolve(request("", ""))
	require.ErrorIs(t, err, ErrNoToken)
	require.ErrorIs(t, err, ErrUnauthenticated)
	var te *TokenError
	require.ErrorAs(t, err, &te)
	require.Equal(t, 401, te.HTTPStatus())
	require.Equal(t, 1008, te.CloseCode())

	// The query parameter can be turned off.
	j = newJWT(t, JWTConfig{HMACSecret: secret, QueryParam: "-", RequireToken: true})
	_, err = j.Resolve(request("", sign(t, jwt.SigningMethodHS256, secret, claims("ada", nil), "")))
	require.ErrorIs(t, err, ErrNoToken)
}

func TestRSAAndECDSAKeys(t *testing.T) {
	k := keysOnce()
	rsaPEM := pemOf(t, &k.rsa.PublicKey)
	ecPEM := pemOf(t, &k.ec.PublicKey)
	pub, err := ParsePublicKeys(append(rsaPEM, ecPEM...))
	require.NoError(t, err)
	require.Len(t, pub, 2)
	j := newJWT(t, JWTConfig{PublicKeys: pub, TierClaim: "app.plan"})

	for name, tok := range map[string]string{
		"RS256": sign(t, jwt.SigningMethodRS256, k.rsa, claims("ada", func(c jwt.MapClaims) { c["app"] = map[string]any{"plan": "pro"} }), ""),
		"PS384": sign(t, jwt.SigningMethodPS384, k.rsa, claims("ada", func(c jwt.MapClaims) { c["app"] = map[string]any{"plan": "pro"} }), ""),
		"ES256": sign(t, jwt.SigningMethodES256, k.ec, claims("ada", func(c jwt.MapClaims) { c["app"] = map[string]any{"plan": "pro"} }), ""),
	} {
		id, err := j.Resolve(request("Bearer "+tok, ""))
		require.NoError(t, err, name)
		require.Equal(t, "pro", id.Tier, name)
	}

	// Signed by a key the resolver does not hold.
	_, err = j.Resolve(request("Bearer "+sign(t, jwt.SigningMethodRS256, k.rsa2, claims("ada", nil), ""), ""))
	require.ErrorIs(t, err, ErrBadSignature)

	// An HMAC token is refused when only public keys are configured.
	_, err = j.Resolve(request("Bearer "+sign(t, jwt.SigningMethodHS256, secret, claims("ada", nil), ""), ""))
	require.ErrorIs(t, err, ErrAlgorithm)
}

// The classic algorithm confusion: an attacker who knows the RSA public
// key signs an HS256 token with the key's PEM bytes as the HMAC secret.
func TestAlgorithmConfusionRefused(t *testing.T) {
	k := keysOnce()
	rsaPEM := pemOf(t, &k.rsa.PublicKey)
	pub, err := ParsePublicKeys(rsaPEM)
	require.NoError(t, err)
	forged := sign(t, jwt.SigningMethodHS256, rsaPEM, claims("admin", nil), "")
	der, err := x509.MarshalPKIXPublicKey(&k.rsa.PublicKey)
	require.NoError(t, err)
	forgedDER := sign(t, jwt.SigningMethodHS256, der, claims("admin", nil), "")

	j := newJWT(t, JWTConfig{PublicKeys: pub})
	for _, tok := range []string{forged, forgedDER} {
		_, err = j.Resolve(request("Bearer "+tok, ""))
		require.ErrorIs(t, err, ErrAlgorithm)
	}
	// With an HMAC secret configured too, the forged token still fails:
	// it is checked against the secret, never against the public key.
	j = newJWT(t, JWTConfig{PublicKeys: pub, HMACSecret: secret})
	_, err = j.Resolve(request("Bearer "+forged, ""))
	require.ErrorIs(t, err, ErrBadSignature)

	// "alg": "none".
	none := sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims("admin", nil), "")
	_, err = j.Resolve(request("Bearer "+none, ""))
	require.ErrorIs(t, err, ErrAlgorithm)
}

func TestJWKSFile(t *testing.T) {
	k := keysOnce()
	path := writeJWKS(t, map[string]any{"rsa-1": &k.rsa.PublicKey, "ec-1": &k.ec.PublicKey})
	j := newJWT(t, JWTConfig{JWKSFile: path})

	id, err := j.Resolve(request("Bearer "+sign(t, jwt.SigningMethodRS256, k.rsa, claims("ada", nil), "rsa-1"), ""))
	require.NoError(t, err)
	require.Equal(t, "ada", id.User)
	id, err = j.Resolve(request("Bearer "+sign(t, jwt.SigningMethodES256, k.ec, claims("bo", nil), "ec-1"), ""))
	require.NoError(t, err)
	require.Equal(t, "bo", id.User)

	// A kid naming a key of the other family, or none at all.
	_, err = j.Resolve(request("Bearer "+sign(t, jwt.SigningMethodRS256, k.rsa, claims("ada", nil), "ec-1"), ""))
	require.ErrorIs(t, err, ErrUnknownKey)
	_, err = j.Resolve(request("Bearer "+sign(t, jwt.SigningMethodRS256, k.rsa, claims("ada", nil), "rsa-9"), ""))
	require.ErrorIs(t, err, ErrUnknownKey)

	// Rotation: the file now holds only rsa2 under rsa-2.
	writeJWKSAt(t, path, map[string]any{"rsa-2": &k.rsa2.PublicKey})
	require.NoError(t, j.Reload())
	_, err = j.Resolve(request("Bearer "+sign(t, jwt.SigningMethodRS256, k.rsa, claims("ada", nil), "rsa-1"), ""))
	require.ErrorIs(t, err, ErrUnknownKey)
	_, err = j.Resolve(request("Bearer "+sign(t, jwt.SigningMethodRS256, k.rsa2, claims("ada", nil), "rsa-2"), ""))
	require.NoError(t, err)

	// A broken file is refused and the keys in use are kept.
	require.NoError(t, os.WriteFile(path, []byte(`{"keys":[{"kty":"RSA","kid":"x","n":"!!","e":"AQAB"}]}`), 0o600))
	require.Error(t, j.Reload())
	_, err = j.Resolve(request("Bearer "+sign(t, jwt.SigningMethodRS256, k.rsa2, claims("ada", nil), "rsa-2"), ""))
	require.NoError(t, err)
}

func TestParseJWKSRefuses(t *testing.T) {
	for name, in := range map[string]string{
		"not json":   `{`,
		"empty":      `{"keys":[]}`,
		"no kid":     `{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB"}]}`,
		"bad kty":    `{"keys":[{"kty":"oct","kid":"a","k":"AQAB"}]}`,
		"bad curve":  `{"keys":[{"kty":"EC","kid":"a","crv":"P-192","x":"AA","y":"AA"}]}`,
		"off curve":  `{"keys":[{"kty":"EC","kid":"a","crv":"P-256","x":"` + strings.Repeat("A", 43) + `","y":"` + strings.Repeat("A", 43) + `"}]}`,
		"bad exp":    `{"keys":[{"kty":"RSA","kid":"a","n":"AQAB","e":"AQ"}]}`,
		"repeat kid": `{"keys":[{"kty":"RSA","kid":"a","n":"AQAB","e":"AQAB"},{"kty":"RSA","kid":"a","n":"AQAB","e":"AQAB"}]}`,
		"only enc":   `{"keys":[{"kty":"RSA","kid":"a","use":"enc","n":"AQAB","e":"AQAB"}]}`,
	} {
		_, err := parseJWKS([]byte(in))
		require.Error(t, err, name)
	}
	// A short RSA key from a JWKS is refused when loaded.
	path := filepath.Join(t.TempDir(), "jwks.json")
	require.NoError(t, os.WriteFile(path, []byte(`{"keys":[{"kty":"RSA","kid":"a","n":"AQAB","e":"AQAB"}]}`), 0o600))
	_, err := NewJWT(JWTConfig{JWKSFile: path})
	require.ErrorContains(t, err, "too short")
}

func TestTimeClaims(t *testing.T) {
	j := newJWT(t, JWTConfig{HMACSecret: secret})
	expired := sign(t, jwt.SigningMethodHS256, secret, claims("ada", func(c jwt.MapClaims) { c["exp"] = t0.Add(-time.Second).Unix() }), "")
	_, err := j.Resolve(request("Bearer "+expired, ""))
	require.ErrorIs(t, err, ErrExpired)

	early := sign(t, jwt.SigningMethodHS256, secret, claims("ada", func(c jwt.MapClaims) { c["nbf"] = t0.Add(time.Minute).Unix() }), "")
	_, err = j.Resolve(request("Bearer "+early, ""))
	require.ErrorIs(t, err, ErrNotYetValid)

	// Within the leeway both pass.
	j = newJWT(t, JWTConfig{HMACSecret: secret, Leeway: 2 * time.Minute})
	for _, tok := range []string{expired, early} {
		_, err = j.Resolve(request("Bearer "+tok, ""))
		require.NoError(t, err)
	}
}

func TestClaimsAndShapes(t *testing.T) {
	j := newJWT(t, JWTConfig{HMACSecret: secret, Issuer: "https://auth.example", Audience: "chat"})
	good := func(c jwt.MapClaims) { c["iss"] = "https://auth.example"; c["aud"] = "chat" }
	_, err := j.Resolve(request("Bearer "+sign(t, jwt.SigningMethodHS256, secret, claims("ada", good), ""), ""))
	require.NoError(t, err)

	cases := map[string]struct {
		header string
		kind   error
	}{
		"no sub":          {"Bearer " + sign(t, jwt.SigningMethodHS256, secret, claims("", good), ""), ErrClaims},
		"long sub":        {"Bearer " + sign(t, jwt.SigningMethodHS256, secret, claims(strings.Repeat("a", 300), good), ""), ErrClaims},
		"tier not string": {"Bearer " + sign(t, jwt.SigningMethodHS256, secret, claims("ada", func(c jwt.MapClaims) { good(c); c["tier"] = 3 }), ""), ErrClaims},
		"wrong issuer":    {"Bearer " + sign(t, jwt.SigningMethodHS256, secret, claims("ada", func(c jwt.MapClaims) { good(c); c["iss"] = "evil" }), ""), ErrClaims},
		"wrong audience":  {"Bearer " + sign(t, jwt.SigningMethodHS256, secret, claims("ada", func(c jwt.MapClaims) { good(c); c["aud"] = "admin" }), ""), ErrClaims},
		"bad signature":   {"Bearer " + sign(t, jwt.SigningMethodHS256, []byte("another secret of thirty-two bytes!"), claims("ada", good), ""), ErrBadSignature},
		"not a jwt":       {"Bearer hello", ErrMalformed},
		"basic auth":      {"Basic YWRhOnB3", ErrMalformed},
		"bearer nothing":  {"Bearer ", ErrMalformed},
		"oversize":        {"Bearer " + strings.Repeat("a", DefaultMaxTokenSize+1), ErrTokenTooLarge},
	}
	for name, c := range cases {
		_, err := j.Resolve(request(c.header, ""))
		require.ErrorIs(t, err, c.kind, name)
		require.ErrorIs(t, err, ErrUnauthenticated, name)
	}
	// A tampered payload fails the signature.
	tok := sign(t, jwt.SigningMethodHS256, secret, claims("ada", good), "")
	parts := strings.Split(tok, ".")
	payload, _ := json.Marshal(claims("root", good))
	parts[1] = base64.RawURLEncoding.EncodeToString(payload)
	_, err = j.Resolve(request("Bearer "+strings.Join(parts, "."), ""))
	require.ErrorIs(t, err, ErrBadSignature)
}

func TestNewJWTRefusesBadConfig(t *testing.T) {
	for _, c := range []struct {
		cfg   JWTConfig
		field string
	}{
		{JWTConfig{}, "HMACSecret"},
		{JWTConfig{HMACSecret: []byte("short")}, "HMACSecret"},
		{JWTConfig{HMACSecret: secret, MaxTokenSize: -1}, "MaxTokenSize"},
		{JWTConfig{HMACSecret: secret, Leeway: -time.Second}, "Leeway"},
		{JWTConfig{PublicKeys: []crypto.PublicKey{"not a key"}}, "PublicKeys[0]"},
		{JWTConfig{JWKSFile: filepath.Join(t.TempDir(), "none.json")}, "JWKSFile"},
	} {
		_, err := NewJWT(c.cfg)
		var fe *limiter.FieldError
		require.ErrorAs(t, err, &fe, c.field)
		require.Equal(t, c.field, fe.Field)
		require.ErrorIs(t, err, ErrInvalidConfig, c.field)
	}
	_, err := ParsePublicKeys([]byte("nothing"))
	require.Error(t, err)
}

func TestRemoteAddress(t *testing.T) {
	for in, want := range map[string]string{
		"203.0.113.9:1":              "203.0.113.9",
		"[2001:db8:1:2:3:4:5:6]:443": "2001:db8:1:2::/64",
		"[::ffff:192.0.2.1]:80":      "192.0.2.1",
		"[fe80::1%eth0]:80":          "fe80::/64",
		"not-an-address":             "not-an-address",
	} {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr = in
		require.Equal(t, want, RemoteAddress(r), in)
	}
}

func TestResolverFunc(t *testing.T) {
	var r Resolver = ResolverFunc(func(r *http.Request) (Identity, error) {
		c, err := r.Cookie("session")
		if err != nil {
			return Identity{Address: RemoteAddress(r)}, nil
		}
		return Identity{User: c.Value, Address: RemoteAddress(r)}, nil
	})
	req := request("", "")
	req.AddCookie(&http.Cookie{Name: "session", Value: "ada"})
	id, err := r.Resolve(req)
	require.NoError(t, err)
	require.Equal(t, "ada", id.User)
}

func pemOf(t *testing.T, k any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(k)
	require.NoError(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func writeJWKS(t *testing.T, keys map[string]any) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "jwks.json")
	writeJWKSAt(t, path, keys)
	return path
}

func writeJWKSAt(t *testing.T, path string, keys map[string]any) {
	t.Helper()
	b64 := func(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
	var set struct {
		Keys []map[string]string `json:"keys"`
	}
	for kid, k := range keys {
		switch k := k.(type) {
		case *rsa.PublicKey:
			set.Keys = append(set.Keys, map[string]string{"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
				"n": b64(k.N.Bytes()), "e": b64(big.NewInt(int64(k.E)).Bytes())})
		case *ecdsa.PublicKey:
			raw, err := k.Bytes()
			require.NoError(t, err)
			n := (len(raw) - 1) / 2
			set.Keys = append(set.Keys, map[string]string{"kty": "EC", "kid": kid, "crv": "P-256",
				"x": b64(raw[1 : 1+n]), "y": b64(raw[1+n:])})
		}
	}
	b, err := json.Marshal(set)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, b, 0o600))
}

func TestConcurrentResolve(t *testing.T) {
	k := keysOnce()
	j := newJWT(t, JWTConfig{HMACSecret: secret, PublicKeys: []crypto.PublicKey{&k.rsa.PublicKey, &k.ec.PublicKey}})
	toks := []string{
		sign(t, jwt.SigningMethodHS256, secret, claims("a", nil), ""),
		sign(t, jwt.SigningMethodRS256, k.rsa, claims("b", nil), ""),
		sign(t, jwt.SigningMethodES256, k.ec, claims("c", nil), ""),
	}
	var wg sync.WaitGroup
	for g := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				tok := toks[(g+i)%3]
				id, err := j.Resolve(request("Bearer "+tok, ""))
				if err != nil || id.User == "" {
					t.Errorf("resolve: %v %+v", err, id)
					return
				}
				if i == 10 && g == 0 {
					_ = j.Reload()
				}
			}
		}()
	}
	wg.Wait()
}
