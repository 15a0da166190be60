package limiter

import (
	"context"
	"hash/maphash"
	"sync"
	"time"
)

const storeShards = 256

// MemoryStoreConfig configures a MemoryStore. Zero fields get defaults.
type MemoryStoreConfig struct {
	// SweepInterval is how often idle state is dropped. Zero means
	// 30 seconds; a negative value starts no sweeper (call Sweep yourself).
	SweepInterval time.Duration
	// Now returns the current time for the sweeper. Nil means time.Now.
	Now func() time.Time
}

// MemoryStore is the in-memory Store and Slots: a fixed array of shards,
// each a mutex and a map, chosen by a hash of the key. It is the Limiter's
// default and the local layer of cluster stores.
//
// One sweeper goroutine drops buckets that have refilled to full (they
// cost nothing to recreate) and shrinks shards whose maps have emptied, so
// a million distinct clients seen once do not hold memory. A client with no
// slots is dropped as its last slot is released.
//
// A MemoryStore is safe for concurrent use. Close stops the sweeper; it is
// idempotent.
type MemoryStore struct {
	seed   maphash.Seed
	shards [storeShards]bucketShard
	slots  [storeShards]slotShard
	now    func() time.Time

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

type bucketShard struct {
	mu   sync.Mutex
	m    map[Key]*entry
	peak int
	_    [40]byte // keep shards on separate cache lines
}

type entry struct {
	b      Bucket
	fullAt int64 // UnixNano at which b is full again
}

type slotShard struct {
	mu   sync.Mutex
	m    map[string]int64
	peak int
	_    [40]byte
}

// NewMemoryStore returns a MemoryStore and starts its sweeper.
func NewMemoryStore(cfg MemoryStoreConfig) *MemoryStore {
	s := &MemoryStore{seed: maphash.MakeSeed(), now: cfg.Now, stop: make(chan struct{}), done: make(chan struct{})}
	if s.now == nil {
		s.now = time.Now
	}
	for i := range s.shards {
		s.shards[i].m = make(map[Key]*entry)
		s.slots[i].m = make(map[string]int64)
	}
	interval := cfg.SweepInterval
	if interval == 0 {
		interval = 30 * time.Second
	}
	if interval < 0 {
		close(s.done)
		return s
	}
	go s.sweeper(interval)
	return s
}

func (s *MemoryStore) sweeper(interval time.Duration) {
	defer close(s.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.Sweep(s.now())
		}
	}
}

// Close stops the sweeper and waits for it. It is idempotent; the store
// keeps answering after Close.
func (s *MemoryStore) Close() error {
	s.closeOnce.Do(func() { close(s.stop) })
	<-s.done
	return nil
}

func (s *MemoryStore) shard(k Key) *bucketShard {
	h := maphash.String(s.seed, k.ID)
	if k.Scope != "" {
		h ^= maphash.String(s.seed, k.Scope) * 31
	}
	return &s.shards[h%storeShards]
}

func (s *MemoryStore) slotShard(client string) *slotShard {
	return &s.slots[maphash.String(s.seed, client)%storeShards]
}

// Take implements Store. It never fails.
func (s *MemoryStore) Take(_ context.Context, key Key, spec Spec, now time.Time, n int64) (Result, error) {
	return s.TakeAt(key, spec, now, n), nil
}

// TakeAt is Take without a context or an error, for callers that hold a
// *MemoryStore.
func (s *MemoryStore) TakeAt(key Key, spec Spec, now time.Time, n int64) Result {
	if spec.Unlimited() {
		return Result{OK: true, Remaining: spec.Capacity()}
	}
	sh := s.shard(key)
	sh.mu.Lock()
	e := sh.m[key]
	if e == nil {
		// A denied take on a fresh bucket (n above capacity) keeps no state.
		var b Bucket
		r := b.TakeAt(spec, now, n)
		if r.OK {
			sh.m[key] = &entry{b: b, fullAt: b.FullAt(spec).UnixNano()}
			if len(sh.m) > sh.peak {
				sh.peak = len(sh.m)
			}
		}
		sh.mu.Unlock()
		return r
	}
	r := e.b.TakeAt(spec, now, n)
	if r.OK {
		e.fullAt = e.b.FullAt(spec).UnixNano()
	}
	sh.mu.Unlock()
	return r
}

