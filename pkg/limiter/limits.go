package limiter

import "time"

// Scope says whom a message or byte bucket belongs to.
type Scope uint8

const (
	// PerConnection gives every connection its own message and byte buckets.
	// They live with the connection on its node and never touch a Store.
	// It is the default.
	PerConnection Scope = iota
	// PerClient shares one message bucket and one byte bucket among all of a
	// client's connections, on every node that shares the Store.
	PerClient
)

// String returns "connection" or "client".
func (s Scope) String() string {
	switch s {
	case PerConnection:
		return "connection"
	case PerClient:
		return "client"
	}
	return "unknown"
}

// Limits are the five WebSocket limits. A zero field means unlimited. Each
// rate refills evenly over a minute and holds at most its burst; a zero
// burst equals the rate.
//
// The zero Limits limits nothing. DefaultLimits, Strict, Moderate and
// Generous return ready configurations.
type Limits struct {
	// ConnectionsPerMinute caps new connections per client.
	ConnectionsPerMinute int64
	// ConnectionBurst is the connection bucket's capacity.
	ConnectionBurst int64
	// MessagesPerMinute caps messages per connection or per client, see
	// MessageScope.
	MessagesPerMinute int64
	// MessageBurst is the message bucket's capacity.
	MessageBurst int64
	// BytesPerMinute caps payload bytes (exact bytes, not characters) with
	// the same scope as messages.
	BytesPerMinute int64
	// ByteBurst is the byte bucket's capacity.
	ByteBurst int64
	// MaxConcurrentConnections caps a client's open connections, across
	// every node that shares the Slots implementation.
	MaxConcurrentConnections int64
	// MaxMessageSize caps one message's size in bytes.
	MaxMessageSize int64
	// MessageScope selects per-connection (default) or per-client message
	// and byte buckets.
	MessageScope Scope
}

// DefaultLimits returns the defaults of the WebSocket API this package
// carries over: 60 connections a minute, 1000 messages a minute, no byte
// limit, 10 concurrent connections, 64 KiB messages.
func DefaultLimits() Limits {
	return Limits{
		ConnectionsPerMinute:     60,
		MessagesPerMinute:        1000,
		MaxConcurrentConnections: 10,
		MaxMessageSize:           65536,
	}
}

// Strict returns limits for public APIs and trading feeds: 5 connections
// and 50 messages a minute, 100 KiB a minute, 2 concurrent connections,
// 1 KiB messages.
func Strict() Limits {
	return Limits{
		ConnectionsPerMinute:     5,
		MessagesPerMinute:        50,
		BytesPerMinute:           102400,
		MaxConcurrentConnections: 2,
		MaxMessageSize:           1024,
	}
}

// Moderate returns limits for chat: 10 connections and 100 messages a
// minute, 1 MiB a minute, 5 concurrent connections, 10 KiB messages.
func Moderate() Limits {
	return Limits{
		ConnectionsPerMinute:     10,
		MessagesPerMinute:        100,
		BytesPerMinute:           1048576,
		MaxConcurrentConnections: 5,
		MaxMessageSize:           10240,
	}
}

// Generous returns limits for internal tools: 50 connections and 1000
// messages a minute, 10 MiB a minute, 20 concurrent connections, 64 KiB
// messages.
func Generous() Limits {
	return Limits{
		ConnectionsPerMinute:     50,
		MessagesPerMinute:        1000,
		BytesPerMinute:           10485760,
		MaxConcurrentConnections: 20,
		MaxMessageSize:           65536,
	}
}

// Preset returns the limits of a preset by name: "default", "strict",
// "moderate" or "generous".
func Preset(name string) (Limits, bool) {
	switch name {
	case "default", "":
		return DefaultLimits(), true
	case "strict":
		return Strict(), true
	case "moderate":
		return Moderate(), true
	case "generous":
		return Generous(), true
	}
	return Limits{}, false
}

// ConnectionSpec returns the bucket of ConnectionsPerMinute.
func (l Limits) ConnectionSpec() Spec {
	return Spec{Limit: l.ConnectionsPerMinute, Per: time.Minute, Burst: l.ConnectionBurst}
}

// MessageSpec returns the bucket of MessagesPerMinute.
func (l Limits) MessageSpec() Spec {
	return Spec{Limit: l.MessagesPerMinute, Per: time.Minute, Burst: l.MessageBurst}
}

// ByteSpec returns the bucket of BytesPerMinute.
func (l Limits) ByteSpec() Spec {
	return Spec{Limit: l.BytesPerMinute, Per: time.Minute, Burst: l.ByteBurst}
}

// Validate rejects negative or inconsistent values. Its error is a
// *FieldError naming the first offending field; it wraps ErrInvalidLimits.
func (l Limits) Validate() error {
	if err := l.ConnectionSpec().validate("ConnectionsPerMinute", "ConnectionBurst"); err != nil {
		return err
	}
	if err := l.MessageSpec().validate("MessagesPerMinute", "MessageBurst"); err != nil {
		return err
	}
	if err := l.ByteSpec().validate("BytesPerMinute", "ByteBurst"); err != nil {
		return err
	}
	if l.MaxConcurrentConnections < 0 {
		return &FieldError{Field: "MaxConcurrentConnections", Value: l.MaxConcurrentConnections, Reason: "must not be negative (0 means unlimited)"}
	}
	if l.MaxMessageSize < 0 {
		return &FieldError{Field: "MaxMessageSize", Value: l.MaxMessageSize, Reason: "must not be negative (0 means unlimited)"}
	}
	if l.MessageScope > PerClient {
		return &FieldError{Field: "MessageScope", Value: l.MessageScope, Reason: "must be PerConnection or PerClient"}
	}
	if bs := l.ByteSpec(); !bs.Unlimited() && l.MaxMessageSize > bs.Capacity() {
		return &FieldError{Field: "MaxMessageSize", Value: l.MaxMessageSize,
			Reason: "exceeds the byte bucket's capacity, so a message of the maximum size could never pass"}
	}
	return nil
}
