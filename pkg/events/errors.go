package events

import (
	"errors"

	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

var (
	// ErrInvalidConfig is wrapped by every error that reports an invalid
	// configuration value; the error is a *limiter.FieldError naming the
	// field.
	ErrInvalidConfig = errors.New("events: invalid config")

	// ErrClosed is returned by calls on a component after Close.
	ErrClosed = errors.New("events: closed")

	// ErrUnsupportedVersion is returned by Decode for an event whose "v" is
	// not a version this package reads.
	ErrUnsupportedVersion = errors.New("events: unsupported event version")

	// ErrInvalidDuration is returned by Ban for a negative duration.
	ErrInvalidDuration = errors.New("events: invalid ban duration")

	// ErrNotReady is returned by NewBans when the initial contents of the
	// ban bucket could not be read before its context ended.
	ErrNotReady = errors.New("events: ban cache not ready")
)

// invalidConfig returns the error for an invalid configuration value: a
// *limiter.FieldError, the module's one configuration error, that names
// the field and unwraps to ErrInvalidConfig.
func invalidConfig(field string, value any, reason string) error {
	return &limiter.FieldError{Field: field, Value: value, Reason: reason, Err: ErrInvalidConfig}
}
