package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
)

// Defaults of JWTConfig.
const (
	DefaultTierClaim    = "tier"
	DefaultQueryParam   = "token"
	DefaultMaxTokenSize = 8192
)

// MaxUserLength caps "sub", in bytes.
const MaxUserLength = 256

// JWTConfig configures a JWT resolver. At least one key source is
// required; zero fields get defaults.
type JWTConfig struct {
	// HMACSecret verifies HS256, HS384 and HS512 tokens.
	HMACSecret []byte
	// PublicKeys verify RS*, PS* (*rsa.PublicKey) and ES* (*ecdsa.PublicKey)
	// tokens. ParsePublicKeys reads them from PEM.
	PublicKeys []crypto.PublicKey
	// JWKSFile is a JSON Web Key Set file of RSA and EC public keys; a
	// token's "kid" picks its key. Reload reads it again.
	JWKSFile string
	// TierClaim names the claim that holds the tier; a dotted name reaches
	// into nested objects ("app_metadata.tier"). Empty means DefaultTierClaim.
	TierClaim string
	// AttributeClaims are claims copied into Identity.Attributes, as
	// strings.
	AttributeClaims []string
	// Issuer and Audience, if set, must match "iss" and "aud".
	Issuer   string
	Audience string
	// Leeway is the clock skew allowed on "exp" and "nbf".
	Leeway time.Duration
	// MaxTokenSize caps a token, in bytes. Zero means DefaultMaxTokenSize.
	MaxTokenSize int
	// QueryParam is the query parameter a browser passes the token in.
	// Empty means DefaultQueryParam; "-" accepts the Authorization header only.
	QueryParam string
	// RequireToken refuses requests without a token with ErrNoToken;
	// otherwise they resolve as anonymous.
	RequireToken bool
	// Address returns the client's address key. Nil means RemoteAddress.
	Address func(*http.Request) string
	// Now returns the current time. Nil means time.Now.
	Now func() time.Time
}

// JWT resolves identities from JSON Web Tokens. It is safe for concurrent
// use.
type JWT struct {
	cfg    JWTConfig
	keys   atomic.Pointer[keySet]
	parser *jwt.Parser
}

var _ Resolver = (*JWT)(nil)

// keySet is the keys a JWT verifies with, by family.
type keySet struct {
	rsa   []*rsa.PublicKey
	ec    []*ecdsa.PublicKey
	byKID map[string]crypto.PublicKey
}

