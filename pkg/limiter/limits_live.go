package limiter

import (
	"errors"
	"fmt"
	"sort"
	"time"
)

// liveLimits are the limits in force with their specs worked out once, so
// that a decision reads one pointer for all of them. A SetLimits swaps the
// whole value; a decision racing it uses either the old or the new one,
// never a mix.
type liveLimits struct {
	limits                      Limits
	connSpec, msgSpec, byteSpec Spec
	tiers                       map[string]*liveLimits // nil without tiers
	// top is the value the Limiter held when this one was in force: the
	// base limits themselves, or those whose tiers hold this one. A
	// connection's cached tier limits are current while their top is.
	top *liveLimits
}

func newLiveLimits(l Limits) *liveLimits {
	return &liveLimits{limits: l, connSpec: l.ConnectionSpec(), msgSpec: l.MessageSpec(), byteSpec: l.ByteSpec()}
}

// MetaTier is the connection metadata key whose value names the
// connection's tier: its limits are the tier's (see SetTierLimits), or the
// base limits when the Limiter has no such tier.
const MetaTier = "tier"

// of returns the limits of tier, the base limits for the empty or an
// unknown tier. It allocates nothing.
func (lv *liveLimits) of(tier string) *liveLimits {
	if tier != "" && lv.tiers != nil {
		if t := lv.tiers[tier]; t != nil {
			return t
		}
	}
	return lv
}

// newTieredLimits validates base and tiers and returns them as one value.
func newTieredLimits(base Limits, tiers map[string]Limits) (*liveLimits, error) {
	if err := base.Validate(); err != nil {
		return nil, err
	}
	lv := newLiveLimits(base)
	lv.top = lv
	if len(tiers) == 0 {
		return lv, nil
	}
	lv.tiers = make(map[string]*liveLimits, len(tiers))
	for name, t := range tiers {
		if err := t.Validate(); err != nil {
			return nil, fmt.Errorf("tier %q: %w", name, err)
		}
		if t.MessageScope != base.MessageScope {
			return nil, fmt.Errorf("tier %q: %w", name, ErrScopeChange)
		}
		lv.tiers[name] = newLiveLimits(t)
		lv.tiers[name].top = lv
	}
	return lv, nil
}

// ErrScopeChange is returned by SetLimits for limits whose MessageScope
// differs from the Limiter's: the scope says where message buckets live,
// and moving them between connections and the Store would refill them.
var ErrScopeChange = errors.New("limiter: the message scope cannot change at run time")

// Rescaler is implemented by a Store that can rescale the buckets it holds
// when their Spec changes. MemoryStore and the cluster store (pkg/kvstore)
// implement it.
type Rescaler interface {
	// Rescale rescales every bucket of kind (whatever its ID and scope)
	// from old to new at now with RescaleBucket and returns how many it
	// holds after the change. A Store that records the Spec of each
	// bucket may leave those held under another Spec than old.
	Rescale(kind Kind, old, new Spec, now time.Time) int
}

// KeyRescaler is implemented by a Store that can rescale one bucket when
// its Spec changes. SetTierLimits uses it when the buckets of one kind
// change differently by tier, so that Rescaler, which rescales every
// bucket of a kind alike, cannot be used. MemoryStore implements it.
type KeyRescaler interface {
	// RescaleKey rescales the bucket key from old to new at now with
	// RescaleBucket and reports whether the Store held it.
	RescaleKey(key Key, old, new Spec, now time.Time) bool
}

// spec returns the Spec of the Store buckets of kind under lv.
func (lv *liveLimits) spec(kind Kind) Spec {
	switch kind {
	case KindConnectionRate:
		return lv.connSpec
	case KindMessages:
		return lv.msgSpec
	}
	return lv.byteSpec
}

// tierNames returns "" (the base limits) and the names of the tiers of a
// and b, sorted.
func tierNames(a, b *liveLimits) []string {
	names := []string{""}
	for name := range a.tiers {
		names = append(names, name)
	}
	for name := range b.tiers {
		if a.tiers[name] == nil {
			names = append(names, name)
		}
	}
	sort.Strings(names[1:])
	return names
}

