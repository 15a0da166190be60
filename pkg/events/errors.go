package events

import (
	"errors"
	"fmt"
)

var (
	// ErrInvalidConfig is wrapped by every error that reports an invalid
	// configuration value; the error is a *ConfigError naming the field.
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

// ConfigError reports an invalid configuration value. It names the field so
// that a user can find the mistake, and unwraps to ErrInvalidConfig.
type ConfigError struct {
	Field  string // the field's name, for example "BufferSize"
	Value  any    // the rejected value
	Reason string // why it is rejected
}

// Error implements error.
func (e *ConfigError) Error() string {
	return fmt.Sprintf("events: invalid %s %v: %s", e.Field, e.Value, e.Reason)
}

// Unwrap returns ErrInvalidConfig.
func (e *ConfigError) Unwrap() error { return ErrInvalidConfig }
