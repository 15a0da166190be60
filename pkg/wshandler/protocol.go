package wshandler

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

// FrameType is the "type" of a frame of the built-in room protocol
// (docs/PROTOCOL.md).
type FrameType string

// Frame types of the built-in room protocol.
const (
	TypeJoin    FrameType = "join"
	TypeLeave   FrameType = "leave"
	TypeMessage FrameType = "message"
	TypeJoined  FrameType = "joined"
	TypeLeft    FrameType = "left"
	TypeError   FrameType = "error"
)

// ErrorCode is the "error" of an error frame of the room protocol: one of
// the Code constants, or, for a denial by a limit, the limiter.Reason
// (rate_limit_exceeded, room_rate_exceeded, room_full, ...).
type ErrorCode string

// Error codes of error frames that are not limiter reasons.
const (
	CodeInvalidFrame ErrorCode = "invalid_frame"  // not a JSON object of a known shape
	CodeUnknownType  ErrorCode = "unknown_type"   // a "type" the server does not know
	CodeInvalidRoom  ErrorCode = "invalid_room"   // empty, too long, not UTF-8 or has control characters
	CodeNotMember    ErrorCode = "not_member"     // leave or message for a room not joined
	CodeAlreadyIn    ErrorCode = "already_member" // join of a room already joined
	CodeTooManyRooms ErrorCode = "too_many_rooms" // the connection's or the node's room cap
	CodeUnavailable  ErrorCode = "unavailable"    // the broker could not subscribe
	CodeInvalidName  ErrorCode = "invalid_name"   // a join name that is not 1 to 32 printable characters
	CodeNameTaken    ErrorCode = "name_taken"     // a join name another member of the room has
	// CodeUnauthenticated refuses a connection whose KeyFunc returned
	// ErrUnauthenticated (with RejectWithClose; else HTTP 401).
	CodeUnauthenticated ErrorCode = "unauthenticated"
)

// MaxJoinNameRunes caps a join name, in characters (runes).
const MaxJoinNameRunes = 32

// maxRefLength caps the "id" a client may attach to a frame.
const maxRefLength = 64

// frame is a decoded client frame.
type frame struct {
	Type FrameType       `json:"type"`
	Room string          `json:"room"`
	ID   string          `json:"id"`
	Name *string         `json:"name"` // join only; nil when absent
	Data json.RawMessage `json:"data"`
}

var errFrame = errors.New("wshandler: invalid frame")

// decodeFrame decodes and checks a client frame of the room protocol. It
// never panics; any malformed input returns errFrame, with the frame's
// "id" kept when the frame is a JSON object whose id is acceptable, so
// that the error can echo it.
func decodeFrame(b []byte) (frame, error) {
	var f frame
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '{' {
		return frame{}, errFrame
	}
	var ok bool
	if f, ok = decodeFrameFast(b); !ok {
		f = frame{}
		if err := json.Unmarshal(b, &f); err != nil {
			return frame{}, errFrame
		}
	}
	if len(f.ID) > maxRefLength {
		return frame{}, errFrame
	}
	if f.Type == "" {
		return frame{ID: f.ID}, errFrame
	}
	if f.Type == TypeMessage && (len(f.Data) == 0 || string(f.Data) == "null") {
		return frame{ID: f.ID}, errFrame
	}
	return f, nil
}

// checkRoomName reports why name cannot be a room name, or nil.
func checkRoomName(name string, maxLen int) error {
	switch {
	case name == "":
		return errors.New("room name is empty")
	case len(name) > maxLen:
		return errors.New("room name is longer than " + strconv.Itoa(maxLen) + " bytes")
	case !utf8.ValidString(name):
		return errors.New("room name is not UTF-8")
	}
	for _, r := range name {
		if unicode.IsControl(r) || r == utf8.RuneError {
			return errors.New("room name has a control character")
		}
	}
	return nil
}

// checkJoinName returns the join name s with leading and trailing white
// space removed, and whether it is acceptable: 1 to MaxJoinNameRunes
// characters, none of them a control character, a format character other
// than the zero-width joiner of emoji sequences (so no bidirectional
// overrides), a line or paragraph separator, or U+FFFD (what a bad escape
// decodes to).
func checkJoinName(s string) (string, bool) {
	s = strings.TrimSpace(s)
	if s == "" || !utf8.ValidString(s) || utf8.RuneCountInString(s) > MaxJoinNameRunes {
		return "", false
	}
	for _, r := range s {
		if unicode.IsControl(r) || r == utf8.RuneError || (unicode.Is(unicode.Cf, r) && r != '\u200d') ||
			unicode.In(r, unicode.Zl, unicode.Zp) {
			return "", false
		}
	}
	return s, true
}

// nameKey is the key under which a room holds a join name: names that
// differ only in case are one name.
func nameKey(name string) string { return strings.ToLower(name) }

// appendJSONString appends s to b as a JSON string. Invalid UTF-8 becomes
// U+FFFD, as encoding/json does.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c < 0x20:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
		default:
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}

