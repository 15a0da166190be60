package kvstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

// Strict mode: one exact bucket per key in KV, spent through leases.
//
// A Strict bucket's entry "s.<kind>.<scope>.<id>" holds the bucket, in
// which the tokens nodes hold in leases still count, and the leases: per
// node, the tokens reserved and not yet settled, and an expiry. A node
// that needs tokens renews its lease with one compare-and-swap: it settles
// what it spent of the old lease (debits it from the bucket), charges every
// expired lease of another node as spent in full, and reserves a new batch
// out of what is free (the bucket's tokens minus the other leases), sized
// to its own recent demand over leaseHorizon (capped at the bucket's refill
// over that time). It then decides locally,
// with no I/O, until the batch is spent. A node returns an unused lease
// when it goes idle or nears expiry (leaseLoop); a node that dies leaves
// its lease to expire, charged as spent.
//
// The bound: every token admitted was reserved from the bucket, the
// bucket refills only while it is below full counting the reserved tokens,
// and returns and expiries never credit more than was reserved; so the
// tokens admitted by time t never exceed what one exact bucket would admit
// by t. What a lease holds unused when demand moves elsewhere is the
// utilisation given up: at most one batch per node, and it returns within
// leaseIdle.

// Lease sizing and timing.
const (
	// leaseHorizon is the span of a node's recent demand it reserves at once.
	leaseHorizon = 20 * time.Millisecond
	// leaseIdle is how long a lease may go unused before it is returned.
	leaseIdle = 100 * time.Millisecond
	// leaseTTL is how long a lease lasts; others charge it as spent after.
	leaseTTL = 2 * time.Second
	// leaseMargin is how long before its expiry a node stops spending its
	// lease, for clocks a little apart.
	leaseMargin = 500 * time.Millisecond
)

// maxRenewWaits bounds the renewals by other decisions one Take waits for.
const maxRenewWaits = 8

var errConflict = fmt.Errorf("%w: %w", limiter.ErrUnavailable, ErrConflict)

// strictVersion is the first byte of a Strict entry, which records the
// Spec it was written under. Entries of the earlier forms (version 1, with
// no Spec, and marshalInt of the full time, with no leases) are read too;
// their bucket is taken to have the Spec of the node that reads it.
const (
	strictVersion   = 2
	strictVersionV1 = 1
)

// maxLeases bounds the leases decoded from one entry.
const maxLeases = 4096

// strictLease is one node's reservation in a Strict entry.
type strictLease struct {
	node string // node token
	inc  uint64 // incarnation of the node's run
	n    int64  // tokens reserved and not yet settled
	exp  int64  // the writer's UnixNano after which the lease is charged as spent
}

// strictVal is a Strict bucket's entry.
type strictVal struct {
	full   int64        // UnixNano at which the bucket, leases included, is full
	spec   limiter.Spec // the Spec it was written under; zero when not recorded
	leases []strictLease
}

// specOr returns the Spec the entry was written under, or spec for an
// entry that records none.
func (v *strictVal) specOr(spec limiter.Spec) limiter.Spec {
	if v.spec.Unlimited() {
		return spec
	}
	return v.spec
}

// bucketUnder returns the entry's bucket at now, shaped by spec, and its
// leases in tokens of spec. An entry written under another Spec (before a
// live limit change, or by a node still deciding under the previous one)
// is rescaled, bucket and leases alike, to hold the same fraction of
// spec's burst (limiter.RescaleBucket; a lease rounded up), and bucketUnder
// reports that it was. The first write under a new Spec records it, and
// the writes after it find it recorded: a change applied on every node
// rescales the entry once. Each node converts its own lease once
// (strictState.respec), so what it settles is in the entry's tokens.
func (v *strictVal) bucketUnder(spec limiter.Spec, now time.Time) (limiter.Bucket, []strictLease, bool) {
	es := v.specOr(spec)
	b := bucketAt(es, v.full, now)
	if es == spec {
		return b, v.leases, false
	}
	f := scaleFactor(es, spec)
	leases := make([]strictLease, len(v.leases))
	for i, l := range v.leases {
		l.n = int64(math.Ceil(float64(l.n) * f))
		leases[i] = l
	}
	return limiter.RescaleBucket(b, es, spec, now), leases, true
}

