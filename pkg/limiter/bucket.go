package limiter

import (
	"math"
	"time"
)

// Never is the RetryAfter of a request that no amount of waiting can allow,
// such as one asking for more tokens than the bucket's burst.
const Never = time.Duration(math.MaxInt64)

// Spec describes a token bucket: Limit tokens refill evenly over Per, and
// the bucket holds at most Burst tokens. A Limit of zero (or less) means
// unlimited. A Burst of zero means Burst equals Limit. The zero Per means
// one minute, the unit of every limit in Limits.
type Spec struct {
	Limit int64
	Per   time.Duration
	Burst int64
}

// PerMinute returns the Spec of n tokens a minute with a burst of n.
func PerMinute(n int64) Spec { return Spec{Limit: n, Per: time.Minute} }

// Unlimited reports whether the spec imposes no limit.
func (s Spec) Unlimited() bool { return s.Limit <= 0 }

// Capacity returns the number of tokens a full bucket holds.
func (s Spec) Capacity() int64 {
	if s.Burst > 0 {
		return s.Burst
	}
	return s.Limit
}

func (s Spec) per() time.Duration {
	if s.Per <= 0 {
		return time.Minute
	}
	return s.Per
}

// shape is a limited Spec with its refill rate divided out both ways, so
// that a bucket's arithmetic multiplies: the store computes it before it
// takes a shard's lock, where the divisions overlap the lookup instead of
// adding to the time the lock is held.
type shape struct {
	capacity float64
	perNs    float64 // tokens refilled per nanosecond
	nsPer    float64 // nanoseconds per token
}

// shape returns the shape of a limited s.
func (s Spec) shape() shape {
	per, limit := float64(s.per()), float64(s.Limit)
	return shape{capacity: float64(s.Capacity()), perNs: limit / per, nsPer: per / limit}
}

// tokensFor returns the tokens that refill in d. The multiplication is done
// in float64, which cannot overflow for any duration and limit.
func (s shape) tokensFor(d int64) float64 { return float64(d) * s.perNs }

// durationFor returns the time in which tokens refill, rounded to the
// nearest nanosecond and capped at Never. Rounding to the nearest (rather
// than up) keeps float64 noise, far below a nanosecond, from adding a
// nanosecond; TakeAt admits a request whose wait rounds to zero.
func (s shape) durationFor(tokens float64) time.Duration {
	d, _ := s.durationNear(tokens)
	return d
}

// durationNear is durationFor, also reporting whether the unrounded time
// lies so near a half nanosecond that float64 noise may round it either
// way. Then the refill over the rounded time, computed afresh, may fall
// short of tokens by a hair, or cover them a nanosecond sooner; take checks
// such a wait exactly.
func (s shape) durationNear(tokens float64) (time.Duration, bool) {
	if tokens <= 0 {
		return 0, false
	}
	x := tokens * s.nsPer
	t, frac := roundPositive(x)
	if t >= float64(math.MaxInt64) || math.IsNaN(t) {
		return Never, false
	}
	return time.Duration(t), math.Abs(frac-0.5) < 1e-6+x*1e-12
}

// roundPositive is math.Round for x > 0 (NaN and +Inf pass through): the
// truncation is one instruction where math.Round takes apart the bits. It
// also returns x's fractional part.
func roundPositive(x float64) (rounded, frac float64) {
	t := math.Trunc(x)
	frac = x - t
	if frac >= 0.5 {
		t++
	}
	return t, frac
}

// Validate reports whether the spec is usable. Its error is a *FieldError
// naming "Limit", "Per" or "Burst".
func (s Spec) Validate() error { return s.validate("Limit", "Burst") }

func (s Spec) validate(limitField, burstField string) error {
	switch {
	case s.Limit < 0:
		return &FieldError{Field: limitField, Value: s.Limit, Reason: "must not be negative (0 means unlimited)"}
	case s.Burst < 0:
		return &FieldError{Field: burstField, Value: s.Burst, Reason: "must not be negative (0 means equal to the limit)"}
	case s.Per < 0:
		return &FieldError{Field: "Per", Value: s.Per, Reason: "must not be negative (0 means one minute)"}
	case s.Limit == 0 && s.Burst != 0:
		return &FieldError{Field: burstField, Value: s.Burst, Reason: "is set but the limit is 0 (unlimited)"}
	}
	return nil
}

// slack absorbs float64 rounding when whole tokens are counted.
const slack = 1e-12

// Result is the outcome of taking tokens from a bucket.
type Result struct {
	// OK reports whether the tokens were taken.
	OK bool
	// Uncertain reports a denial that comes only from a cluster store's
	// uncertainty about other nodes' spending: the bucket, as this node
	// sees it, holds the tokens, but other nodes hold (or may be spending)
	// them. It says nothing of the client's own excess. Stores that decide
	// exactly (the memory store, Strict mode) leave it false.
	Uncertain bool
	// Remaining is the number of whole tokens left after the call.
	Remaining int64
	// RetryAfter is, when OK is false, the exact wait after which the same
	// request would succeed if nothing else happened; Never if it cannot.
	RetryAfter time.Duration
}