// NewJWT returns a JWT resolver. An invalid cfg, or a key that does not
// load, is refused with a *limiter.FieldError that names the field and
// unwraps to ErrInvalidConfig.
func NewJWT(cfg JWTConfig) (*JWT, error) {
	if cfg.TierClaim == "" {
		cfg.TierClaim = DefaultTierClaim
	}
	if cfg.QueryParam == "" {
		cfg.QueryParam = DefaultQueryParam
	}
	switch {
	case cfg.MaxTokenSize < 0:
		return nil, invalidConfig("MaxTokenSize", cfg.MaxTokenSize, "must not be negative")
	case cfg.MaxTokenSize == 0:
		cfg.MaxTokenSize = DefaultMaxTokenSize
	}
	if cfg.Leeway < 0 {
		return nil, invalidConfig("Leeway", cfg.Leeway, "must not be negative")
	}
	if cfg.Address == nil {
		cfg.Address = RemoteAddress
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if len(cfg.HMACSecret) == 0 && len(cfg.PublicKeys) == 0 && cfg.JWKSFile == "" {
		return nil, invalidConfig("HMACSecret", nil, "one of HMACSecret, PublicKeys or JWKSFile is required")
	}
	if n := len(cfg.HMACSecret); n > 0 && n < 32 {
		return nil, invalidConfig("HMACSecret", nil, fmt.Sprintf("%d bytes is too short (at least 32)", n))
	}
	opts := []jwt.ParserOption{jwt.WithLeeway(cfg.Leeway), jwt.WithTimeFunc(cfg.Now)}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	j := &JWT{cfg: cfg, parser: jwt.NewParser(opts...)}
	if err := j.Reload(); err != nil {
		return nil, err
	}
	return j, nil
}

// Reload reads JWKSFile again, for key rotation. On error the keys in use
// are kept; a key that does not load is refused with a *limiter.FieldError
// naming JWKSFile (or PublicKeys[i]).
func (j *JWT) Reload() error {
	ks := &keySet{byKID: map[string]crypto.PublicKey{}}
	for i, k := range j.cfg.PublicKeys {
		if err := ks.add("", k); err != nil {
			return invalidConfig(fmt.Sprintf("PublicKeys[%d]", i), nil, err.Error())
		}
	}
	if j.cfg.JWKSFile != "" {
		keys, err := readJWKS(j.cfg.JWKSFile)
		if err != nil {
			return invalidConfig("JWKSFile", j.cfg.JWKSFile, err.Error())
		}
		for kid, k := range keys {
			if err := ks.add(kid, k); err != nil {
				return invalidConfig("JWKSFile", j.cfg.JWKSFile, fmt.Sprintf("key %q: %v", kid, err))
			}
		}
	}
	j.keys.Store(ks)
	return nil
}

func (ks *keySet) add(kid string, k crypto.PublicKey) error {
	switch k := k.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return fmt.Errorf("RSA key of %d bits is too short (at least 2048)", k.N.BitLen())
		}
		ks.rsa = append(ks.rsa, k)
	case *ecdsa.PublicKey:
		ks.ec = append(ks.ec, k)
	default:
		return fmt.Errorf("unsupported key type %T (RSA or ECDSA)", k)
	}
	if kid != "" {
		ks.byKID[kid] = k
	}
	return nil
}

// ParsePublicKeys reads the RSA and ECDSA public keys of PEM data:
// "PUBLIC KEY" (PKIX), "RSA PUBLIC KEY" (PKCS #1) or "CERTIFICATE" blocks.
func ParsePublicKeys(data []byte) ([]crypto.PublicKey, error) {
	var keys []crypto.PublicKey
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		var k any
		var err error
		switch b.Type {
		case "PUBLIC KEY":
			k, err = x509.ParsePKIXPublicKey(b.Bytes)
		case "RSA PUBLIC KEY":
			k, err = x509.ParsePKCS1PublicKey(b.Bytes)
		case "CERTIFICATE":
			var c *x509.Certificate
			if c, err = x509.ParseCertificate(b.Bytes); err == nil {
				k = c.PublicKey
			}
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("identity: PEM %s: %w", b.Type, err)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, errors.New("identity: no public key in PEM data")
	}
	return keys, nil
}

// Resolve returns the identity of r's client: anonymous without a token
// (unless RequireToken), else the verified token's. A refused token is a
// *TokenError.
func (j *JWT) Resolve(r *http.Request) (Identity, error) {
	id := Identity{Address: j.cfg.Address(r)}
	tok, err := j.token(r)
	if err != nil {
		return id, err
	}
	if tok == "" {
		if j.cfg.RequireToken {
			return id, refuse(ErrNoToken, nil)
		}
		return id, nil
	}
	v, err := j.Verify(tok)
	if err != nil {
		return id, err
	}
	v.Address = id.Address
	return v, nil
}

// token extracts the token: the Authorization header if present, else the
// query parameter.
func (j *JWT) token(r *http.Request) (string, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, ok := strings.Cut(h, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
			return "", refuse(ErrMalformed, errors.New(`the Authorization header is not "Bearer <token>"`))
		}
		return strings.TrimSpace(tok), nil
	}
	if j.cfg.QueryParam == "-" {
		return "", nil
	}
	return r.URL.Query().Get(j.cfg.QueryParam), nil
}

