package kvstore

import (
	"context"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

// errDown is returned by cross-node calls failing closed.
var errDown = fmt.Errorf("%w: %w", limiter.ErrUnavailable, ErrDown)

type gshardData struct {
	mu    sync.Mutex
	m     map[limiter.Key]*gentry
	dirty []*gentry // entries with something to flush
	spare []*gentry // the other dirty buffer, reused
}

// gshard is padded to whole cache lines (see cacheLine).
type gshard struct {
	// The padding comes first: Go lengthens a struct that ends in a
	// field of size zero.
	_ [(cacheLine - unsafe.Sizeof(gshardData{})%cacheLine) % cacheLine]byte
	gshardData
}

// gentry is one Global bucket on this node: its view of the cluster
// bucket, its own counter and what it has applied of the other nodes'
// counters. The package doc describes the algorithm. Every field requires
// the shard's mu held.
type gentry struct {
	key  limiter.Key  // the bucket
	spec limiter.Spec // its shape, as of the last Take
	base string       // bucketKey(key): the KV key prefix of every node's counter
	subj string       // the subject of this node's counter (base.<node>)
	inc  uint64       // incarnation: each entry created in this epoch gets a higher one

	born    int64 // UnixNano of the entry's first Take
	touched int64 // UnixNano of the last Take (the sweep drops quiet entries)

	b    limiter.Bucket // the cluster bucket as this node sees it: own spending and the counters applied
	own  limiter.Bucket // this node's spending alone (its counter's unrefilled)
	fail limiter.Bucket // the FailLocalShare bucket, spent while NATS is down

	taken    int64 // tokens spent in this incarnation (the counter's cum)
	refunded int64 // tokens refunded in this incarnation (the counter's refunded)
	flushed  int64 // taken as of the last counter published

	allow   float64 // tokens this node may spend before its next renewal
	allowAt int64   // UnixNano up to which allow has grown by share × refill
	share   float64 // this node's share of the bucket, set at the last renewal
	alone   bool    // at that renewal no other node's demand was known (share 1 of a cold key)
	gen     uint64  // the flush generation of the last renewal; another renews

	demand     float64 // tokens asked for (admitted or not) since flushedAt
	demandRate float64 // tokens asked for per second, smoothed (the counter's demand)
	flushedAt  int64   // UnixNano of the last flush that sampled demand

	pubAt   int64   // UnixNano of the last counter published; 0 when none stands
	pubHold float64 // the allowance that counter published (the others set it aside)
	pubFor  int64   // that counter's hold (ns)

	remote map[string]*remoteSeen // node token → what has been applied of its counter
	dirty  bool                   // in the shard's dirty list: the next flush visits it
	dead   bool                   // dropped by the sweep; a Take makes a new entry
}

// remoteSeen is what this node has applied of another node's counter of
// one bucket.
type remoteSeen struct {
	epoch    uint64  // the writer's process run
	inc      uint64  // the writer's incarnation of the bucket
	cum      int64   // its cumulative spending applied
	refunded int64   // its cumulative refunds applied
	demand   float64 // its demand rate (tokens per second)
	reserved float64 // the allowance it holds, set aside by this node until until
	alone    bool    // it had heard of no other demand when it took that allowance
	at       int64   // local UnixNano of receipt
	until    int64   // local UnixNano until which reserved and demand stand
}

// indexMap finds Global entries by their KV key, for the watch, and holds
// counters of buckets this node has not used yet.
type indexMap struct {
	mu      sync.Mutex
	m       map[string]*gentry
	pending map[string]map[string]pendingCounter
	incs    uint64 // incarnations handed out in this epoch

	downSeen atomic.Int64 // failModeEntries as of the last flush
}

type pendingCounter struct {
	c    counter
	recv int64
}

func (ix *indexMap) init() {
	ix.m = make(map[string]*gentry)
	ix.pending = make(map[string]map[string]pendingCounter)
}

func (s *Store) markDirty(sh *gshard, e *gentry) {
	if !e.dirty {
		e.dirty = true
		sh.dirty = append(sh.dirty, e)
	}
}

// newEntry creates the entry of key, adopting counters the watch has
// already seen for it. Requires sh.mu held.
func (s *Store) newEntry(sh *gshard, key limiter.Key, spec limiter.Spec, now time.Time) *gentry {
	e := &gentry{key: key, spec: spec, base: bucketKey(key), gen: s.gen.Load() - 1, born: now.UnixNano()}
	e.subj = kvSubject(s.cfg.Bucket, counterKey(e.base, s.nodeTok))
	s.index.mu.Lock()
	s.index.incs++
	e.inc = s.index.incs
	if p := s.index.pending[e.base]; p != nil {
		delete(s.index.pending, e.base)
		// Each writer's unrefilled consumption refills at the full rate in
		// its own reckoning, so their sum understates the deficit of a
		// bucket that several nodes drain together. The writers' views of
		// the level, refilled since they were written, do not: start from
		// the lowest of them if it is lower.
		capacity := float64(spec.Capacity())
		level := capacity
		for node, pc := range p {
			s.applyRemote(sh, e, node, &pc.c, now, pc.recv)
			// A level written under another Spec counts as the same
			// fraction of this one's burst.
			l := pc.c.level + rate(pc.c.spec)*float64(now.UnixNano()-pc.c.at)
			if pc.c.spec != spec {
				l = limiter.RescaleLevel(l, pc.c.spec.Capacity(), spec.Capacity())
			}
			level = min(level, l)
		}
		if short := e.b.TokensAt(spec, now) - level; short > 0 {
			e.b.DebitAt(spec, now, short)
		}
	}
	s.index.m[e.base] = e
	s.index.mu.Unlock()
	sh.m[key] = e
	return e
}

// globalTake decides locally. Requires no I/O and, for an existing entry,
// allocates nothing.
func (s *Store) globalTake(key limiter.Key, spec limiter.Spec, now time.Time, n int64) (limiter.Result, error) {
	down := s.down.Load()
	if down && s.cfg.FailMode == FailClosed {
		return limiter.Result{}, errDown
	}
	sh := s.shardOf(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.m[key]
	if e == nil {
		e = s.newEntry(sh, key, spec, now)
	}
	t := now.UnixNano()
	if e.spec != spec {
		// Held under another Spec (a live limit change this node has not
		// rescaled it for, or another tier's): keep its level as a
		// fraction of the burst.
		s.rescaleEntry(sh, e, spec, now)
	}
	e.touched = t
	e.demand += float64(n)
	var r limiter.Result
	switch {
	case down && s.cfg.FailMode == FailLocalShare:
		r = e.fail.TakeAt(shareSpec(spec, s.live.Load()), now, n)
		if r.OK {
			e.b.DebitAt(spec, now, float64(n))
		}
	case down:
		r = e.b.TakeAt(spec, now, n)
	default:
		s.refreshAllowance(e, spec, now)
		if s.short(e, spec, n) {
			r = s.allowanceDenial(e, spec, now, n)
			r.Uncertain = e.b.TokensAt(spec, now) >= float64(n)
			break
		}
		if r = e.b.TakeAt(spec, now, n); r.OK {
			e.allow -= float64(n)
		}
	}
	if r.OK {
		e.taken += n
		e.own.DebitAt(spec, now, float64(n))
		if e.flushed == 0 && e.share == 1 && !down {
			if s.live.Load() > 1 {
				// Spending from a bucket no other node has been heard
				// to use: tell them now rather than at the next tick.
				s.kickFlush()
			}
		}
	}
	s.markDirty(sh, e)
	return r, nil
}

// short reports whether e's allowance lacks n tokens: whether the wait
// for its growth to n rounds to at least a nanosecond (as a Bucket admits
// a request whose wait rounds to zero).
func (s *Store) short(e *gentry, spec limiter.Spec, n int64) bool {
	lack := float64(n) - e.allow
	if lack <= 0 {
		return false
	}
	perNs := e.share * rate(spec)
	return perNs <= 0 || lack/perNs >= 0.5
}

// refreshAllowance renews e's allowance: at every flush generation it is
// this node's share of the tokens left; in between it grows by its share of
// the refill, up to its share of the burst.
func (s *Store) refreshAllowance(e *gentry, spec limiter.Spec, now time.Time) {
	t := now.UnixNano()
	capacity := float64(spec.Capacity())
	if e.pubAt > 0 && t-e.pubAt > e.pubFor {
		// The others no longer set this node's allowance aside: renew,
		// and publish at once.
		e.pubAt = 0
		e.gen--
		s.kickFlush()
	}
	if g := s.gen.Load(); e.gen != g {
		s.renew(e, spec, now, g)
		return
	}
	if t > e.allowAt {
		e.allow += e.share * rate(spec) * float64(t-e.allowAt)
		e.allowAt = t
		if c := max(e.share*capacity, 1); e.allow > c {
			e.allow = c
		}
	}
}

// renew sets e's allowance to this node's share of the tokens left once
// the allowances the other nodes hold are set aside. Requires the entry's
// shard mu held.
func (s *Store) renew(e *gentry, spec limiter.Spec, now time.Time, gen uint64) {
	t := now.UnixNano()
	e.gen = gen
	e.allowAt = t
	if e.demand == 0 && e.demandRate == 0 {
		// No demand: hold (and publish) no allowance; the next Take
		// renews with its own demand.
		e.gen, e.share, e.allow = gen-1, 0, 0
		return
	}
	e.alone = false
	e.share = s.share(e, t)
	view := e.b.TokensAt(spec, now)
	tokens := view - s.held(e, view, t)
	if spec.Capacity() < s.live.Load() {
		// A bucket too small to split: spend what no other node holds.
		e.allow = max(tokens, 0)
		return
	}
	e.allow = e.share * max(tokens, 0)
	if e.share < 1 && tokens >= 1 && e.allow < float64(spec.Capacity()) {
		e.allow = s.apportion(e, tokens, t)
	}
}

// apportion splits the whole tokens left among the nodes with fresh
// demand as every node computes it from the same counters: each gets the
// whole part of its share, and the tokens those leave over go one each to
// the nodes of highest demand (ties to the lower node token). Without it a
// nearly empty bucket split N ways leaves every node less than one token.
// It returns this node's allowance.
func (s *Store) apportion(e *gentry, tokens float64, t int64) float64 {
	own := e.share * tokens
	total := math.Floor(tokens)
	myDemand := e.demandRate
	if myDemand == 0 {
		myDemand = e.demand / s.cfg.SyncInterval.Seconds()
	}
	sum := myDemand
	for _, r := range e.remote {
		if r.until >= t {
			sum += r.demand
		}
	}
	if sum <= 0 {
		return own
	}
	left := total - math.Floor(total*myDemand/sum)
	rank := 0
	for node, r := range e.remote {
		if r.until < t {
			continue
		}
		left -= math.Floor(total * r.demand / sum)
		if r.demand > myDemand || (r.demand == myDemand && node < s.nodeTok) {
			rank++
		}
	}
	if float64(rank) < left {
		return math.Floor(own) + 1
	}
	return own
}

// held returns the tokens the other nodes hold as allowances, as this
// node, whose view holds tokens, sets them aside: each standing allowance
// in whole tokens (fractions reserved by every node would leave a nearly
// empty bucket unspendable). While this node's entry is young (one sync
// interval), an allowance its node took having heard of no other demand
// (alone: often a whole bucket, a cold key's or an uncontested one's)
// counts only up to that node's demand share of the view, but no less
// than it may spend at its demand rate in 2 sync intervals: that node
// renews at its next Take after hearing of this node's demand. Setting
// all of it aside would deny a client's first requests on a second node
// (its second connection) until the holder next wrote, and leave the
// nodes of a key that turned cold on all of them at once nothing. The
// price is what the holder spends before it hears of this node, at most
// its allowance, once (the package doc's bounds). Requires the shard's
// mu held.
func (s *Store) held(e *gentry, tokens float64, t int64) float64 {
	sum := -1.0 // the demand of every node, computed once if needed
	var held float64
	for _, r := range e.remote {
		if r.until < t {
			continue
		}
		h := math.Floor(r.reserved)
		if r.alone && tokens > 0 && t-e.born <= int64(s.cfg.SyncInterval) {
			if sum < 0 {
				sum = s.ownDemand(e)
				for _, o := range e.remote {
					if o.until >= t {
						sum += o.demand
					}
				}
			}
			if sum > 0 {
				// Its share, but never less than what it may spend at its
				// demand rate before it hears of this node (2 intervals).
				window := 2 * s.cfg.SyncInterval.Seconds()
				h = min(h, math.Ceil(max(tokens*r.demand/sum, r.demand*window)))
			}
		}
		held += h
	}
	return held
}

// ownDemand is this node's demand rate for e's bucket as it publishes it:
// the smoothed rate, or the demand of the interval so far before the
// first sample. Requires the shard's mu held.
func (s *Store) ownDemand(e *gentry) float64 {
	if e.demandRate > 0 {
		return e.demandRate
	}
	return e.demand / s.cfg.SyncInterval.Seconds()
}

// share returns this node's share of e's tokens: all of them while no
// other node has shown demand for the bucket within three sync intervals
// (a key used through one node gets its whole burst at once, as on a
// single node); else its demand over the fresh demand of all nodes.
func (s *Store) share(e *gentry, t int64) float64 {
	if s.live.Load() <= 1 {
		return 1
	}
	var rem float64
	for _, r := range e.remote {
		if r.until >= t {
			rem += r.demand
		}
	}
	if rem == 0 {
		e.alone = true
		return 1
	}
	// The same smoothed rate this node publishes, so that the shares the
	// nodes compute from the same counters sum to one.
	own := e.demandRate
	if own == 0 {
		own = e.demand / s.cfg.SyncInterval.Seconds()
	}
	return own / (own + rem)
}

// allowanceDenial is the result of a Take that the bucket may allow but
// this node's allowance does not. RetryAfter is the exact wait, from this
// node's view, until both hold n if nothing else happens: the bucket's
// own refill, and the allowance's growth at this node's share of the
// refill; a request larger than the allowance can ever grow to between
// renewals waits until the bucket, less what the other nodes hold,
// refills enough for this node's share of it to reach n. If tokens no
// node holds are left beyond the allowance, it asks for an early flush,
// whose renewal may admit sooner than RetryAfter.
func (s *Store) allowanceDenial(e *gentry, spec limiter.Spec, now time.Time, n int64) limiter.Result {
	tokens := e.b.TokensAt(spec, now)
	r := limiter.Result{Remaining: int64(max(min(e.allow, tokens), 0))}
	capacity := float64(spec.Capacity())
	if float64(n) > capacity {
		r.RetryAfter = limiter.Never
		return r
	}
	held := s.held(e, tokens, now.UnixNano())
	wait := float64(n) - tokens // the bucket's own refill, in tokens
	if float64(n) <= e.share*capacity {
		wait = max(wait, (float64(n)-e.allow)/e.share)
	} else {
		// Only a renewal can give n: once share × (tokens − held) ≥ n.
		need := capacity
		if e.share > 0 {
			need = min(float64(n)/e.share+held, capacity)
		}
		wait = max(wait, need-tokens)
	}
	if ns := math.Round(max(wait, 0) / rate(spec)); ns >= float64(limiter.Never) {
		r.RetryAfter = limiter.Never
	} else {
		r.RetryAfter = time.Duration(max(ns, 1))
	}
	if tokens-held >= float64(n)+1 {
		// A renewal can give more now: ask for one.
		s.kickFlush()
	}
	return r
}

func shareSpec(spec limiter.Spec, live int64) limiter.Spec {
	if live <= 1 {
		return spec
	}
	out := limiter.Spec{Limit: max(spec.Limit/live, 1), Per: spec.Per}
	out.Burst = max(spec.Capacity()/live, 1)
	return out
}

// globalRefund gives tokens back locally, and to the other nodes with the
// next flush (the counter's cumulative refunds).
func (s *Store) globalRefund(key limiter.Key, spec limiter.Spec, now time.Time, n int64) {
	sh := s.shardOf(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.m[key]
	if e == nil {
		return
	}
	e.b.RefundAt(spec, now, n)
	e.own.RefundAt(spec, now, n)
	e.fail.RefundAt(shareSpec(spec, s.live.Load()), now, n)
	e.refunded += n
	e.allow += float64(n)
	s.markDirty(sh, e)
}

type flushItem struct {
	e    *gentry
	sh   *gshard
	data []byte
	fut  jetstream.PubAckFuture
}

// flush sends the counters of dirty entries in one asynchronous batch and
// waits for the acknowledgements; entries whose write failed stay dirty.
// It advances the allowance generation.
//
// Every dirty entry is renewed, but its counter is written only when the
// other nodes need it (see mustPublish) or when force is set (Flush,
// Close, the first flush after an outage): consumption within an
// allowance already published, on a bucket no other node contests, waits
// for the next counter that must go out.
func (s *Store) flush(ctx context.Context, force bool) error {
	defer s.gen.Add(1)
	if n := s.stats.failModeEntries.Load(); s.index.downSeen.Swap(n) != n {
		// The first flush after an outage writes everything: the other
		// nodes' view of this node's allowances may have lapsed meanwhile.
		force = true
	}
	now := s.now()
	t := now.UnixNano()
	var items []flushItem
	for i := range s.gsh {
		sh := &s.gsh[i]
		sh.mu.Lock()
		if force {
			// Spending left unpublished within a standing allowance
			// goes out too (Close: a restart under the same ID adopts it).
			for _, e := range sh.m {
				if e.taken > e.flushed {
					s.markDirty(sh, e)
				}
			}
		}
		list := sh.dirty
		sh.dirty = sh.spare[:0]
		for j, e := range list {
			list[j] = nil
			e.dirty = false
			if e.dead {
				continue
			}
			s.sampleDemand(e, t)
			e.demand = 0
			e.flushedAt = t
			s.renew(e, e.spec, now, s.gen.Load()+1)
			contested := s.contested(e, t)
			if !force && !contested && !s.mustPublish(e, t) {
				continue
			}
			// A contested bucket's counter goes out every interval while
			// it is used: its allowance need stand only 3 intervals, and
			// lapses soon after this node stops spending.
			hold := s.holdFor()
			if contested {
				hold = 3 * s.cfg.SyncInterval
			}
			c := counter{epoch: s.epoch, inc: e.inc, cum: e.taken, refunded: e.refunded, at: t, demand: e.demandRate,
				spec: e.spec, reserved: e.allow, hold: int64(hold), alone: e.alone,
				unrefilled: max(float64(e.spec.Capacity())-e.own.TokensAt(e.spec, now), 0),
				level:      e.b.TokensAt(e.spec, now)}
			e.flushed = e.taken
			e.pubAt, e.pubHold, e.pubFor = t, e.allow, int64(hold)
			items = append(items, flushItem{e: e, sh: sh, data: c.marshal(make([]byte, 0, counterSize))})
		}
		sh.spare = list[:0]
		sh.mu.Unlock()
	}
	if len(items) == 0 {
		return nil
	}
	s.stats.flushes.Add(1)
	var firstErr error
	ok := 0
	for lo := 0; lo < len(items); lo += flushChunk {
		chunk := items[lo:min(lo+flushChunk, len(items))]
		for i := range chunk {
			if firstErr != nil {
				break
			}
			it := &chunk[i]
			f, err := s.js.PublishAsync(it.e.subj, it.data)
			if err != nil {
				firstErr = err
				break
			}
			it.fut = f
		}
		// Each chunk gets Timeout for its acknowledgements, so a large
		// flush is not failed by the time its earlier chunks took.
		cctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
		ok += s.awaitFlush(cctx, chunk, &firstErr)
		cancel()
	}
	s.stats.kvWrites.Add(int64(ok))
	s.stats.counterWrites.Add(int64(ok))
	if firstErr != nil {
		s.stats.writeErrors.Add(int64(len(items) - ok))
		return fmt.Errorf("kvstore: flush: %w", firstErr)
	}
	return nil
}

// holdFor is how long the other nodes set aside an allowance this node
// published: 400 sync intervals (20 s at the default 50 ms). A counter
// goes out again before it runs out while the bucket is in use.
func (s *Store) holdFor() time.Duration { return 400 * s.cfg.SyncInterval }

// sampleDemand folds the demand since the last sample into e's smoothed
// rate, weighting the old rate by exp(-elapsed / 2 sync intervals): an
// interval's sample counts about half, and a bucket idle for a while
// starts again from its new demand alone. Requires the shard's mu held.
func (s *Store) sampleDemand(e *gentry, t int64) {
	interval := s.cfg.SyncInterval.Seconds()
	if e.flushedAt > 0 && t > e.flushedAt {
		dt := time.Duration(t - e.flushedAt).Seconds()
		w := math.Exp(-dt / (2 * interval))
		e.demandRate = w*e.demandRate + (1-w)*e.demand/dt
	} else {
		e.demandRate = e.demand / interval
	}
	if e.demandRate < 1e-9 {
		e.demandRate = 0
	}
}

// holding reports whether the allowance e last published still stands
// (the sweep keeps such an entry: dropping it would cost a new
// incarnation's counter at its next use). Requires the shard's mu held.
func (s *Store) holding(e *gentry, t int64) bool {
	return e.pubAt > 0 && e.pubHold >= 1 && t-e.pubAt <= e.pubFor
}

// contested reports whether another node has shown demand for e's bucket
// in a counter that still stands. Requires the shard's mu held.
func (s *Store) contested(e *gentry, t int64) bool {
	for _, r := range e.remote {
		if r.until >= t && r.demand > 0 {
			return true
		}
	}
	return false
}

// mustPublish reports whether the counter of e, an uncontested bucket
// (contested ones are written every interval), must be written now, after
// its renewal at t. It need not while the allowance the others set aside
// for this node covers what it spent since and what it holds now (the
// last published allowance, less the spending since, plus this node's
// share of the refill since, which the others leave to it), and the
// standing counter has more than 4 sync intervals of its hold left.
//
// Requires the entry's shard mu held.
func (s *Store) mustPublish(e *gentry, t int64) bool {
	interval := int64(s.cfg.SyncInterval)
	if e.pubAt == 0 || t-e.pubAt > e.pubFor-4*interval {
		return true
	}
	capacity := float64(e.spec.Capacity())
	covered := e.pubHold - float64(e.taken-e.flushed) + e.share*rate(e.spec)*float64(t-e.pubAt)
	return e.allow > min(covered, capacity)+1e-9*capacity+1e-9
}

// flushChunk caps the counters a flush has in flight at once, well under
// the NATS client's limit of outstanding asynchronous publishes (4000 by
// default), beyond which PublishAsync fails: a node with more dirty
// buckets than that in one interval (many distinct clients) would
// otherwise never flush.
const flushChunk = 1000

// awaitFlush waits for the acknowledgements of items, marks those whose
// write failed (or was not sent) dirty again, records the first error in
// firstErr and returns how many were acknowledged.
func (s *Store) awaitFlush(ctx context.Context, items []flushItem, firstErr *error) int {
	ok := 0
	for i := range items {
		it := &items[i]
		if it.fut != nil {
			select {
			case pa := <-it.fut.Ok():
				ok++
				s.wd.acked(pa.Sequence, monotonic())
				continue
			case err := <-it.fut.Err():
				if *firstErr == nil {
					*firstErr = err
				}
			case <-ctx.Done():
				if *firstErr == nil {
					*firstErr = ctx.Err()
				}
			}
		}
		it.sh.mu.Lock()
		if !it.e.dead {
			it.e.pubAt = 0 // not published: the next flush writes it
			s.markDirty(it.sh, it.e)
		}
		it.sh.mu.Unlock()
	}
	return ok
}

// applyCounter applies another node's counter of the bucket base, or keeps
// it for when this node first uses the bucket. c.at is this node's dating
// of the write; wrote is the writer's own timestamp.
func (s *Store) applyCounter(base, nodeTok string, c *counter, wrote int64) {
	now := s.now()
	t := now.UnixNano()
	if lag := t - wrote; lag >= 0 {
		s.stats.syncLag.Store(lag) // by the writer's clock: a diagnostic only
	}
	s.stats.remoteUpdates.Add(1)
	for range 8 {
		s.index.mu.Lock()
		e := s.index.m[base]
		if e == nil {
			p := s.index.pending[base]
			if p == nil {
				p = make(map[string]pendingCounter)
				s.index.pending[base] = p
			}
			if old, ok := p[nodeTok]; !ok || !newer(&old.c, c) {
				p[nodeTok] = pendingCounter{c: *c, recv: t}
			}
			s.index.mu.Unlock()
			return
		}
		s.index.mu.Unlock()
		sh := s.shardOf(e.key)
		sh.mu.Lock()
		if !e.dead {
			s.applyRemote(sh, e, nodeTok, c, now, t)
			sh.mu.Unlock()
			return
		}
		sh.mu.Unlock()
	}
}

// applyRemote debits e with what it has not yet applied of a node's
// counter: the growth within an epoch, or on first sight the writer's
// consumption that has not yet refilled. Requires the entry's shard mu held.
func (s *Store) applyRemote(sh *gshard, e *gentry, nodeTok string, c *counter, now time.Time, recv int64) {
	if e.remote == nil {
		e.remote = make(map[string]*remoteSeen)
	}
	r := e.remote[nodeTok]
	if r == nil {
		r = &remoteSeen{}
		e.remote[nodeTok] = r
	}
	spec := e.spec
	var debit float64
	var refund int64
	contest := false
	switch {
	case r.epoch == c.epoch && c.inc < r.inc:
		return // an incarnation already superseded
	case r.epoch != c.epoch || c.inc > r.inc:
		// First sight of this incarnation: its cumulative total started
		// at zero, so only the writer's own consumption not yet refilled
		// (net of its refunds) says what it spent.
		// A counter written under another Spec (before or after a live
		// limit change) spent the same fraction of this one's burst.
		debit = (c.unrefilled - rate(c.spec)*float64(now.UnixNano()-c.at)) * scaleFactor(c.spec, spec)
		if e.share == 1 && c.demand > 0 {
			e.gen-- // another node spends too: renew at the next Take
		}
		contest = c.demand > 0
		r.epoch, r.inc, r.cum, r.refunded = c.epoch, c.inc, c.cum, c.refunded
		r.demand, r.reserved, r.alone, r.at = c.demand, c.reserved, c.alone, recv
	case c.cum > r.cum || c.refunded > r.refunded:
		contest = c.demand > 2*r.demand || (r.until < recv && c.demand > 0)
		// Growth published under another Spec (the writer or this node
		// has applied a live limit change the other has not yet) counts
		// as the same fraction of this one's burst.
		f := scaleFactor(c.spec, spec)
		debit = float64(c.cum-r.cum) * f
		refund = int64(math.Floor(float64(max(c.refunded-r.refunded, 0)) * f))
		r.cum, r.refunded = max(c.cum, r.cum), max(c.refunded, r.refunded)
		r.demand, r.reserved, r.alone, r.at = c.demand, c.reserved, c.alone, recv
	case c.cum == r.cum && recv > r.at:
		contest = c.demand > 2*r.demand || (r.until < recv && c.demand > 0)
		r.demand, r.reserved, r.alone, r.at = c.demand, c.reserved, c.alone, recv
	default:
		return
	}
	r.until = recv + max(3*int64(s.cfg.SyncInterval), c.hold)
	if contest && e.pubAt > 0 && e.pubHold >= 1 {
		// Another node starts spending while this one holds a published
		// allowance: renew and publish at the next flush, so that an
		// allowance this node no longer needs is released.
		s.markDirty(sh, e)
		e.gen--
	}
	if refund > 0 {
		e.b.RefundAt(spec, now, refund)
	}
	if debit > 0 {
		e.b.DebitAt(spec, now, debit)
	}
}

// buckets returns the number of Global entries held.
func (s *Store) buckets() int {
	s.index.mu.Lock()
	defer s.index.mu.Unlock()
	return len(s.index.m)
}

// newer reports whether a kept counter old is later than c: a later
// incarnation of the same run, or the same incarnation further on.
func newer(old, c *counter) bool {
	if old.epoch != c.epoch {
		return false
	}
	return old.inc > c.inc || (old.inc == c.inc && old.cum > c.cum)
}

// sweepPending drops kept counters whose consumption has refilled, whose
// demand is stale and whose allowance no longer stands.
func (s *Store) sweepPending(t int64) {
	s.index.mu.Lock()
	defer s.index.mu.Unlock()
	for base, p := range s.index.pending {
		for node, pc := range p {
			left := pc.c.unrefilled - rate(pc.c.spec)*float64(t-pc.c.at)
			held := pc.c.reserved >= 1 && t-pc.recv <= pc.c.hold
			if left <= 0 && !held && t-pc.recv > int64(10*s.cfg.SyncInterval) {
				delete(p, node)
			}
		}
		if len(p) == 0 {
			delete(s.index.pending, base)
		}
	}
}
