package limiter

import (
	"errors"
	"fmt"
)

var (
	// ErrInvalidLimits is wrapped by every error that Limits.Validate and
	// Spec.Validate return.
	ErrInvalidLimits = errors.New("limiter: invalid limits")

	// ErrClosed is returned by calls on a Limiter after Close.
	ErrClosed = errors.New("limiter: closed")

	// ErrDuplicateConnection is returned when a connection ID is registered
	// while a connection with the same ID is still registered.
	ErrDuplicateConnection = errors.New("limiter: connection already registered")

	// ErrUnavailable is the error a Store or Slots implementation returns (or
	// wraps) when it cannot answer, for example while its backend is
	// unreachable and it is configured to fail closed. The Limiter turns it
	// into a denial with ReasonStoreUnavailable.
	ErrUnavailable = errors.New("limiter: store unavailable")
)

// FieldError reports an invalid configuration value. It names the field and
// the value so that a user can find the mistake, and unwraps to
// ErrInvalidLimits.
type FieldError struct {
	Field  string // the field's name, for example "MessagesPerMinute"
	Value  any    // the rejected value
	Reason string // why it is rejected
}

// Error implements error.
func (e *FieldError) Error() string {
	return fmt.Sprintf("limiter: invalid %s %v: %s", e.Field, e.Value, e.Reason)
}

// Unwrap returns ErrInvalidLimits.
func (e *FieldError) Unwrap() error { return ErrInvalidLimits }