func (v *strictVal) marshal() []byte {
	b := binary.LittleEndian.AppendUint64([]byte{strictVersion}, uint64(v.full))
	b = binary.LittleEndian.AppendUint64(b, uint64(v.spec.Limit))
	b = binary.LittleEndian.AppendUint64(b, uint64(v.spec.Per))
	b = binary.LittleEndian.AppendUint64(b, uint64(v.spec.Burst))
	b = binary.AppendUvarint(b, uint64(len(v.leases)))
	for _, l := range v.leases {
		b = binary.AppendUvarint(b, uint64(len(l.node)))
		b = append(b, l.node...)
		b = binary.AppendUvarint(b, l.inc)
		b = binary.AppendUvarint(b, uint64(l.n))
		b = binary.LittleEndian.AppendUint64(b, uint64(l.exp))
	}
	return b
}

func (v *strictVal) unmarshal(b []byte) bool {
	*v = strictVal{}
	if full, ok := unmarshalInt(b); ok {
		v.full = full
		return true
	}
	if len(b) < 9 || (b[0] != strictVersion && b[0] != strictVersionV1) {
		return false
	}
	v.full = int64(binary.LittleEndian.Uint64(b[1:]))
	version := b[0]
	b = b[9:]
	if version == strictVersion {
		if len(b) < 24 {
			return false
		}
		u := func(i int) int64 { return int64(binary.LittleEndian.Uint64(b[8*i:])) }
		v.spec = limiter.Spec{Limit: u(0), Per: time.Duration(u(1)), Burst: u(2)}
		if v.spec.Validate() != nil {
			return false
		}
		b = b[24:]
	}
	cnt, k := binary.Uvarint(b)
	if k <= 0 || cnt > maxLeases {
		return false
	}
	b = b[k:]
	for range cnt {
		l, k := binary.Uvarint(b)
		if k <= 0 || l == 0 || l > 64 || uint64(len(b)-k) < l {
			return false
		}
		node := string(b[k : k+int(l)])
		b = b[k+int(l):]
		inc, k := binary.Uvarint(b)
		if k <= 0 {
			return false
		}
		b = b[k:]
		n, k := binary.Uvarint(b)
		if k <= 0 || n > math.MaxInt64 || len(b) < k+8 {
			return false
		}
		exp := int64(binary.LittleEndian.Uint64(b[k:]))
		b = b[k+8:]
		v.leases = append(v.leases, strictLease{node: node, inc: inc, n: int64(n), exp: exp})
	}
	return len(b) == 0
}

// strictState is this node's side of one Strict bucket.
type strictState struct {
	key  limiter.Key
	name string // KV key
	mu   sync.Mutex
	spec limiter.Spec

	// The entry as last read or written.
	rev uint64
	val strictVal

	// This node's lease, by its own clock.
	granted int64 // tokens of the current lease
	used    int64 // spent of it
	settle  int64 // spent of a lease whose last write failed: settled at the next write
	exp     int64 // UnixNano after which the lease is not spent any more
	end     int64 // UnixNano at which the lease written last expires in KV
	lastUse int64 // UnixNano of the last take or renewal

	wait   int64   // UnixNano before which the bucket is known short: deny without I/O
	retry  int64   // UnixNano at which the last denial said to come back
	demand float64 // tokens asked for per second, smoothed over renewals
	asked  int64   // tokens asked for since lastRenew
	renew  int64   // UnixNano of the last renewal

	renewing chan struct{} // closed when the renewal in flight ends; nil if none
	owed     int64         // tokens consumed while NATS was down, not yet written
}

// respec converts this node's lease of st, counted in tokens of st.spec,
// to tokens of spec, as the entry is rescaled (bucketUnder): the tokens
// granted rounded down, those spent rounded up. A cached denial goes.
// Requires st.mu held.
func (st *strictState) respec(spec limiter.Spec) {
	if st.spec == spec {
		return
	}
	if f := scaleFactor(st.spec, spec); f != 1 {
		st.granted = int64(math.Floor(float64(st.granted) * f))
		st.used = int64(math.Ceil(float64(st.used) * f))
		st.settle = int64(math.Ceil(float64(st.settle) * f))
	}
	st.spec = spec
	st.wait, st.retry = 0, 0
}

