package limiter

import (
	"errors"
	"time"
)

// liveLimits are the limits in force with their specs worked out once, so
// that a decision reads one pointer for all of them. A SetLimits swaps the
// whole value; a decision racing it uses either the old or the new one,
// never a mix.
type liveLimits struct {
	limits                      Limits
	connSpec, msgSpec, byteSpec Spec
}

func newLiveLimits(l Limits) *liveLimits {
	return &liveLimits{limits: l, connSpec: l.ConnectionSpec(), msgSpec: l.MessageSpec(), byteSpec: l.ByteSpec()}
}

// ErrScopeChange is returned by SetLimits for limits whose MessageScope
// differs from the Limiter's: the scope says where message buckets live,
// and moving them between connections and the Store would refill them.
var ErrScopeChange = errors.New("limiter: the message scope cannot change at run time")

// Rescaler is implemented by a Store that can rescale the buckets it holds
// when their Spec changes. MemoryStore implements it.
type Rescaler interface {
	// Rescale rescales every bucket of kind (whatever its ID and scope)
	// from old to new at now with RescaleBucket and returns how many it
	// holds after the change.
	Rescale(kind Kind, old, new Spec, now time.Time) int
}

// SetLimits replaces the limits in force, for every decision from its
// return on, without closing or forgetting a connection. It is safe for
// concurrent use with every other method.
//
// Buckets keep their level: each bucket of a changed rate is rescaled with
// RescaleBucket, so it holds the same fraction of the new burst as it held
// of the old one and is never refilled by the change. That covers the
// buckets of the open connections (PerConnection scope) and, when the
// Store implements Rescaler (MemoryStore does), the connection-rate and
// PerClient buckets in the Store. A Store that does not implement it keeps
// the state it holds and applies the new Spec to it at the next Take: a
// Bucket keeps the tokens it misses, so a larger burst adds the
// difference and a smaller one may leave the bucket empty or in debt,
// which refills at the new rate.
//
// A new MaxConcurrentConnections applies to the next Connect; connections
// open beyond a lowered cap stay open. A new MaxMessageSize applies to the
// next message. Invalid limits return the validation error and change
// nothing, as does a different MessageScope (ErrScopeChange).
func (l *Limiter) SetLimits(lim Limits) error {
	if err := lim.Validate(); err != nil {
		return err
	}
	l.liveMu.Lock()
	defer l.liveMu.Unlock()
	old := l.live.Load()
	if lim.MessageScope != old.limits.MessageScope {
		return ErrScopeChange
	}
	nl := newLiveLimits(lim)
	l.live.Store(nl)
	now := l.now()
	if r, ok := l.store.(Rescaler); ok {
		rescale := func(kind Kind, o, n Spec) {
			if o != n {
				r.Rescale(kind, o, n, now)
			}
		}
		rescale(KindConnectionRate, old.connSpec, nl.connSpec)
		if lim.MessageScope == PerClient {
			rescale(KindMessages, old.msgSpec, nl.msgSpec)
			rescale(KindBytes, old.byteSpec, nl.byteSpec)
		}
	}
	if lim.MessageScope == PerConnection && (old.msgSpec != nl.msgSpec || old.byteSpec != nl.byteSpec) {
		l.reg.each(func(c *conn) {
			c.mu.Lock()
			c.msgs = RescaleBucket(c.msgs, old.msgSpec, nl.msgSpec, now)
			c.bytes = RescaleBucket(c.bytes, old.byteSpec, nl.byteSpec, now)
			c.mu.Unlock()
		})
	}
	return nil
}

// RescaleLevel returns the level a bucket holding level tokens of oldBurst
// should hold under newBurst: the same fraction of the burst. An empty
// bucket stays empty, a full one full, a bucket in debt keeps its debt in
// proportion; the result never exceeds newBurst, so a change never gives a
// fresh burst.
//
// A burst of zero or less is an unlimited bucket: one that becomes limited
// starts full (it held no state), one that becomes unlimited holds nothing
// to keep, and RescaleLevel returns 0.
func RescaleLevel(level float64, oldBurst, newBurst int64) float64 {
	switch {
	case newBurst <= 0:
		return 0
	case oldBurst <= 0:
		return float64(newBurst)
	}
	return min(level*float64(newBurst)/float64(oldBurst), float64(newBurst))
}

// RescaleBucket returns b, shaped by old, rescaled to new at now with
// RescaleLevel: it holds at now the same fraction of new's burst as it
// held of old's, and refills at new's rate from then on. A change to or
// from an unlimited Spec returns the zero (full) Bucket.
func RescaleBucket(b Bucket, old, new Spec, now time.Time) Bucket {
	if old.Unlimited() || new.Unlimited() {
		return Bucket{}
	}
	level := RescaleLevel(b.TokensAt(old, now), old.Capacity(), new.Capacity())
	var nb Bucket
	nb.DebitAt(new, now, float64(new.Capacity())-level)
	return nb
}
