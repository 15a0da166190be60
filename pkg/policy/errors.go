package policy

import (
	"errors"
	"fmt"
	"strings"

	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

var (
	// ErrInvalid is wrapped by every error that reports an invalid
	// document: *ValidationError and the errors of Parse.
	ErrInvalid = errors.New("policy: invalid document")

	// ErrNotFound is returned by Store.Get when the cluster holds no
	// policy document yet.
	ErrNotFound = errors.New("policy: no policy document stored")

	// ErrClosed is returned by calls on a closed Watcher.
	ErrClosed = errors.New("policy: closed")

	// ErrInvalidConfig is wrapped by every error that reports an invalid
	// StoreConfig or WatcherConfig value; the error is a
	// *limiter.FieldError naming the field.
	ErrInvalidConfig = errors.New("policy: invalid config")
)

// invalidConfig returns the *limiter.FieldError that refuses a
// configuration value.
func invalidConfig(field string, value any, reason string) *limiter.FieldError {
	return &limiter.FieldError{Field: field, Value: value, Reason: reason, Err: ErrInvalidConfig}
}

// A problem with a document is a *limiter.FieldError whose Field is the
// dotted path of its key ("tiers.pro.classes.typing.rate") and whose Err is
// ErrInvalid; see problem.
func problem(path string, value any, reason string) *limiter.FieldError {
	return &limiter.FieldError{Field: path, Value: value, Reason: reason, Err: ErrInvalid}
}

// ValidationError lists every problem Validate found, in a stable order
// (paths sorted as they appear in the document, map keys sorted). Each
// problem is a *limiter.FieldError whose Field is the path and whose Err is
// ErrInvalid.
type ValidationError struct {
	Problems []*limiter.FieldError
}

// Error implements error: "policy: invalid document: " and the problems,
// separated by "; ".
func (e *ValidationError) Error() string {
	s := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		s[i] = p.Problem()
	}
	return ErrInvalid.Error() + ": " + strings.Join(s, "; ")
}

// Unwrap returns ErrInvalid.
func (e *ValidationError) Unwrap() error { return ErrInvalid }

// Paths returns the paths of the problems, in order.
func (e *ValidationError) Paths() []string {
	p := make([]string, len(e.Problems))
	for i, pe := range e.Problems {
		p[i] = pe.Field
	}
	return p
}

// StaleError is returned by Store.Put when the stored document's revision
// is not the one the caller based its change on. An HTTP API answers it
// with 412 Precondition Failed.
type StaleError struct {
	// Want is the revision the caller gave (0: the key must not exist).
	Want uint64
	// Have is the stored revision, when it could be read (0: unknown or
	// no document).
	Have uint64
}

// Error implements error.
func (e *StaleError) Error() string {
	return fmt.Sprintf("policy: stale revision: the change is based on revision %d, the stored revision is %d", e.Want, e.Have)
}

// Is reports whether target is ErrStale.
func (e *StaleError) Is(target error) bool { return target == ErrStale }

// ErrStale matches every *StaleError under errors.Is.
var ErrStale = errors.New("policy: stale revision")
