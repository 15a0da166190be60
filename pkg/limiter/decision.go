package limiter

import (
	"slices"
	"time"
)

// Reason says why a Decision was taken. Its string values are stable: they
// appear in error frames, events, logs and metrics.
type Reason string

// The reasons of every decision.
const (
	ReasonOK                     Reason = "ok"
	ReasonConnectionRateExceeded Reason = "connection_rate_exceeded"
	ReasonTooManyConnections     Reason = "too_many_connections"
	ReasonMessageTooLarge        Reason = "message_too_large"
	ReasonRateLimitExceeded      Reason = "rate_limit_exceeded"
	ReasonBandwidthExceeded      Reason = "bandwidth_exceeded"
	ReasonConnectionNotFound     Reason = "connection_not_found"
	ReasonBanned                 Reason = "banned"
	ReasonRoomRateExceeded       Reason = "room_rate_exceeded"
	ReasonRoomFull               Reason = "room_full"
	ReasonStoreUnavailable       Reason = "store_unavailable"
	// ReasonInvalidUTF8 is reported by protocol layers (pkg/wshandler)
	// for a text frame whose bytes are not valid UTF-8.
	ReasonInvalidUTF8 Reason = "invalid_utf8"
	// ReasonClassRateExceeded is reported by protocol layers
	// (pkg/wshandler) for a message refused by its class's bucket.
	ReasonClassRateExceeded Reason = "class_rate_exceeded"
)

// Reasons returns every Reason, in a stable order, in a new slice that the
// caller may change.
func Reasons() []Reason { return slices.Clone(reasons[:]) }

// ViolationTypes returns every ViolationType, in a stable order, in a new
// slice that the caller may change; code that counts violations by type
// sizes its counters by it.
func ViolationTypes() []ViolationType { return slices.Clone(violationTypes[:]) }

// reasons lists every Reason; Statistics counts denials in its order.
var reasons = [...]Reason{
	ReasonOK, ReasonConnectionRateExceeded, ReasonTooManyConnections,
	ReasonMessageTooLarge, ReasonRateLimitExceeded, ReasonBandwidthExceeded,
	ReasonConnectionNotFound, ReasonBanned, ReasonRoomRateExceeded,
	ReasonRoomFull, ReasonStoreUnavailable, ReasonInvalidUTF8, ReasonClassRateExceeded,
}

// Decision is the answer to a connection or message check.
type Decision struct {
	// Allowed reports whether the request may proceed.
	Allowed bool
	// Reason is ReasonOK when allowed, otherwise why not.
	Reason Reason
	// RetryAfter is the exact wait after which the same request would be
	// allowed if nothing else happened; zero when allowed or unknown (a
	// concurrent-connection cap waits for a disconnect, not for time);
	// Never when no wait can help.
	RetryAfter time.Duration
	// Limit is the limit of the bucket or cap that decided.
	Limit int64
	// Remaining is what is left of that limit after the decision: tokens
	// of the bucket, or bytes for a bandwidth denial.
	Remaining int64
	// MaxSize is the maximum message size, set on message_too_large.
	MaxSize int64
	// Uncertain reports a denial that came only from the cluster's
	// uncertainty (Result.Uncertain), not from the client's own excess: a
	// caller that closes clients after repeated denials should not count
	// it.
	Uncertain bool
}

// allow returns an allowed Decision for a limit with remaining tokens.
func allow(limit, remaining int64) Decision {
	return Decision{Allowed: true, Reason: ReasonOK, Limit: limit, Remaining: remaining}
}

// deny returns a denial of reason for a bucket Result.
func deny(reason Reason, limit int64, r Result) Decision {
	return Decision{Reason: reason, Limit: limit, Remaining: r.Remaining, RetryAfter: r.RetryAfter, Uncertain: r.Uncertain}
}