// strictCache holds this node's Strict states, by KV key and by bucket key
// (so that a decision builds no string).
type strictCache struct {
	mu     sync.Mutex
	m      map[string]*strictState
	byKey  map[limiter.Key]*strictState
	active map[*strictState]struct{} // states that may hold a lease: the lease loop's work
}

// activate adds st to the states the lease loop looks at. Requires st.mu
// not held.
func (c *strictCache) activate(st *strictState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.active == nil {
		c.active = make(map[*strictState]struct{})
	}
	c.active[st] = struct{}{}
}

// leased returns the states that may hold a lease, dropping those that
// hold none any more.
func (c *strictCache) leased() []*strictState {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*strictState, 0, len(c.active))
	for st := range c.active {
		st.mu.Lock()
		held := st.granted > 0
		st.mu.Unlock()
		if held {
			out = append(out, st)
		} else {
			delete(c.active, st)
		}
	}
	return out
}

func (c *strictCache) state(key limiter.Key, spec limiter.Spec) *strictState {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st := c.byKey[key]; st != nil {
		return st
	}
	if c.byKey == nil {
		c.byKey = make(map[limiter.Key]*strictState)
	}
	st := &strictState{key: key, name: strictKey(key), spec: spec}
	c.m[st.name] = st
	c.byKey[key] = st
	return st
}

// get returns the last known revision and entry of k.
func (c *strictCache) get(k string) (rev uint64, val strictVal, ok bool) {
	c.mu.Lock()
	st := c.m[k]
	c.mu.Unlock()
	if st == nil {
		return 0, strictVal{}, false
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.rev, st.val, st.rev != 0
}

// snapshot returns the states, for the outage flush.
func (c *strictCache) snapshot() map[string]*strictState {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]*strictState, len(c.m))
	for k, st := range c.m {
		out[k] = st
	}
	return out
}

// sweep drops the states of buckets whose last lease has expired, with no
// debt or renewal.
func (c *strictCache) sweep(t int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, st := range c.m {
		// Past its last lease's expiry nothing of this node's side is
		// needed: an expired lease is charged in full, whoever renews.
		st.mu.Lock()
		idle := t > st.end && st.owed == 0 && st.renewing == nil
		st.mu.Unlock()
		if idle {
			delete(c.m, k)
			delete(c.byKey, st.key)
			delete(c.active, st)
		}
	}
}

// bucketAt rebuilds a bucket that is full at full, as seen at now.
func bucketAt(spec limiter.Spec, full int64, now time.Time) limiter.Bucket {
	var b limiter.Bucket
	if d := full - now.UnixNano(); d > 0 {
		b.DebitAt(spec, now, rate(spec)*float64(d))
	} else {
		b.DebitAt(spec, now, 0)
	}
	return b
}

// strictTake takes n tokens from this node's lease of the bucket, renewing
// the lease when it runs short.
func (s *Store) strictTake(ctx context.Context, key limiter.Key, spec limiter.Spec, now time.Time, n int64) (limiter.Result, error) {
	if s.down.Load() {
		return s.strictFail(key, spec, now, n)
	}
	st := s.strict.state(key, spec)
	k := st.name
	t := now.UnixNano()
	for round := 0; ; round++ {
		st.mu.Lock()
		st.respec(spec)
		if round == 0 {
			st.asked += n
		}
		if st.used+n <= st.granted && t < st.exp {
			st.used += n
			st.lastUse = t
			rem := st.granted - st.used
			st.mu.Unlock()
			return limiter.Result{OK: true, Remaining: rem}, nil
		}
		if t < st.wait {
			r := limiter.Result{RetryAfter: time.Duration(max(st.retry, st.wait) - t)}
			st.mu.Unlock()
			return r, nil
		}
		if ch := st.renewing; ch != nil {
			// Another decision renews the lease: wait for its batch. A
			// crowd that spends each batch before its turn gives up after
			// a few and is told to come back at once.
			st.mu.Unlock()
			if round == maxRenewWaits {
				return limiter.Result{}, nil
			}
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return limiter.Result{}, fmt.Errorf("%w: %w", limiter.ErrUnavailable, ctx.Err())
			}
		}
		ch := make(chan struct{})
		st.renewing = ch
		st.mu.Unlock()
		r, err := s.renewLease(ctx, k, st, spec, now, n)
		st.mu.Lock()
		if st.renewing == ch {
			st.renewing = nil
		}
		st.mu.Unlock()
		close(ch)
		if err != nil && !errors.Is(err, ErrConflict) {
			s.enterDown()
			return s.strictFail(key, spec, now, n)
		}
		return r, err
	}
}

