package kvstore

import "errors"

// ErrInvalidConfig is the sentinel of an invalid configuration: New returns
// a *limiter.FieldError naming the field, its value and the reason, which
// unwraps to it.
var ErrInvalidConfig = errors.New("kvstore: invalid config")

// ErrJetStreamDisabled is returned by New when the NATS server has no
// JetStream: start nats-server with -js (or JetStream in its config).
var ErrJetStreamDisabled = errors.New("kvstore: JetStream is not enabled on the NATS server (start it with -js)")

// ErrConflict is wrapped, with limiter.ErrUnavailable, by a Strict decision
// that lost its compare-and-swap more than MaxRetries times.
var ErrConflict = errors.New("kvstore: too many conflicting updates")

// ErrDown is wrapped, with limiter.ErrUnavailable, by cross-node checks
// denied while NATS is unreachable and the fail mode is FailClosed.
var ErrDown = errors.New("kvstore: NATS unreachable")