// Verify verifies a token and returns its identity, without an address.
func (j *JWT) Verify(token string) (Identity, error) {
	if len(token) > j.cfg.MaxTokenSize {
		return Identity{}, refuse(ErrTokenTooLarge, fmt.Errorf("%d bytes, at most %d", len(token), j.cfg.MaxTokenSize))
	}
	claims := jwt.MapClaims{}
	_, err := j.parser.ParseWithClaims(token, claims, j.keyFunc)
	if err != nil {
		return Identity{}, classify(err)
	}
	sub, _ := claims["sub"].(string)
	switch {
	case sub == "":
		return Identity{}, refuse(ErrClaims, errors.New(`"sub" is missing or not a string`))
	case len(sub) > MaxUserLength || !utf8.ValidString(sub):
		return Identity{}, refuse(ErrClaims, fmt.Errorf(`"sub" must be valid UTF-8 of at most %d bytes`, MaxUserLength))
	}
	id := Identity{User: sub}
	if v, ok := lookup(claims, j.cfg.TierClaim); ok {
		s, isStr := v.(string)
		if !isStr || len(s) > 64 {
			return Identity{}, refuse(ErrClaims, fmt.Errorf("tier claim %q must be a string of at most 64 bytes", j.cfg.TierClaim))
		}
		id.Tier = s
	}
	for _, name := range j.cfg.AttributeClaims {
		if v, ok := lookup(claims, name); ok {
			if id.Attributes == nil {
				id.Attributes = map[string]string{}
			}
			id.Attributes[name] = claimString(v)
		}
	}
	return id, nil
}

// keyFunc picks the verification keys for a token's algorithm. The family
// of the algorithm decides the family of the key, so a token signed with
// HMAC using a public key as its secret never meets that public key.
func (j *JWT) keyFunc(t *jwt.Token) (any, error) {
	ks := j.keys.Load()
	kid, _ := t.Header["kid"].(string)
	switch t.Method.(type) {
	case *jwt.SigningMethodHMAC:
		if len(j.cfg.HMACSecret) == 0 {
			return nil, ErrAlgorithm
		}
		return j.cfg.HMACSecret, nil
	case *jwt.SigningMethodRSA, *jwt.SigningMethodRSAPSS:
		if kid != "" && len(ks.byKID) > 0 {
			k, ok := ks.byKID[kid].(*rsa.PublicKey)
			if !ok {
				return nil, ErrUnknownKey
			}
			return k, nil
		}
		return keySetOf(ks.rsa)
	case *jwt.SigningMethodECDSA:
		if kid != "" && len(ks.byKID) > 0 {
			k, ok := ks.byKID[kid].(*ecdsa.PublicKey)
			if !ok {
				return nil, ErrUnknownKey
			}
			return k, nil
		}
		return keySetOf(ks.ec)
	}
	return nil, ErrAlgorithm
}

func keySetOf[K any](keys []K) (any, error) {
	if len(keys) == 0 {
		return nil, ErrAlgorithm
	}
	vs := jwt.VerificationKeySet{Keys: make([]jwt.VerificationKey, len(keys))}
	for i, k := range keys {
		vs.Keys[i] = k
	}
	return vs, nil
}

// classify maps a jwt error to a *TokenError.
func classify(err error) *TokenError {
	for _, m := range []struct{ jwtErr, kind error }{
		{ErrAlgorithm, ErrAlgorithm},
		{ErrUnknownKey, ErrUnknownKey},
		{jwt.ErrTokenMalformed, ErrMalformed},
		{jwt.ErrTokenSignatureInvalid, ErrBadSignature},
		{jwt.ErrTokenExpired, ErrExpired},
		{jwt.ErrTokenNotValidYet, ErrNotYetValid},
		{jwt.ErrTokenInvalidClaims, ErrClaims},
		{jwt.ErrTokenUnverifiable, ErrBadSignature},
	} {
		if errors.Is(err, m.jwtErr) {
			return refuse(m.kind, err)
		}
	}
	return refuse(ErrMalformed, err)
}

// lookup finds a claim by a dotted name.
func lookup(claims map[string]any, name string) (any, bool) {
	var cur any = claims
	for part := range strings.SplitSeq(name, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[part]; !ok {
			return nil, false
		}
	}
	return cur, true
}

func claimString(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	case bool:
		return strconv.FormatBool(v)
	}
	return fmt.Sprint(v)
}
