package wshandler

import (
	"errors"

	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

var (
	// ErrInvalidConfig is wrapped by every error New and NewNATSBroker
	// return for a bad Config: a *limiter.FieldError naming the field,
	// whose Err it is.
	ErrInvalidConfig = errors.New("wshandler: invalid config")

	// ErrClosed is returned by Conn.Send on a connection that is closing or
	// closed, and by Handler calls after Shutdown.
	ErrClosed = errors.New("wshandler: connection closed")

	// ErrQueueFull is returned by Conn.Send when the connection's send queue
	// is full. The connection is aborted when it happens.
	ErrQueueFull = errors.New("wshandler: send queue full")

	// ErrNoIdentity is returned by a KeyFunc that cannot name the client of
	// a request. The Handler refuses the request with HTTP 400.
	ErrNoIdentity = errors.New("wshandler: no client identity")

	// ErrUnauthenticated is wrapped by a KeyFunc's error when the request
	// lacks valid credentials (a missing, expired or badly signed token).
	// The Handler refuses such a request with HTTP 401 and a
	// "WWW-Authenticate: Bearer" challenge, or, with
	// Config.RejectWithClose, an upgrade, an unauthenticated error frame
	// and a 1008 close with the reason "unauthenticated". The error's text
	// is not sent to the client.
	ErrUnauthenticated = errors.New("wshandler: unauthenticated")
)

// invalid returns the error of an invalid Config field: the module's
// limiter.FieldError, unwrapping to ErrInvalidConfig.
func invalid(field string, value any, reason string) error {
	return &limiter.FieldError{Field: field, Value: value, Reason: reason, Err: ErrInvalidConfig}
}