// renewLease settles this node's lease and reserves a new one holding at
// least n tokens, with one compare-and-swap.
func (s *Store) renewLease(ctx context.Context, k string, st *strictState, spec limiter.Spec, now time.Time, n int64) (limiter.Result, error) {
	t := now.UnixNano()
	// The entry is kept on the NATS server's clock, so that nodes whose
	// clocks disagree agree on its refill and its leases' expiry.
	srv := s.serverTime(now)
	ts := srv.UnixNano()
	capacity := spec.Capacity()
	st.mu.Lock()
	if dt := t - st.renew; st.renew != 0 && dt > 0 {
		inst := float64(st.asked) / (float64(dt) / float64(time.Second))
		st.demand = (st.demand + inst) / 2
	}
	st.asked, st.renew = 0, t
	// A batch is the node's demand over leaseHorizon, at most what the
	// bucket refills in that time: under overload, what leases hold unused
	// stays below one horizon's refill per node.
	want := max(n, int64(math.Ceil(min(st.demand, rate(spec)*float64(time.Second))*leaseHorizon.Seconds())))
	spent := st.used + st.settle
	st.mu.Unlock()

	var res limiter.Result
	var grant int64
	err := s.casStrict(ctx, k, st, func(v strictVal) (strictVal, bool) {
		b, leases, changed := v.bucketUnder(spec, srv)
		out := strictVal{spec: spec}
		var others int64
		for _, l := range leases {
			switch {
			case l.node == s.nodeTok && l.inc == s.inc && l.exp >= ts:
				b.DebitAt(spec, srv, float64(spent)) // what this node spent of it
				changed = true
			case l.exp < ts:
				b.DebitAt(spec, srv, float64(l.n)) // charged as spent in full
				changed = true
			default:
				out.leases = append(out.leases, l)
				others += l.n
			}
		}
		free := b.TokensAt(spec, srv) - float64(others)
		grant = 0
		switch {
		case n > capacity:
			res = limiter.Result{Remaining: max(int64(free), 0), RetryAfter: limiter.Never}
		case free >= float64(max(n, want/2)):
			// Half a batch at least: nodes racing for a starved bucket
			// renew once per batch, not once per refilled token.
			grant = min(want, int64(free))
			out.leases = append(out.leases, strictLease{node: s.nodeTok, inc: s.inc, n: grant, exp: ts + int64(leaseTTL)})
			res = limiter.Result{OK: true, Remaining: grant - n}
			changed = true
		default:
			target := float64(min(max(want/2, n), capacity))
			res = limiter.Result{Remaining: max(int64(free), 0), RetryAfter: durationFor(spec, target-free)}
		}
		out.full = b.FullAt(spec).UnixNano()
		return out, changed
	})
	st.mu.Lock()
	switch {
	case err != nil:
		// The outcome of the write is unknown: spend nothing more of the
		// lease, and settle what was spent at the next write that finds it.
		st.settle, st.granted, st.used = spent, 0, 0
		st.mu.Unlock()
		return limiter.Result{}, err
	case res.OK:
		st.granted, st.used, st.settle = grant, n, 0
		st.exp = t + int64(leaseTTL-leaseMargin)
		st.end = t + int64(leaseTTL)
		st.lastUse = t
		st.wait = 0
	default:
		st.granted, st.used, st.settle = 0, 0, 0
		// Deny without I/O until a batch has refilled, but look again
		// within leaseIdle: leases that went idle return their tokens.
		if res.RetryAfter != limiter.Never { // a request above the burst says nothing of others
			st.wait = t + int64(min(res.RetryAfter, leaseIdle))
			st.retry = t + int64(res.RetryAfter)
		}
	}
	st.mu.Unlock()
	if res.OK {
		s.strict.activate(st)
	}
	return res, nil
}