// Bucket is the state of one token bucket. It stores how many tokens are
// missing from a full bucket and when it was last advanced, so the zero
// Bucket is full. The Spec is passed to every method rather than stored, so
// a Bucket is 16 bytes.
//
// A Bucket is not safe for concurrent use: callers guard it with a mutex.
// Time is a parameter; a time earlier than the bucket's last time is treated
// as that last time, so a clock that steps backwards never credits tokens
// twice.
type Bucket struct {
	used float64 // tokens missing from full; above capacity is debt
	last int64   // UnixNano of the last advance; 0 for a fresh bucket
}

// advance refills the bucket up to now. Time never moves backwards.
func (b *Bucket) advance(s shape, now int64) {
	if now <= b.last {
		return
	}
	if b.used > 0 {
		b.used -= s.tokensFor(now - b.last)
		if b.used < 0 {
			b.used = 0
		}
	}
	b.last = now
}

// TakeAt takes n tokens at now if the bucket holds them; otherwise it takes
// nothing and reports how long to wait.
func (b *Bucket) TakeAt(s Spec, now time.Time, n int64) Result {
	if s.Unlimited() {
		return Result{OK: true, Remaining: math.MaxInt64}
	}
	return b.take(s.shape(), now.UnixNano(), n)
}

// take is TakeAt at now in UnixNano.
func (b *Bucket) take(s shape, now, n int64) Result {
	b.advance(s, now)
	need := b.used + float64(n)
	if float64(n) > s.capacity {
		return Result{Remaining: floorTokens(s.capacity - b.used), RetryAfter: Never}
	}
	wait, near := s.durationNear(need - s.capacity)
	if wait == 0 {
		b.used = need
		return Result{OK: true, Remaining: floorTokens(s.capacity - need)}
	}
	if near {
		wait = b.exactWait(s, n, wait)
	}
	return Result{Remaining: floorTokens(s.capacity - b.used), RetryAfter: wait}
}

// exactWait returns the least wait, within two nanoseconds of w, after
// which the bucket (just advanced) admits n tokens as take computes it, so
// that waiting exactly the returned time admits and a nanosecond less does
// not (TestBucketRetryAfterExact).
func (b *Bucket) exactWait(s shape, n int64, w time.Duration) time.Duration {
	admits := func(w time.Duration) bool {
		c := *b
		c.advance(s, b.last+int64(w))
		return s.durationFor(c.used+float64(n)-s.capacity) == 0
	}
	for i := 0; i < 2 && w > 1 && admits(w-1); i++ {
		w--
	}
	for i := 0; i < 2 && !admits(w); i++ {
		w++
	}
	return w
}

// RefundAt gives back n tokens taken earlier, never filling past full.
func (b *Bucket) RefundAt(s Spec, now time.Time, n int64) {
	if s.Unlimited() {
		return
	}
	b.refund(s.shape(), now.UnixNano(), n)
}

// refund is RefundAt at now in UnixNano.
func (b *Bucket) refund(s shape, now, n int64) {
	b.advance(s, now)
	b.used -= float64(n)
	if b.used < 0 {
		b.used = 0
	}
}

// DebitAt takes n tokens unconditionally. The bucket may go into debt
// (below empty); the debt refills like any deficit. Cluster stores use it
// to apply consumption that other nodes have already admitted.
func (b *Bucket) DebitAt(s Spec, now time.Time, n float64) {
	if s.Unlimited() {
		return
	}
	b.debit(s.shape(), now.UnixNano(), n)
}

// debit is DebitAt at now in UnixNano.
func (b *Bucket) debit(s shape, now int64, n float64) {
	b.advance(s, now)
	b.used += n
}

// TokensAt returns the tokens the bucket holds at now, negative when in
// debt. It does not change the bucket.
func (b *Bucket) TokensAt(s Spec, now time.Time) float64 {
	if s.Unlimited() {
		return float64(s.Capacity()) - b.used
	}
	c := *b
	c.advance(s.shape(), now.UnixNano())
	return float64(s.Capacity()) - c.used
}

// FullAt returns the time at which the bucket will be full again if nothing
// is taken; a full bucket returns a time no later than its last use.
func (b *Bucket) FullAt(s Spec) time.Time {
	if s.Unlimited() {
		return time.Unix(0, b.last)
	}
	return time.Unix(0, b.fullAt(s.shape()))
}

// fullAt is FullAt in UnixNano.
func (b *Bucket) fullAt(s shape) int64 {
	if b.used <= 0 {
		return b.last
	}
	d := s.durationFor(b.used)
	if d == Never || b.last > math.MaxInt64-int64(d) {
		return math.MaxInt64
	}
	return b.last + int64(d)
}

func floorTokens(t float64) int64 {
	if t <= 0 {
		return 0
	}
	if t >= float64(math.MaxInt64) {
		return math.MaxInt64
	}
	return int64(t * (1 + slack))
}
