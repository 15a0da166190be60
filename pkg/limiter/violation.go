package limiter

import (
	"sync/atomic"
	"time"
)

// ViolationType names a kind of violation. The values are stable and match
// the WebSocket API this package carries over.
type ViolationType string

// The violation types the Limiter reports.
const (
	ViolationConnectionRate        ViolationType = "connection_rate"
	ViolationConcurrentConnections ViolationType = "concurrent_connections"
	ViolationMessageSize           ViolationType = "message_size"
	ViolationMessageRate           ViolationType = "message_rate"
	ViolationBandwidth             ViolationType = "bandwidth"
	ViolationBanned                ViolationType = "banned"
	ViolationStoreUnavailable      ViolationType = "store_unavailable"
	// ViolationRoomRate and ViolationRoomFull are reported by room layers
	// (pkg/wshandler) through the same sinks.
	ViolationRoomRate ViolationType = "room_rate"
	ViolationRoomFull ViolationType = "room_full"
	// ViolationInvalidUTF8 is reported by protocol layers (pkg/wshandler)
	// for a text frame that is not valid UTF-8; the connection is failed
	// with close code 1007.
	ViolationInvalidUTF8 ViolationType = "invalid_utf8"
	// ViolationClassRate is reported by protocol layers (pkg/wshandler)
	// for a message refused by its class's bucket (a policy's message
	// classes).
	ViolationClassRate ViolationType = "class_rate"
)

// violationTypes lists every ViolationType, in a stable order
// (ViolationTypes).
var violationTypes = [...]ViolationType{
	ViolationConnectionRate, ViolationConcurrentConnections, ViolationMessageSize,
	ViolationMessageRate, ViolationBandwidth, ViolationBanned, ViolationStoreUnavailable,
	ViolationRoomRate, ViolationRoomFull, ViolationInvalidUTF8, ViolationClassRate,
}

// Violation describes one denied request. It never carries a message body.
type Violation struct {
	// Type is the kind of limit that was broken.
	Type ViolationType
	// Reason is the reason of the denying Decision.
	Reason Reason
	// Time is when the request was decided.
	Time time.Time
	// ClientID is the client that made the request.
	ClientID     string
	ConnectionID string // empty for connection-level violations
	Room         string // set by room layers
	// Size is the message size in bytes, for message_size and bandwidth.
	Size int64
	// Limit is the limit that was exceeded.
	Limit int64
	// Current is the observed value: open connections for
	// concurrent_connections, the message size for message_size; for
	// class_rate, the tokens the message would have brought its class
	// bucket to (the limit less what remained, plus the class's cost).
	Current int64
	// Remaining is what was left of the limit: tokens, or bytes for
	// bandwidth.
	Remaining int64
	// RetryAfter is the denying Decision's RetryAfter: zero when unknown
	// (a concurrent-connection cap), Never when no wait can help.
	RetryAfter time.Duration
	// Metadata is the connection's metadata, when it has any. Receivers
	// must not modify it.
	Metadata map[string]string
	// Class is the message class whose bucket refused the message, for
	// class_rate; empty otherwise.
	Class string
	// Layer is whose bucket of Class refused it ("connection", "user",
	// "address" or "room"), for class_rate; empty otherwise.
	Layer string
}

// ViolationSink receives violations. HandleViolation is called on the
// deciding goroutine, so it must return quickly: a sink that does I/O
// queues the violation and returns. A panic in HandleViolation is recovered
// and counted; it never changes a decision.
type ViolationSink interface {
	HandleViolation(Violation)
}

// ViolationFunc adapts a function to a ViolationSink.
type ViolationFunc func(Violation)

// HandleViolation calls f(v).
func (f ViolationFunc) HandleViolation(v Violation) { f(v) }

// report delivers v to sink, recovering and counting a panic.
func report(sink ViolationSink, v Violation, panics *atomic.Int64) {
	if sink == nil {
		return
	}
	defer func() {
		if recover() != nil {
			panics.Add(1)
		}
	}()
	sink.HandleViolation(v)
}

// Sinks returns a ViolationSink that hands every violation to each of
// sinks in turn, skipping nil ones; use it to give a Limiter several
// (an events.Publisher and an events.AutoBan, a metrics counter).
func Sinks(sinks ...ViolationSink) ViolationSink {
	var list []ViolationSink
	for _, s := range sinks {
		if s != nil {
			list = append(list, s)
		}
	}
	return multiSink(list)
}

type multiSink []ViolationSink

func (m multiSink) HandleViolation(v Violation) {
	for _, s := range m {
		s.HandleViolation(v)
	}
}
