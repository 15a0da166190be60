package wshandler

import (
	"errors"
	"fmt"
)

var (
	// ErrInvalidConfig is wrapped by every error New returns for a bad
	// Config.
	ErrInvalidConfig = errors.New("wshandler: invalid config")

	// ErrClosed is returned by Conn.Send on a connection that is closing or
	// closed, and by Handler calls after Shutdown.
	ErrClosed = errors.New("wshandler: connection closed")

	// ErrQueueFull is returned by Conn.Send when the connection's send queue
	// is full. The connection is aborted when it happens.
	ErrQueueFull = errors.New("wshandler: send queue full")

	// ErrNoIdentity is returned by a KeyFunc that cannot name the client of
	// a request.
	ErrNoIdentity = errors.New("wshandler: no client identity")
)

// FieldError reports an invalid Config value. It names the field and unwraps
// to ErrInvalidConfig.
type FieldError struct {
	Field  string // the field's name, for example "SendQueueSize"
	Value  any    // the rejected value
	Reason string // why it is rejected
}

// Error implements error.
func (e *FieldError) Error() string {
	return fmt.Sprintf("wshandler: invalid %s %v: %s", e.Field, e.Value, e.Reason)
}

// Unwrap returns ErrInvalidConfig.
func (e *FieldError) Unwrap() error { return ErrInvalidConfig }
