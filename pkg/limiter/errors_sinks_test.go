package limiter

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestFieldErrorText: Error is the sentinel's text and Problem; Problem
// quotes string values, shows the source and leaves out a nil value.
func TestFieldErrorText(t *testing.T) {
	t.Parallel()
	errOther := errors.New("other: invalid config")
	for _, tc := range []struct {
		err           *FieldError
		problem, text string
	}{
		{&FieldError{Field: "MessagesPerMinute", Value: int64(-5), Reason: "must not be negative"},
			"MessagesPerMinute = -5: must not be negative",
			"limiter: invalid limits: MessagesPerMinute = -5: must not be negative"},
		{&FieldError{Field: "listen", Source: "flag --listen", Value: "x y", Reason: "not host:port", Err: errOther},
			`listen (flag --listen) = "x y": not host:port`,
			`other: invalid config: listen (flag --listen) = "x y": not host:port`},
		{&FieldError{Field: "Conn", Reason: "is required", Err: errOther},
			"Conn: is required", "other: invalid config: Conn: is required"},
	} {
		require.Equal(t, tc.problem, tc.err.Problem())
		require.Equal(t, tc.text, tc.err.Error())
	}
	require.ErrorIs(t, &FieldError{}, ErrInvalidLimits)
	require.ErrorIs(t, &FieldError{Err: errOther}, errOther)
	require.NotErrorIs(t, &FieldError{Err: errOther}, ErrInvalidLimits)
}

// TestSinks: every sink gets every violation, in order; nil ones are
// skipped.
func TestSinks(t *testing.T) {
	t.Parallel()
	var got []string
	sink := func(name string) ViolationSink {
		return ViolationFunc(func(v Violation) { got = append(got, name+":"+v.ClientID) })
	}
	s := Sinks(sink("a"), nil, sink("b"))
	s.HandleViolation(Violation{ClientID: "1"})
	s.HandleViolation(Violation{ClientID: "2"})
	require.Equal(t, []string{"a:1", "b:1", "a:2", "b:2"}, got)
	Sinks().HandleViolation(Violation{}) // no sinks: nothing to do, no panic
}