// durationFor returns how long spec takes to refill tokens.
func durationFor(spec limiter.Spec, tokens float64) time.Duration {
	if tokens <= 0 {
		return 0
	}
	d := tokens / rate(spec)
	if d >= float64(limiter.Never) {
		return limiter.Never
	}
	return time.Duration(math.Ceil(d))
}

// returnLease settles this node's lease of k and returns what is unused,
// if anything is.
func (s *Store) returnLease(ctx context.Context, k string, st *strictState, now time.Time) error {
	srv := s.serverTime(now)
	ts := srv.UnixNano()
	st.mu.Lock()
	if st.renewing != nil || st.granted <= st.used {
		st.mu.Unlock()
		return nil // nothing unused to return
	}
	ch := make(chan struct{})
	st.renewing = ch
	spent, spec := st.used+st.settle, st.spec
	st.granted, st.used, st.settle = 0, 0, 0 // nothing more is spent of it
	st.mu.Unlock()
	defer func() {
		st.mu.Lock()
		st.renewing = nil
		st.mu.Unlock()
		close(ch)
	}()
	err := s.casStrict(ctx, k, st, func(v strictVal) (strictVal, bool) {
		b, leases, _ := v.bucketUnder(spec, srv)
		out := strictVal{spec: spec}
		found := false
		for _, l := range leases {
			if l.node == s.nodeTok && l.inc == s.inc {
				b.DebitAt(spec, srv, float64(min(spent, l.n)))
				if l.exp < ts {
					b.DebitAt(spec, srv, float64(l.n-min(spent, l.n))) // charged in full
				}
				found = true
				continue
			}
			out.leases = append(out.leases, l)
		}
		out.full = b.FullAt(spec).UnixNano()
		return out, found
	})
	if err != nil {
		st.mu.Lock()
		st.settle += spent
		st.mu.Unlock()
	}
	return err
}

// leaseLoop returns the leases that went idle or near their expiry, every
// SyncInterval.
func (s *Store) leaseLoop() {
	defer s.wg.Done()
	tick := time.NewTicker(s.cfg.SyncInterval)
	defer tick.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-tick.C:
		}
		if s.down.Load() {
			continue
		}
		now := s.now()
		t := now.UnixNano()
		for _, st := range s.strict.leased() {
			st.mu.Lock()
			due := st.granted > 0 && (t-st.lastUse > int64(leaseIdle) || t > st.exp-int64(leaseTTL/2))
			if due && st.used >= st.granted && st.renewing == nil {
				// Spent in full: nothing to return. The lease stays in KV
				// until this node's next renewal settles it or its expiry
				// charges it in full, the same tokens either way.
				st.settle += st.used
				st.granted, st.used, due = 0, 0, false
			}
			st.mu.Unlock()
			if !due {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timeout)
			err := s.returnLease(ctx, st.name, st, now)
			cancel()
			if err != nil && !errors.Is(err, ErrConflict) {
				break
			}
		}
	}
}

// returnLeases returns every lease this node holds, on Close.
func (s *Store) returnLeases(ctx context.Context) {
	now := s.now()
	for _, st := range s.strict.leased() {
		if err := s.returnLease(ctx, st.name, st, now); err != nil && !errors.Is(err, ErrConflict) {
			return
		}
	}
}

// strictRefund gives n tokens back: to this node's lease if it spent them
// from it, else to the bucket with a compare-and-swap.
func (s *Store) strictRefund(ctx context.Context, key limiter.Key, spec limiter.Spec, now time.Time, n int64) error {
	st := s.strict.state(key, spec)
	k := st.name
	if s.down.Load() {
		st.mu.Lock()
		st.owed = max(st.owed-n, 0)
		st.mu.Unlock()
		return s.local.Refund(ctx, key, spec, now, n)
	}
	st.mu.Lock()
	if st.used >= n {
		st.used -= n
		st.mu.Unlock()
		return nil
	}
	st.mu.Unlock()
	srv := s.serverTime(now)
	return s.casStrict(ctx, k, st, func(v strictVal) (strictVal, bool) {
		b, leases, _ := v.bucketUnder(spec, srv)
		b.RefundAt(spec, srv, n)
		v.full, v.spec, v.leases = b.FullAt(spec).UnixNano(), spec, leases
		return v, true
	})
}

