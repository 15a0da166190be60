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
// each a mutex and a hash table, chosen by a hash of the key. It is the
// Limiter's default and the local layer of cluster stores.
//
// A bucket's key is hashed once, to 64 bits: the low bits choose the shard
// and the rest the slot in the shard's open-addressed table, whose slots
// hold the hash, the bucket and the full key inline. A lookup thus reads
// one slot (usually one or two cache lines) and compares the full key only
// when the hashes match, so keys whose hashes collide stay distinct.
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
	t    table
	peak int
	_    [16]byte // keep shards on separate cache lines
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
	for i := range s.slots {
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

// hash returns the 64-bit hash of k, never 0 (the mark of an empty slot).
// Its low bits choose the shard, the rest the slot in the shard's table.
// The kind changes only the slot bits, so that the buckets of every kind
// for one ID (a client's message and byte buckets, which CheckMessage
// takes together) share a shard and the cache line of its lock.
func (s *MemoryStore) hash(k Key) uint64 {
	h := maphash.String(s.seed, k.ID)
	if k.Scope != "" {
		h ^= maphash.String(s.seed, k.Scope) * 0x9e3779b97f4a7c15
	}
	h ^= (maphash.String(s.seed, string(k.Kind)) * 0xbf58476d1ce4e5b9) &^ (storeShards - 1)
	if h == 0 {
		h = 1
	}
	return h
}

func (s *MemoryStore) shard(h uint64) *bucketShard {
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
	h := s.hash(key)
	sh := s.shard(h)
	sh.mu.Lock()
	i, found := sh.t.find(h, key)
	if !found {
		// A denied take on a fresh bucket (n above capacity) keeps no state.
		var b Bucket
		r := b.TakeAt(spec, now, n)
		if r.OK {
			sh.insert(i, h, key, b, b.FullAt(spec).UnixNano())
		}
		sh.mu.Unlock()
		return r
	}
	e := &sh.t.slots[i]
	r := e.b.TakeAt(spec, now, n)
	if r.OK {
		e.fullAt = e.b.FullAt(spec).UnixNano()
	}
	sh.mu.Unlock()
	return r
}

// insert adds a bucket at slot i, which find returned for h and key;
// requires sh.mu held.
func (sh *bucketShard) insert(i int, h uint64, key Key, b Bucket, fullAt int64) {
	if sh.t.needsGrow() {
		sh.t.resize(max(minTableSize, 2*len(sh.t.slots)))
		i, _ = sh.t.find(h, key)
	}
	sh.t.slots[i] = slot{h: h, fullAt: fullAt, b: b, key: key}
	sh.t.n++
	if sh.t.n > sh.peak {
		sh.peak = sh.t.n
	}
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
	h := s.hash(key)
	sh := s.shard(h)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if i, found := sh.t.find(h, key); found {
		return sh.t.slots[i].b.TokensAt(spec, now)
	}
	return float64(spec.Capacity())
}

// update applies f to the bucket key, creating it if need be, and drops it
// again if f leaves it full.
func (s *MemoryStore) update(key Key, spec Spec, now time.Time, f func(*Bucket)) {
	if spec.Unlimited() {
		return
	}
	h := s.hash(key)
	sh := s.shard(h)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	i, found := sh.t.find(h, key)
	if !found {
		var b Bucket
		f(&b)
		if fullAt := b.FullAt(spec).UnixNano(); fullAt > now.UnixNano() {
			sh.insert(i, h, key, b, fullAt)
		}
		return
	}
	e := &sh.t.slots[i]
	f(&e.b)
	e.fullAt = e.b.FullAt(spec).UnixNano()
	if e.fullAt <= now.UnixNano() {
		sh.t.remove(i)
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
		buckets += sh.t.n
		sh.mu.Unlock()
		ss := &s.slots[i]
		ss.mu.Lock()
		clients += len(ss.m)
		ss.mu.Unlock()
	}
	return buckets, clients
}

// Sweep drops every bucket that is full at now and shrinks shards whose
// tables hold under a quarter of their peak, returning the buckets
// dropped. The sweeper calls it; tests call it with a chosen time.
func (s *MemoryStore) Sweep(now time.Time) int {
	t := now.UnixNano()
	removed := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		removed += sh.t.removeFull(t)
		if shrink(&sh.peak, sh.t.n) {
			sh.t.resize(sh.t.sizeFor(sh.t.n))
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

// minTableSize is the size of a shard's table when its first bucket comes.
const minTableSize = 8

// slot is one entry of a table: a bucket with its key and the key's hash
// inline, so that a lookup touches one slot. h is 0 in an empty slot.
type slot struct {
	h      uint64
	fullAt int64 // UnixNano at which b is full again
	b      Bucket
	key    Key
}

// table is an open-addressed hash table with linear probing, keyed by a
// 64-bit hash (bits 8 and up choose the home slot; the low 8 bits chose the
// shard) and verified by the full key. Deletion shifts the following
// entries back, so there are no tombstones. The length of slots is zero or
// a power of two, and at most three quarters of the slots are used.
// A table is not safe for concurrent use; its shard's mutex guards it.
type table struct {
	slots []slot
	n     int
}

func (t *table) home(h uint64) int { return int((h >> 8) & uint64(len(t.slots)-1)) }

// find returns the slot holding key (hash h) and true, or the empty slot
// where it would go and false; -1 if the table has no slots.
func (t *table) find(h uint64, key Key) (int, bool) {
	if len(t.slots) == 0 {
		return -1, false
	}
	mask := len(t.slots) - 1
	for i := t.home(h); ; i = (i + 1) & mask {
		s := &t.slots[i]
		if s.h == h && s.key == key {
			return i, true
		}
		if s.h == 0 {
			return i, false
		}
	}
}

// needsGrow reports whether one more entry would fill more than three
// quarters of the table.
func (t *table) needsGrow() bool { return (t.n+1)*4 > len(t.slots)*3 }

// sizeFor returns the table size that holds n entries at most half full,
// or 0 for none.
func (t *table) sizeFor(n int) int {
	if n == 0 {
		return 0
	}
	size := minTableSize
	for size < 2*n {
		size *= 2
	}
	return size
}

// resize moves every entry into a table of size slots (a power of two
// larger than the entries, or 0 when there are none).
func (t *table) resize(size int) {
	old := t.slots
	t.slots = nil
	if size > 0 {
		t.slots = make([]slot, size)
	}
	mask := size - 1
	for k := range old {
		if old[k].h == 0 {
			continue
		}
		i := t.home(old[k].h)
		for t.slots[i].h != 0 {
			i = (i + 1) & mask
		}
		t.slots[i] = old[k]
	}
}

// remove empties slot i and shifts back the entries after it that would
// otherwise be cut off from their home slot.
func (t *table) remove(i int) {
	mask := len(t.slots) - 1
	for j := (i + 1) & mask; t.slots[j].h != 0; j = (j + 1) & mask {
		// The entry at j may move to the hole at i unless its home lies
		// cyclically in (i, j].
		if home := t.home(t.slots[j].h); (j-home)&mask >= (j-i)&mask {
			t.slots[i] = t.slots[j]
			i = j
		}
	}
	t.slots[i] = slot{}
	t.n--
}

// removeFull removes every entry full at now (UnixNano) and returns how
// many it removed.
func (t *table) removeFull(now int64) int {
	removed := 0
	for i := 0; i < len(t.slots); {
		if s := &t.slots[i]; s.h != 0 && s.fullAt <= now {
			// remove may shift a later entry into i: look at i again.
			t.remove(i)
			removed++
			continue
		}
		i++
	}
	return removed
}
