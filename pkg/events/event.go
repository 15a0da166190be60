package events

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

// Version is the schema version this package writes and reads, the "v" of
// every event.
const Version = 1

// Type names a kind of event. Its values are stable and appear in the
// "type" field and in subjects.
type Type string

// The event types. Every violation type of the limiter has the type of the
// same name; TypeBan and TypeUnban report changes to the ban list.
const (
	TypeConnectionRate             = Type(limiter.ViolationConnectionRate)
	TypeConcurrentConnections      = Type(limiter.ViolationConcurrentConnections)
	TypeMessageSize                = Type(limiter.ViolationMessageSize)
	TypeMessageRate                = Type(limiter.ViolationMessageRate)
	TypeBandwidth                  = Type(limiter.ViolationBandwidth)
	TypeBanned                     = Type(limiter.ViolationBanned)
	TypeStoreUnavailable           = Type(limiter.ViolationStoreUnavailable)
	TypeRoomRate                   = Type(limiter.ViolationRoomRate)
	TypeRoomFull                   = Type(limiter.ViolationRoomFull)
	TypeInvalidUTF8                = Type(limiter.ViolationInvalidUTF8)
	TypeClassRate                  = Type(limiter.ViolationClassRate)
	TypeBan                   Type = "ban"
	TypeUnban                 Type = "unban"
)

// types lists every event type, in a stable order (Types).
var types = [...]Type{
	TypeConnectionRate, TypeConcurrentConnections, TypeMessageSize,
	TypeMessageRate, TypeBandwidth, TypeBanned, TypeStoreUnavailable,
	TypeRoomRate, TypeRoomFull, TypeInvalidUTF8, TypeClassRate, TypeBan, TypeUnban,
}

// IsViolation reports whether t is published on the violations subjects
// (every type except TypeBan and TypeUnban).
func (t Type) IsViolation() bool { return t != TypeBan && t != TypeUnban }

// Event is one event, in the JSON form every subscriber reads. It never
// carries a message body.
//
// Every field below is always present in the JSON except "until",
// "class" and "layer", which are present only when they are set. "retry_after_ms" is -1 when no wait can
// help; "observed" is the value that broke the limit (see docs/EVENTS.md
// for its meaning per type).
type Event struct {
	// V is the schema version, Version.
	V int `json:"v"`
	// ID is unique per event: a random per-process prefix and a sequence.
	ID string `json:"id"`
	// Time is when the limiter decided, in UTC.
	Time time.Time `json:"time"`
	// Node is the node that saw the violation or set the ban.
	Node string `json:"node"`
	// Type is the kind of event.
	Type Type `json:"type"`
	// Reason is the limiter's decision reason for a violation, or the
	// reason given for a ban.
	Reason string `json:"reason"`
	// Client is the client ID, raw (the subject carries its token).
	Client string `json:"client"`
	// Connection is the connection ID, empty for connection-level events.
	Connection string `json:"connection"`
	// Room is the room, set for room violations.
	Room string `json:"room"`
	// Limit is the limit that was exceeded; for an automatic ban, the
	// number of violations that triggers it.
	Limit int64 `json:"limit"`
	// Observed is the value that broke the limit.
	Observed int64 `json:"observed"`
	// RetryAfterMS is the wait, in milliseconds, after which the same
	// request would be allowed; for a ban, its duration (0 until lifted).
	RetryAfterMS int64 `json:"retry_after_ms"`
	// Until is when a ban ends, for ban and banned events with an end.
	Until time.Time `json:"until,omitzero"`
	// Metadata is the connection's metadata, or details of a ban. Empty
	// maps encode as {}.
	Metadata map[string]string `json:"metadata"`
	// Class is the message class that refused the message, for
	// class_rate events.
	Class string `json:"class,omitempty"`
	// Layer is whose bucket of the class refused it ("connection",
	// "user", "address" or "room"), for class_rate events.
	Layer string `json:"layer,omitempty"`
}

// FromViolation returns the event that reports v. It does not set ID or
// Node (the Publisher does) and allocates nothing: Metadata is shared
// with v.
func FromViolation(v limiter.Violation) Event {
	e := Event{
		V:          Version,
		Time:       v.Time,
		Type:       Type(v.Type),
		Reason:     string(v.Reason),
		Client:     v.ClientID,
		Connection: v.ConnectionID,
		Room:       v.Room,
		Limit:      v.Limit,
		Observed:   observed(v),
		Metadata:   v.Metadata,
		Class:      v.Class,
		Layer:      v.Layer,
	}
	e.RetryAfterMS = retryMS(v.RetryAfter)
	if v.Type == limiter.ViolationBanned && v.RetryAfter > 0 && v.RetryAfter != limiter.Never {
		e.Until = v.Time.Add(v.RetryAfter)
	}
	return e
}

// observed is the value that broke the limit: the count the limiter saw
// when it reports one (open connections, message size, room members), else
// the usage the request would have brought its bucket to: the limit minus
// what remained, plus the request (one, or the message size in bytes for
// bandwidth).
func observed(v limiter.Violation) int64 {
	if v.Current > 0 {
		return v.Current
	}
	if v.Limit <= 0 {
		return 0
	}
	req := int64(1)
	if v.Type == limiter.ViolationBandwidth {
		req = v.Size
	}
	used := max(v.Limit-v.Remaining, 0)
	return used + req
}

// retryMS converts a RetryAfter to whole milliseconds, rounded up so that
// waiting the advertised time is always enough; Never becomes -1.
func retryMS(d time.Duration) int64 {
	switch {
	case d == limiter.Never:
		return -1
	case d <= 0:
		return 0
	}
	return int64((d + time.Millisecond - 1) / time.Millisecond)
}

// Encode returns the JSON form of e, with UTC times and "v" set to
// Version if it is zero.
func Encode(e Event) ([]byte, error) {
	if e.V == 0 {
		e.V = Version
	}
	e.Time = e.Time.UTC()
	if !e.Until.IsZero() {
		e.Until = e.Until.UTC()
	}
	if e.Metadata == nil {
		e.Metadata = map[string]string{}
	}
	return json.Marshal(e)
}

// Decode parses an event. It returns ErrUnsupportedVersion for a "v" other
// than Version; unknown fields are ignored so that additions to version 1
// do not break readers.
func Decode(data []byte) (Event, error) {
	var e Event
	if err := json.Unmarshal(data, &e); err != nil {
		return Event{}, fmt.Errorf("events: decode: %w", err)
	}
	if e.V != Version {
		return Event{}, fmt.Errorf("%w: %d", ErrUnsupportedVersion, e.V)
	}
	return e, nil
}

// idGen makes event IDs: a random per-generator prefix and a sequence,
// unique across nodes and restarts with overwhelming probability.
type idGen struct {
	prefix string
	seq    atomic.Uint64
}

func newIDGen() *idGen {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return &idGen{prefix: hex.EncodeToString(b[:]) + "-"}
}

func (g *idGen) next() string {
	return g.prefix + strconv.FormatUint(g.seq.Add(1), 10)
}

// defaultNode is the node name used when a config leaves it empty.
func defaultNode() string {
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return "node"
}