// strictFail decides a Strict take while NATS is unreachable, by the fail
// mode, and remembers the consumption for after reconnect.
func (s *Store) strictFail(key limiter.Key, spec limiter.Spec, now time.Time, n int64) (limiter.Result, error) {
	switch s.cfg.FailMode {
	case FailClosed:
		return limiter.Result{}, errDown
	case FailLocalShare:
		spec = shareSpec(spec, s.live.Load())
	}
	r := s.local.TakeAt(key, spec, now, n)
	if r.OK {
		st := s.strict.state(key, spec)
		st.mu.Lock()
		st.owed += n
		st.mu.Unlock()
	}
	return r, nil
}

// casStrict applies f to the entry under k until the write wins, starting
// from st's copy. f returns the new entry and whether to write; a decision
// not to write taken on the copy is confirmed on a fresh read. f may run
// more than once.
func (s *Store) casStrict(ctx context.Context, k string, st *strictState, f func(strictVal) (strictVal, bool)) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	st.mu.Lock()
	rev, val := st.rev, st.val
	st.mu.Unlock()
	cached := rev != 0
	for attempt := 0; attempt <= s.cfg.MaxRetries; attempt++ {
		if !cached {
			e, err := s.kv.Get(ctx, k)
			switch {
			case errors.Is(err, jetstream.ErrKeyNotFound):
				rev, val = 0, strictVal{}
			case err != nil:
				return fmt.Errorf("kvstore: get %s: %w", k, err)
			default:
				rev = e.Revision()
				if !val.unmarshal(e.Value()) {
					val = strictVal{} // unreadable: replaced by a full bucket
				}
			}
			st.mu.Lock()
			if rev > st.rev {
				st.rev, st.val = rev, val
			}
			st.mu.Unlock()
		}
		nv, write := f(val)
		if !write {
			if cached {
				cached = false
				continue
			}
			return nil
		}
		var err error
		var nrev uint64
		if rev == 0 {
			nrev, err = s.kv.Create(ctx, k, nv.marshal())
		} else {
			nrev, err = s.kv.Update(ctx, k, nv.marshal(), rev)
		}
		switch {
		case err == nil:
			s.stats.kvWrites.Add(1)
			st.mu.Lock()
			if nrev > st.rev {
				st.rev, st.val = nrev, nv
			}
			st.mu.Unlock()
			return nil
		case errors.Is(err, jetstream.ErrKeyRevisionMismatch), errors.Is(err, jetstream.ErrKeyExists):
			s.stats.conflicts.Add(1)
			s.stats.retries.Add(1)
			cached = false
			// Spread the retries of racing writers: a random pause
			// growing with the attempt, at most a few milliseconds.
			if err := pause(ctx, time.Duration(rand.Int64N(int64(attempt+1)*int64(250*time.Microsecond)))); err != nil {
				return fmt.Errorf("kvstore: write %s: %w", k, err)
			}
		default:
			s.stats.writeErrors.Add(1)
			return fmt.Errorf("kvstore: write %s: %w", k, err)
		}
	}
	return errConflict
}

// flushStrictDebt writes the Strict consumption made while NATS was down.
func (s *Store) flushStrictDebt(ctx context.Context) {
	now := s.serverTime(s.now())
	for k, st := range s.strict.snapshot() {
		st.mu.Lock()
		owed, spec := st.owed, st.spec
		st.owed = 0
		st.mu.Unlock()
		if owed <= 0 {
			continue
		}
		err := s.casStrict(ctx, k, st, func(v strictVal) (strictVal, bool) {
			b, leases, _ := v.bucketUnder(spec, now)
			b.DebitAt(spec, now, float64(owed))
			v.full, v.spec, v.leases = b.FullAt(spec).UnixNano(), spec, leases
			return v, true
		})
		if err != nil {
			st.mu.Lock()
			st.owed += owed
			st.mu.Unlock()
		}
	}
}

// pause waits d or until ctx ends.
func pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