// messageFrame returns the frame that delivers data to a room's members:
// from is the sender's connection ID and name its join name (nil for
// none), both as JSON strings.
func messageFrame(roomJSON, fromJSON, nameJSON []byte, data []byte) []byte {
	return relayFrame(TypeMessage, roomJSON, fromJSON, nameJSON, data)
}

// relayFrame is messageFrame for a frame of type typ, which is plain JSON
// string content (a policy class name: letters, digits, '_', '-', '.').
// Empty data (a class frame may omit it) is relayed as null.
func relayFrame(typ FrameType, roomJSON, fromJSON, nameJSON []byte, data []byte) []byte {
	if len(data) == 0 {
		data = []byte("null")
	}
	b := make([]byte, 0, len(`{"type":"","room":,"from":,"name":,"data":}`)+len(typ)+len(roomJSON)+len(fromJSON)+
		len(nameJSON)+len(data))
	b = append(b, `{"type":"`...)
	b = append(b, typ...)
	b = append(b, `","room":`...)
	b = append(b, roomJSON...)
	b = append(b, `,"from":`...)
	b = append(b, fromJSON...)
	if nameJSON != nil {
		b = append(b, `,"name":`...)
		b = append(b, nameJSON...)
	}
	b = append(b, `,"data":`...)
	b = append(b, data...)
	return append(b, '}')
}

// joinedFrame returns the joined frame: the room, the joiner's connection
// ID and join name (nil for none) as JSON strings, and the frame's id.
func joinedFrame(roomJSON, connJSON, nameJSON []byte, ref string) []byte {
	b := make([]byte, 0, 64+len(roomJSON)+len(connJSON)+len(nameJSON)+len(ref))
	b = append(b, `{"type":"joined","room":`...)
	b = append(b, roomJSON...)
	b = append(b, `,"connection":`...)
	b = append(b, connJSON...)
	if nameJSON != nil {
		b = append(b, `,"name":`...)
		b = append(b, nameJSON...)
	}
	if ref != "" {
		b = append(b, `,"id":`...)
		b = appendJSONString(b, ref)
	}
	return append(b, '}')
}

// replyFrame returns a left frame (or any frame of a type, room and id).
func replyFrame(typ FrameType, room, ref string) []byte {
	b := make([]byte, 0, 32+len(room)+len(ref))
	b = append(b, `{"type":`...)
	b = appendJSONString(b, string(typ))
	b = append(b, `,"room":`...)
	b = appendJSONString(b, room)
	if ref != "" {
		b = append(b, `,"id":`...)
		b = appendJSONString(b, ref)
	}
	return append(b, '}')
}

// errorInfo is the content of an error frame.
type errorInfo struct {
	code  ErrorCode
	room  string
	ref   string
	retry time.Duration
	limit int64
	max   int64
	// class and layer name the class bucket that refused the frame
	// (CodeClassRateExceeded).
	class, layer string
	// uncertain marks a denial caused only by the cluster's uncertainty
	// (limiter.Decision.Uncertain): it never counts toward MaxDenials.
	uncertain bool
}

// errorFromDecision returns the error frame content of a denial.
func errorFromDecision(d limiter.Decision) errorInfo {
	e := errorInfo{code: ErrorCode(d.Reason), retry: d.RetryAfter, limit: d.Limit, uncertain: d.Uncertain}
	if d.Reason == limiter.ReasonMessageTooLarge {
		e.max = d.MaxSize
	}
	return e
}

// retryMillis rounds d up to whole milliseconds; Never and negative
// durations give -1 (omitted).
func retryMillis(d time.Duration) int64 {
	if d <= 0 || d == limiter.Never {
		return -1
	}
	return int64((d + time.Millisecond - 1) / time.Millisecond)
}

// appendErrorFrame appends the JSON error frame of e to b.
func appendErrorFrame(b []byte, e errorInfo) []byte {
	b = append(b, `{"type":"error","error":`...)
	b = appendJSONString(b, string(e.code))
	if e.room != "" {
		b = append(b, `,"room":`...)
		b = appendJSONString(b, e.room)
	}
	if e.ref != "" {
		b = append(b, `,"id":`...)
		b = appendJSONString(b, e.ref)
	}
	if ms := retryMillis(e.retry); ms >= 0 {
		b = append(b, `,"retry_after_ms":`...)
		b = strconv.AppendInt(b, ms, 10)
	}
	if e.limit > 0 {
		b = append(b, `,"limit":`...)
		b = strconv.AppendInt(b, e.limit, 10)
	}
	if e.max > 0 {
		b = append(b, `,"max_size":`...)
		b = strconv.AppendInt(b, e.max, 10)
	}
	if e.class != "" {
		b = append(b, `,"class":`...)
		b = appendJSONString(b, e.class)
		b = append(b, `,"layer":`...)
		b = appendJSONString(b, e.layer)
	}
	return append(b, '}')
}
