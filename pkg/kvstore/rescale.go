package kvstore

import (
	"math"
	"time"

	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

// Compile-time checks that a Store rescales its buckets on a live limit
// change (limiter.Limiter.SetTierLimits).
var (
	_ limiter.Rescaler    = (*Store)(nil)
	_ limiter.KeyRescaler = (*Store)(nil)
)

// Rescale implements limiter.Rescaler: every bucket of kind that this node
// holds under old is rescaled to new at now with limiter.RescaleBucket, so
// that it keeps its level as a fraction of the burst and is never refilled
// by the change. It returns the buckets of kind this node holds.
//
// Each node rescales only its own state, so a change applied on every node
// is applied once per bucket, not once per node (the package doc,
// "Live limit changes"): in Global mode its view, its own counter's
// spending and allowance and its copies of the other nodes' allowances,
// marking its counter for the next flush; in Strict mode the shared entry
// records the Spec it was written under and is rescaled by the first
// write under another one, and Rescale converts this node's lease and
// clears its cached denials; Local buckets, and the buckets decided while NATS is down, are
// the embedded MemoryStore's. Buckets held under another Spec (another
// tier's) are left alone here and rescaled from their own Spec at their
// next Take.
func (s *Store) Rescale(kind limiter.Kind, old, new limiter.Spec, now time.Time) int {
	if old == new {
		return 0
	}
	switch s.Mode(kind) {
	case Local:
		return s.local.Rescale(kind, old, new, now)
	case Strict:
		return s.rescaleStrict(kind, old, new, now)
	}
	kept := 0
	for i := range s.gsh {
		sh := &s.gsh[i]
		sh.mu.Lock()
		for k, e := range sh.m {
			if k.Kind != kind {
				continue
			}
			if e.spec == old {
				s.rescaleEntry(sh, e, new, now)
			}
			kept++
		}
		sh.mu.Unlock()
	}
	return kept
}

// RescaleKey implements limiter.KeyRescaler: the bucket key, if this node
// holds it under old, is rescaled to new at now as Rescale does. It
// reports whether it was. Calling it twice with the same Specs rescales
// once.
func (s *Store) RescaleKey(key limiter.Key, old, new limiter.Spec, now time.Time) bool {
	if old == new {
		return false
	}
	switch s.Mode(key.Kind) {
	case Local:
		return s.local.RescaleKey(key, old, new, now)
	case Strict:
		// The entry is rescaled by the next write under new (its Spec is
		// recorded in it); this node's lease is converted now.
		s.strict.mu.Lock()
		st := s.strict.byKey[key]
		s.strict.mu.Unlock()
		if st == nil {
			return false
		}
		st.mu.Lock()
		defer st.mu.Unlock()
		if st.spec != old {
			return false
		}
		st.respec(new)
		return true
	}
	sh := s.shardOf(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.m[key]
	if e == nil || e.spec != old {
		return false
	}
	s.rescaleEntry(sh, e, new, now)
	return true
}

// rescaleStrict converts this node's leases of its Strict buckets of kind
// held under old, clears their cached denials and rescales the buckets it
// decides alone while NATS is down. The shared entries are rescaled by
// their next write (strictVal.bucketUnder).
func (s *Store) rescaleStrict(kind limiter.Kind, old, new limiter.Spec, now time.Time) int {
	if s.cfg.FailMode == FailLocalShare {
		live := s.live.Load()
		old, new = shareSpec(old, live), shareSpec(new, live)
	}
	s.local.Rescale(kind, old, new, now)
	n := 0
	s.strict.mu.Lock()
	defer s.strict.mu.Unlock()
	for k, st := range s.strict.byKey {
		if k.Kind != kind {
			continue
		}
		n++
		st.mu.Lock()
		if st.spec == old {
			st.respec(new)
		}
		st.mu.Unlock()
	}
	return n
}

// rescaleEntry rescales e, a Global bucket held under e.spec, to spec at
// now: this node's view, its own spending and its fail-mode bucket keep
// their level as a fraction of the burst; its allowance, the allowance it
// last published and the allowances it sets aside for the other nodes are
// scaled by the ratio of the bursts. The allowance is renewed at the next
// Take and the counter is written at the next flush. The other nodes'
// cumulative spending is applied as it grows; this node's spending not yet
// published is converted to tokens of spec, and a reader converts growth
// published under another Spec than its own (applyRemote), so that
// spending in flight across the change counts as the same fraction on
// every node.
// Requires the shard's mu held.
func (s *Store) rescaleEntry(sh *gshard, e *gentry, spec limiter.Spec, now time.Time) {
	old := e.spec
	if old == spec {
		return
	}
	if spec.Unlimited() {
		// Nothing to keep: the bucket is full when a limit comes back.
		e.b, e.own, e.fail, e.allow = limiter.Bucket{}, limiter.Bucket{}, limiter.Bucket{}, 0
		s.markDirty(sh, e)
		return
	}
	live := s.live.Load()
	e.b = limiter.RescaleBucket(e.b, old, spec, now)
	e.own = limiter.RescaleBucket(e.own, old, spec, now)
	e.fail = limiter.RescaleBucket(e.fail, shareSpec(old, live), shareSpec(spec, live), now)
	f := scaleFactor(old, spec)
	if d := e.taken - e.flushed; d > 0 {
		// Spending not yet published goes out in tokens of spec, as the
		// readers count the counter's growth (rounded up).
		e.taken = e.flushed + int64(math.Ceil(float64(d)*f))
	}
	e.allow *= f
	e.pubHold *= f
	for _, r := range e.remote {
		r.reserved *= f
	}
	e.spec = spec
	e.gen = s.gen.Load() - 1 // renew at the next Take
	e.pubAt = 0              // publish the rescaled counter at the next flush
	s.markDirty(sh, e)
}

// scaleFactor is the ratio of to's burst to from's, 1 when either is
// unlimited.
func scaleFactor(from, to limiter.Spec) float64 {
	if from.Unlimited() || to.Unlimited() || from.Capacity() <= 0 {
		return 1
	}
	return float64(to.Capacity()) / float64(from.Capacity())
}
