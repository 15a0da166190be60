package kvstore

import "errors"

// ErrInvalidConfig is wrapped by errors about an invalid configuration; the
// message names the field.
var ErrInvalidConfig = errors.New("kvstore: invalid config")

// ErrServerNotReady is wrapped when an embedded NATS server or cluster does
// not become ready in time.
var ErrServerNotReady = errors.New("kvstore: NATS server not ready")

// ErrServerClosed is returned by Restart after Shutdown.
var ErrServerClosed = errors.New("kvstore: server shut down")
