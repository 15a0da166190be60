package wshandler

import (
	"context"
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
	if c.resTab != t { // a new policy version: look the tier up once
		res := t.Tier(c.meta[limiter.MetaTier])
		c.classes.rescale(c.res, res, now)
		h.syncShared(c, t, res, c.roomNames(), true, now)
		c.resTab, c.res = t, res
	}
	res := c.res
	cl := res.Class(id)
	if cl == nil {
		return e, true
	}
	var rule *policy.RoomRule
	if room != "" {
		rule = t.Room(room)
	}
	sub := policy.Subject{Connection: c.id, User: c.user, Address: c.client, Room: room}
	ch := policy.Checker{Local: &c.classes, Shared: h.lim.Store()}
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

// refundClass gives back what an allowed takeClass of class id to room
// took, for a check after it that refuses the frame (a join the room
// refuses).
func (c *Conn) refundClass(t *policy.Table, id policy.ClassID, room string, now time.Time) {
	var rule *policy.RoomRule
	if room != "" {
		rule = t.Room(room)
	}
	ch := policy.Checker{Local: &c.classes, Shared: c.h.lim.Store()}
	ch.Refund(c.ctx(), c.res, rule, id, policy.Subject{Connection: c.id, User: c.user, Address: c.client, Room: room}, now)
}

// connBuckets are a connection's own class buckets, the policy's
// connection layer, by class name: the Checker's Local store of the
// connection's class checks. They live with the connection, as the
// Limiter's per-connection buckets do, so that they never reach a cluster
// store; the connection's read goroutine alone uses them, so they need no
// lock. A connection has a bucket for each class it has sent; those of
// its first two classes are in the connection itself, which a message
// reads anyway, so that they cost no further cache miss.
type connBuckets struct {
	first [2]connBucket
	more  []connBucket
}

type connBucket struct {
	class string // empty for an unused slot of first (class names are not)
	b     limiter.Bucket
}

var _ limiter.Store = (*connBuckets)(nil)

// bucket returns the bucket of class, adding it on first use.
func (s *connBuckets) bucket(class string) *limiter.Bucket {
	for i := range s.first {
		cb := &s.first[i]
		if cb.class == "" {
			cb.class = class
		}
		if cb.class == class {
			return &cb.b
		}
	}
	for i := range s.more {
		if s.more[i].class == class {
			return &s.more[i].b
		}
	}
	s.more = append(s.more, connBucket{class: class})
	return &s.more[len(s.more)-1].b
}

// rescale carries the buckets from the class limits old (nil for none
// yet) to new at now with limiter.RescaleBucket: each keeps the fraction
// of its class's burst it held, so that a policy change never refills
// one. The read goroutine applies it itself, at the connection's first
// class check under the new version (until then the bucket refilled at
// the old rate, the one it was under), so that the buckets need no lock.
// A class that is gone, or unlimited, in either version leaves a full
// bucket.
func (s *connBuckets) rescale(old, new *policy.Resolved, now time.Time) {
	if old == nil || old == new {
		return
	}
	re := func(cb *connBucket) {
		if cb.class != "" {
			cb.b = limiter.RescaleBucket(cb.b, connSpec(old, cb.class), connSpec(new, cb.class), now)
		}
	}
	for i := range s.first {
		re(&s.first[i])
	}
	for i := range s.more {
		re(&s.more[i])
	}
}

// connSpec returns the connection layer's Spec of the class named class
// in r, unlimited when r has no such class.
func connSpec(r *policy.Resolved, class string) limiter.Spec {
	for i := range r.Classes {
		if r.Classes[i].Name == class {
			return r.Classes[i].Specs[policy.LayerConnection]
		}
	}
	return limiter.Spec{}
}

// Take implements limiter.Store for the bucket of key.Scope (the class).
func (s *connBuckets) Take(_ context.Context, key limiter.Key, spec limiter.Spec, now time.Time, n int64) (limiter.Result, error) {
	return s.bucket(key.Scope).TakeAt(spec, now, n), nil
}

// Refund implements limiter.Store.
func (s *connBuckets) Refund(_ context.Context, key limiter.Key, spec limiter.Spec, now time.Time, n int64) error {
	s.bucket(key.Scope).RefundAt(spec, now, n)
	return nil
}