// rescaleStore rescales the Store's buckets from the limits of old to
// those of nl at now (see SetTierLimits).
func (l *Limiter) rescaleStore(old, nl *liveLimits, now time.Time) {
	kinds := []Kind{KindConnectionRate}
	if nl.limits.MessageScope == PerClient {
		kinds = append(kinds, KindMessages, KindBytes)
	}
	groups := tierNames(old, nl)
	for _, kind := range kinds {
		o, n := old.spec(kind), nl.spec(kind)
		uniform := true
		for _, g := range groups[1:] {
			if old.of(g).spec(kind) != o || nl.of(g).spec(kind) != n {
				uniform = false
				break
			}
		}
		if uniform {
			if r, ok := l.store.(Rescaler); ok && o != n {
				r.Rescale(kind, o, n, now)
			}
			continue
		}
		// The tiers change differently and the Store's buckets of kind
		// do not say whose tier shaped them: rescale those of the clients
		// connected here, each once, with its tier's Specs.
		kr, ok := l.store.(KeyRescaler)
		if !ok {
			continue
		}
		done := make(map[string]struct{})
		l.reg.each(func(c *conn) {
			if _, seen := done[c.client]; seen {
				return
			}
			done[c.client] = struct{}{}
			if o, n := old.of(c.tier).spec(kind), nl.of(c.tier).spec(kind); o != n {
				kr.RescaleKey(Key{Kind: kind, ID: c.client}, o, n, now)
			}
		})
	}
}

// SetLimits replaces the limits in force, for every decision from its
// return on, without closing or forgetting a connection, and removes the
// tiers; it is SetTierLimits(lim, nil).
func (l *Limiter) SetLimits(lim Limits) error { return l.SetTierLimits(lim, nil) }

// SetTierLimits replaces the base limits and the tiers' limits in force,
// for every decision from its return on, without closing or forgetting a
// connection. A connection whose metadata names a tier (MetaTier) at
// Connect is limited by that tier's Limits, else by base. It is safe for
// concurrent use with every other method.
//
// Buckets keep their level: each bucket of a changed rate is rescaled with
// RescaleBucket, so it holds the same fraction of the new burst as it held
// of the old one and is never refilled by the change. That covers the
// buckets of the open connections (PerConnection scope, each with its
// tier's old and new limits) and the connection-rate and PerClient buckets
// in the Store:
//
//   - of a kind whose Spec changes alike in the base limits and every tier
//     (always so without tiers), every bucket of the kind, when the Store
//     implements Rescaler;
//   - of a kind whose Spec changes differently by tier, the buckets of the
//     clients with a connection open on this Limiter, each once, with its
//     tier's old and new Spec, when the Store implements KeyRescaler (a
//     client connected with two tiers is rescaled by one of them).
//
// MemoryStore and the cluster store (pkg/kvstore) implement both. Other
// buckets (a disconnected client's, in the second case, or every bucket of
// a Store implementing neither) keep the state they hold and get the new
// Spec at their next Take: a Bucket keeps the tokens it misses, so a
// larger burst adds the difference and a smaller one may leave the bucket
// empty or in debt, which refills at the new rate. The cluster store
// records the Spec of each bucket it holds and rescales such a bucket from
// it at that Take instead.
//
// A new MaxConcurrentConnections applies to the next Connect; connections
// open beyond a lowered cap stay open. A new MaxMessageSize applies to the
// next message. Invalid limits return the validation error and change
// nothing, as does a MessageScope other than the Limiter's, in base or a
// tier (ErrScopeChange).
func (l *Limiter) SetTierLimits(base Limits, tiers map[string]Limits) error {
	nl, err := newTieredLimits(base, tiers)
	if err != nil {
		return err
	}
	l.liveMu.Lock()
	defer l.liveMu.Unlock()
	old := l.live.Load()
	if base.MessageScope != old.limits.MessageScope {
		return ErrScopeChange
	}
	l.live.Store(nl)
	now := l.now()
	l.rescaleStore(old, nl, now)
	if base.MessageScope == PerConnection {
		l.reg.each(func(c *conn) {
			o, n := old.of(c.tier), nl.of(c.tier)
			if o.msgSpec == n.msgSpec && o.byteSpec == n.byteSpec {
				return
			}
			c.mu.Lock()
			c.msgs = RescaleBucket(c.msgs, o.msgSpec, n.msgSpec, now)
			c.bytes = RescaleBucket(c.bytes, o.byteSpec, n.byteSpec, now)
			c.mu.Unlock()
		})
	}
	return nil
}

// ConnectionLimits returns the limits that apply to connection connID now
// (its tier's or the base limits), and false for an unknown connection.
func (l *Limiter) ConnectionLimits(connID string) (Limits, bool) {
	c := l.reg.get(connID)
	if c == nil {
		return Limits{}, false
	}
	return l.live.Load().of(c.tier).limits, true
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
