package wshandler

import (
	"time"

	"github.com/ratethrottle/ratethrottle/pkg/limiter"
	"github.com/ratethrottle/ratethrottle/pkg/policy"
)

// PolicySource supplies the policy version in force. *policy.Watcher
// satisfies it; Current must be cheap, safe for concurrent use and never
// return nil.
type PolicySource interface {
	Current() *policy.Version
}

// MetaUser is the connection metadata key (Config.Metadata) of the
// signed-in user, whose class buckets all their connections share. The
// tier whose class limits apply is that of limiter.MetaTier, as for the
// connection limits.
const MetaUser = "user"

// CodeClassRateExceeded is the error code of a frame refused by its
// class's bucket in one layer; the error frame names the class and the
// layer.
const CodeClassRateExceeded ErrorCode = "class_rate_exceeded"

// serverType reports whether typ is the type of a frame only the server
// makes (joined, left, error). A client frame of such a type is never a
// class, whatever the policy names its classes: it is refused as
// unknown_type, so that no client makes its members receive what looks
// like a server's frame, or picks the class of one.
func serverType(typ FrameType) bool {
	switch typ {
	case TypeJoined, TypeLeft, TypeError:
		return true
	}
	return false
}

// policyClass returns the table in force and the class of a frame of type
// typ: a message frame's class is "message" (or the default class), any
// other type's is the class of exactly that name. It reports NoClass when
// no policy is set or the type names no class.
func (h *Handler) policyClass(typ FrameType) (*policy.Table, policy.ClassID) {
	if h.cfg.Policy == nil || serverType(typ) {
		return nil, policy.NoClass
	}
	t := h.cfg.Policy.Current().Table
	id := t.Class(string(typ))
	if typ != TypeMessage && id != policy.NoClass && t.Tier("").Class(id).Name != string(typ) {
		id = policy.NoClass // the default class stands in for unknown names only in message frames
	}
	return t, id
}

// takeClass takes the cost of a message of class id to room (empty outside
// a room: the room layer does not apply) from the class buckets. On a
// denial it has taken nothing and returns the error frame e completed.
func (c *Conn) takeClass(t *policy.Table, id policy.ClassID, room string, e errorInfo, now time.Time) (errorInfo, bool) {
	h := c.h
	res := t.Tier(c.meta[limiter.MetaTier])
	cl := res.Class(id)
	if cl == nil {
		return e, true
	}
	var rule *policy.RoomRule
	if room != "" {
		rule = t.Room(room)
	}
	sub := policy.Subject{Connection: c.id, User: c.meta[MetaUser], Address: c.client, Room: room}
	ch := policy.Checker{Shared: h.lim.Store()}
	d, ok, err := ch.Take(c.ctx(), res, rule, id, sub, now)
	if ok {
		return e, true
	}
	if err != nil {
		e.code = ErrorCode(limiter.ReasonStoreUnavailable)
		h.violate(limiter.Violation{Type: limiter.ViolationStoreUnavailable, Reason: limiter.ReasonStoreUnavailable,
			Time: now, ClientID: c.client, ConnectionID: c.id, Room: room, Metadata: c.meta})
		return e, false
	}
	e.code, e.retry, e.limit = CodeClassRateExceeded, d.RetryAfter, d.Limit
	e.class, e.layer = d.Class, d.Layer.String()
	h.violate(limiter.Violation{Type: limiter.ViolationClassRate, Reason: limiter.ReasonClassRateExceeded,
		Time: now, ClientID: c.client, ConnectionID: c.id, Room: room, Limit: d.Limit,
		Current: max(d.Limit-d.Remaining, 0) + cl.Cost, Remaining: d.Remaining, RetryAfter: d.RetryAfter,
		Metadata: c.meta, Class: e.class, Layer: e.layer})
	return e, false
}
