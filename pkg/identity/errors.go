package identity

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

// The kinds of refusal. A *TokenError matches one of them, and
// ErrUnauthenticated, under errors.Is.
var (
	// ErrUnauthenticated matches every *TokenError.
	ErrUnauthenticated = errors.New("identity: unauthenticated")
	// ErrNoToken: a token is required and the request carries none.
	ErrNoToken = errors.New("identity: no token")
	// ErrTokenTooLarge: the token exceeds JWTConfig.MaxTokenSize.
	ErrTokenTooLarge = errors.New("identity: token too large")
	// ErrMalformed: not a JWT, or an Authorization header that is not
	// "Bearer <token>".
	ErrMalformed = errors.New("identity: malformed token")
	// ErrAlgorithm: the token's algorithm is none of those the configured
	// keys verify ("none", or HMAC where only public keys are set).
	ErrAlgorithm = errors.New("identity: algorithm not accepted")
	// ErrUnknownKey: the token names a key ID the key set lacks.
	ErrUnknownKey = errors.New("identity: unknown key")
	// ErrBadSignature: the signature does not verify.
	ErrBadSignature = errors.New("identity: bad signature")
	// ErrExpired: "exp" has passed.
	ErrExpired = errors.New("identity: token expired")
	// ErrNotYetValid: "nbf" has not come yet.
	ErrNotYetValid = errors.New("identity: token not yet valid")
	// ErrClaims: a claim is missing or wrong ("sub", the tier claim, the
	// issuer or the audience).
	ErrClaims = errors.New("identity: bad claims")
)

// TokenError is a refused token: Kind is one of the sentinels above and
// Err the detail.
type TokenError struct {
	Kind error
	Err  error
}

// Error implements error.
func (e *TokenError) Error() string {
	if e.Err == nil {
		return e.Kind.Error()
	}
	return fmt.Sprintf("%v: %v", e.Kind, e.Err)
}

// Is reports whether target is e.Kind or ErrUnauthenticated.
func (e *TokenError) Is(target error) bool { return target == e.Kind || target == ErrUnauthenticated }

// Unwrap returns the detail.
func (e *TokenError) Unwrap() error { return e.Err }

// HTTPStatus returns 401 Unauthorized, the answer to a refused token before
// the upgrade.
func (e *TokenError) HTTPStatus() int { return http.StatusUnauthorized }

// CloseCode returns 1008 (policy violation), the close code of a refused
// token after the upgrade.
func (e *TokenError) CloseCode() int { return 1008 }

// ErrInvalidConfig is wrapped by every error that reports an invalid
// JWTConfig value; the error is a *limiter.FieldError naming the field.
var ErrInvalidConfig = errors.New("identity: invalid config")

// invalidConfig returns the *limiter.FieldError that refuses a
// configuration value.
func invalidConfig(field string, value any, reason string) *limiter.FieldError {
	return &limiter.FieldError{Field: field, Value: value, Reason: reason, Err: ErrInvalidConfig}
}

func refuse(kind, err error) *TokenError { return &TokenError{Kind: kind, Err: err} }