// Refund implements Store.
func (s *MemoryStore) Refund(_ context.Context, key Key, spec Spec, now time.Time, n int64) error {
	s.update(key, spec, now, func(b *Bucket) { b.RefundAt(spec, now, n) })
	return nil
}

// Debit takes n tokens from the bucket unconditionally, driving it into
// debt if need be. Cluster stores use it to apply other nodes' consumption.
func (s *MemoryStore) Debit(key Key, spec Spec, now time.Time, n float64) {
	if n <= 0 {
		return
	}
	s.update(key, spec, now, func(b *Bucket) { b.DebitAt(spec, now, n) })
}

// Tokens returns the tokens the bucket holds at now (negative in debt); a
// bucket the store does not hold is full.
func (s *MemoryStore) Tokens(key Key, spec Spec, now time.Time) float64 {
	sh := s.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if e := sh.m[key]; e != nil {
		return e.b.TokensAt(spec, now)
	}
	return float64(spec.Capacity())
}

// update applies f to the bucket key, creating it if need be, and drops it
// again if f leaves it full.
func (s *MemoryStore) update(key Key, spec Spec, now time.Time, f func(*Bucket)) {
	if spec.Unlimited() {
		return
	}
	sh := s.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.m[key]
	if e == nil {
		e = &entry{}
	}
	f(&e.b)
	e.fullAt = e.b.FullAt(spec).UnixNano()
	if e.fullAt <= now.UnixNano() {
		delete(sh.m, key)
		return
	}
	sh.m[key] = e
	if len(sh.m) > sh.peak {
		sh.peak = len(sh.m)
	}
}

// Acquire implements Slots.
func (s *MemoryStore) Acquire(_ context.Context, client string, max int64) (int64, bool, error) {
	sh := s.slotShard(client)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	c := sh.m[client]
	if max > 0 && c >= max {
		return c, false, nil
	}
	c++
	sh.m[client] = c
	if len(sh.m) > sh.peak {
		sh.peak = len(sh.m)
	}
	return c, true, nil
}

// Release implements Slots.
func (s *MemoryStore) Release(_ context.Context, client string) error {
	sh := s.slotShard(client)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	switch c := sh.m[client]; {
	case c > 1:
		sh.m[client] = c - 1
	case c == 1:
		delete(sh.m, client)
	}
	return nil
}

// Count implements Slots.
func (s *MemoryStore) Count(_ context.Context, client string) (int64, error) {
	sh := s.slotShard(client)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.m[client], nil
}

// Len returns the number of buckets and of clients with slots the store
// holds.
func (s *MemoryStore) Len() (buckets, clients int) {
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		buckets += len(sh.m)
		sh.mu.Unlock()
		ss := &s.slots[i]
		ss.mu.Lock()
		clients += len(ss.m)
		ss.mu.Unlock()
	}
	return buckets, clients
}

// Sweep drops every bucket that is full at now and shrinks shards whose
// maps hold under a quarter of their peak, returning the buckets dropped.
// The sweeper calls it; tests call it with a chosen time.
func (s *MemoryStore) Sweep(now time.Time) int {
	t := now.UnixNano()
	removed := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for k, e := range sh.m {
			if e.fullAt <= t {
				delete(sh.m, k)
				removed++
			}
		}
		if shrink(&sh.peak, len(sh.m)) {
			m := make(map[Key]*entry, len(sh.m))
			for k, e := range sh.m {
				m[k] = e
			}
			sh.m = m
		}
		sh.mu.Unlock()

		ss := &s.slots[i]
		ss.mu.Lock()
		if shrink(&ss.peak, len(ss.m)) {
			m := make(map[string]int64, len(ss.m))
			for k, c := range ss.m {
				m[k] = c
			}
			ss.m = m
		}
		ss.mu.Unlock()
	}
	return removed
}

// shrink reports whether a map of n entries that once held *peak should be
// rebuilt (Go maps never give back their buckets), and resets the peak.
func shrink(peak *int, n int) bool {
	if *peak < 64 || n > *peak/4 {
		return false
	}
	*peak = n
	return true
}
