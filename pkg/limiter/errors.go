package limiter

import (
	"errors"
	"fmt"
	"strings"
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

// FieldError reports an invalid configuration value. It is the one
// configuration error of the module: limiter, kvstore, events, wshandler,
// policy, identity, embedded and the node all return it, so that a caller can find the mistake
// with one errors.As whichever package refused it. It names the field (or,
// for a document, the dotted path of its key), where the value came from
// when that is known, the value and why it is refused. It unwraps to the
// refusing package's sentinel (Err), so errors.Is(err,
// events.ErrInvalidConfig) still tells the packages apart.
type FieldError struct {
	// Field is the field's name ("MessagesPerMinute"), or its dotted path
	// in a document ("tiers.pro.classes.typing.rate").
	Field string
	// Source says where the value came from, such as "flag --listen" or
	// "env RATETHROTTLE_LISTEN"; empty when it is a field of a Go struct.
	Source string
	// Value is the rejected value; nil when there is none to show.
	Value any
	// Reason says why the value is rejected.
	Reason string
	// Err is the sentinel of the package that refused the value, which
	// Unwrap returns. Nil means ErrInvalidLimits.
	Err error
}

// Error implements error: the sentinel's text and the Problem, as in
// "limiter: invalid limits: MessagesPerMinute = -5: must not be negative".
func (e *FieldError) Error() string {
	return e.Unwrap().Error() + ": " + e.Problem()
}

// Problem describes the mistake without the sentinel's text: the field, its
// source in parentheses, the value and the reason, as in
// "tiers.pro.classes.typing.rate = -5: must not be negative", for a list of
// problems under one heading (a policy document's validation, the node's
// --check-config).
func (e *FieldError) Problem() string {
	var b strings.Builder
	b.WriteString(e.Field)
	if e.Source != "" {
		b.WriteString(" (")
		b.WriteString(e.Source)
		b.WriteString(")")
	}
	switch v := e.Value.(type) {
	case nil:
	case string:
		fmt.Fprintf(&b, " = %q", v)
	default:
		fmt.Fprintf(&b, " = %v", v)
	}
	b.WriteString(": ")
	b.WriteString(e.Reason)
	return b.String()
}

// Unwrap returns Err, or ErrInvalidLimits when Err is nil.
func (e *FieldError) Unwrap() error {
	if e.Err == nil {
		return ErrInvalidLimits
	}
	return e.Err
}
