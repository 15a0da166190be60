package limiter

import (
	"context"
	"encoding/binary"
	"strings"
	"sync"
	"time"
	"unsafe"
)

const storeShards = 256

// cacheLine is the size the store pads its shards and slots to.
const cacheLine = 64

// MemoryStoreConfig configures a MemoryStore. Zero fields get defaults.
type MemoryStoreConfig struct {
	// SweepInterval is how often idle state is dropped. Zero means
	// 30 seconds; a negative value starts no sweeper (call Sweep yourself).
	SweepInterval time.Duration
	// Now returns the current time for the sweeper and TakeNow. Nil means
	// time.Now for the sweeper and the store's own clock for TakeNow.
	Now func() time.Time
}

// MemoryStore is the in-memory Store and Slots: a fixed array of shards,
// each a mutex and a hash table, chosen by a hash of the key. It is the
// Limiter's default and the local layer of cluster stores.
//
// A bucket's key is hashed once, to 64 bits: the low bits choose the shard
// and the rest the slot in the shard's open-addressed table. The table
// keeps one tag byte per slot (six bits of the hash and whether the key
// has a scope) apart from the slots, so that probing reads a dense array,
// and each slot is 64 bytes holding the bucket, when it is full again, the
// key and the full hash. A lookup thus reads one line of tags and one line
// of slot, and compares the full key only when the tags match, so keys
// whose hashes collide stay distinct. Tables grow by a third when four
// fifths full, so a large store holds between 0.6 and 0.8 buckets per
// slot.
//
// One sweeper goroutine drops buckets that have refilled to full (they
// cost nothing to recreate) and shrinks shards whose maps have emptied, so
// a million distinct clients seen once do not hold memory. A client with no
// slots is dropped as its last slot is released.
//
// A MemoryStore is safe for concurrent use. Close stops the sweeper; it is
// idempotent.
type MemoryStore struct {
	// The shards come first: a MemoryStore is one large allocation, which
	// starts on a page, so each shard starts on a cache line.
	shards [storeShards]bucketShard
	slots  [storeShards]slotShard
	keys   keyHasher
	now    func() time.Time
	// start and base are the store's own clock when the config gives no
	// Now: base plus the monotonic time since start, in UnixNano.
	start  time.Time
	base   int64
	ownNow bool

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

type bucketShardData struct {
	mu sync.Mutex
	t  table
}

// bucketShard is padded to whole cache lines so that no two shards' locks
// share one; TestMemoryStoreLayout checks it. Unpadded it is one line.
type bucketShard struct {
	// The padding comes first: Go lengthens a struct that ends in a
	// field of size zero.
	_ [(cacheLine - unsafe.Sizeof(bucketShardData{})%cacheLine) % cacheLine]byte
	bucketShardData
}

type slotShardData struct {
	mu   sync.Mutex
	m    map[string]int64
	peak int32
}

type slotShard struct {
	// The padding comes first: Go lengthens a struct that ends in a
	// field of size zero.
	_ [(cacheLine - unsafe.Sizeof(slotShardData{})%cacheLine) % cacheLine]byte
	slotShardData
}

// NewMemoryStore returns a MemoryStore and starts its sweeper.
func NewMemoryStore(cfg MemoryStoreConfig) *MemoryStore {
	s := &MemoryStore{keys: newKeyHasher(), now: cfg.Now, stop: make(chan struct{}), done: make(chan struct{})}
	if s.now == nil {
		s.ownNow = true
		s.start = time.Now()
		s.base = s.start.UnixNano()
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

// nowNano returns the store's time in UnixNano: the config's Now, or the
// wall time at NewMemoryStore plus the monotonic time since, which reads
// one clock instead of time.Now's two.
func (s *MemoryStore) nowNano() int64 {
	if s.ownNow {
		return s.base + int64(time.Since(s.start))
	}
	return s.now().UnixNano()
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

// scopedFlag marks, in the low byte of a table hash, a key with a Scope.
const scopedFlag = 1

// hash returns the shard of k and its hash in the shard's table. The shard
// comes from the ID alone, so that the buckets of every kind for one ID (a
// client's message and byte buckets, which CheckMessage takes together)
// share a shard and the cache line of its lock. The table hash mixes in the
// kind and scope (hashed as IDs are: a class's or room's name is short);
// its low byte, which within one shard would always be the
// same, says instead whether the key has a scope (and the tag carries it).
func (s *MemoryStore) hash(k Key) (*bucketShard, uint64) {
	h := s.keys.id(k.ID)
	sh := &s.shards[h%storeShards]
	h ^= kindMix(k.Kind)
	h &^= 0xff
	if k.Scope != "" {
		h ^= (s.keys.id(k.Scope) * 0x9e3779b97f4a7c15) &^ 0xff
		h |= scopedFlag
	}
	return sh, h
}

// kindMix spreads a kind over the bits above the low byte. Kinds are short
// constants, never client input, so this looks at the length and three
// bytes instead of hashing every byte: two kinds that mix alike only share
// probe runs, since the full key is always compared.
func kindMix(k Kind) uint64 {
	n := len(k)
	if n == 0 {
		return 0
	}
	x := uint64(n) | uint64(k[0])<<8 | uint64(k[n/2])<<16 | uint64(k[n-1])<<24
	return (x * 0xbf58476d1ce4e5b9) &^ 0xff
}

// keyRest returns what a slot keeps of a key besides its ID: the kind
// itself for a key without a scope (no copy), or the kind's length as a
// uvarint followed by the kind and the scope, which no other (kind, scope)
// pair encodes to.
func keyRest(k Key) string {
	if k.Scope == "" {
		return string(k.Kind)
	}
	var n [binary.MaxVarintLen64]byte
	m := binary.PutUvarint(n[:], uint64(len(k.Kind)))
	var b strings.Builder
	b.Grow(m + len(k.Kind) + len(k.Scope))
	b.Write(n[:m])
	b.WriteString(string(k.Kind))
	b.WriteString(k.Scope)
	return b.String()
}

// restIsScoped reports whether rest, kept by keyRest for a key with a
// scope, holds k's kind and scope.
func restIsScoped(rest string, k Key) bool {
	if kl := len(k.Kind); kl < 0x80 { // a one-byte uvarint: every kind there is
		return len(rest) == 1+kl+len(k.Scope) && rest[0] == byte(kl) &&
			eqShort(rest[1:1+kl], string(k.Kind)) && eqShort(rest[1+kl:], k.Scope)
	}
	var buf [binary.MaxVarintLen64]byte
	m := binary.PutUvarint(buf[:], uint64(len(k.Kind)))
	kl := len(k.Kind)
	return len(rest) == m+kl+len(k.Scope) && rest[:m] == string(buf[:m]) &&
		rest[m:m+kl] == string(k.Kind) && rest[m+kl:] == k.Scope
}

// eqShort is a == b. Kinds and scopes (class and room names) are mostly
// shorter than 17 bytes, which it compares inline in at most two
// overlapping loads of each, where == calls the runtime's memequal.
func eqShort(a, b string) bool {
	n := len(a)
	if n != len(b) {
		return false
	}
	if n > 16 {
		return a == b
	}
	if n == 0 {
		return true
	}
	p := unsafe.Slice(unsafe.StringData(a), n)
	q := unsafe.Slice(unsafe.StringData(b), n)
	switch {
	case n >= 8:
		return binary.LittleEndian.Uint64(p) == binary.LittleEndian.Uint64(q) &&
			binary.LittleEndian.Uint64(p[n-8:]) == binary.LittleEndian.Uint64(q[n-8:])
	case n >= 4:
		return binary.LittleEndian.Uint32(p) == binary.LittleEndian.Uint32(q) &&
			binary.LittleEndian.Uint32(p[n-4:]) == binary.LittleEndian.Uint32(q[n-4:])
	}
	// One to three bytes: these three are all of them.
	return p[0] == q[0] && p[n>>1] == q[n>>1] && p[n-1] == q[n-1]
}

func (s *MemoryStore) slotShard(client string) *slotShard {
	return &s.slots[s.keys.str(client)%storeShards]
}

// Take implements Store. It never fails.
func (s *MemoryStore) Take(_ context.Context, key Key, spec Spec, now time.Time, n int64) (Result, error) {
	// TakeAt's body, which the compiler would not inline here: one call
	// less on the path every Limiter decision takes.
	if spec.Unlimited() {
		return Result{OK: true, Remaining: spec.Capacity()}, nil
	}
	return s.take(key, spec, now.UnixNano(), n), nil
}

// TakeAt is Take without a context or an error, for callers that hold a
// *MemoryStore.
func (s *MemoryStore) TakeAt(key Key, spec Spec, now time.Time, n int64) Result {
	if spec.Unlimited() {
		return Result{OK: true, Remaining: spec.Capacity()}
	}
	return s.take(key, spec, now.UnixNano(), n)
}

// TakeNow is TakeAt at the store's own clock: the config's Now if it has
// one, else the wall time at NewMemoryStore advanced by the monotonic
// clock, which costs one clock read where time.Now costs two. Its times
// mix with those passed to TakeAt as long as the wall clock is not stepped;
// a step backwards never credits tokens twice either way.
func (s *MemoryStore) TakeNow(key Key, spec Spec, n int64) Result {
	if spec.Unlimited() {
		return Result{OK: true, Remaining: spec.Capacity()}
	}
	return s.take(key, spec, s.nowNano(), n)
}

func (s *MemoryStore) take(key Key, spec Spec, now, n int64) Result {
	sp := spec.shape()
	sh, h := s.hash(key)
	sh.mu.Lock()
	i, found := sh.t.find(h, key)
	if !found {
		// A denied take on a fresh bucket (n above capacity) keeps no state.
		var b Bucket
		r := b.take(sp, now, n)
		if r.OK {
			sh.insert(i, h, key, b, sp.nsPer)
		}
		sh.mu.Unlock()
		return r
	}
	// The slot keeps the rate of the spec its bucket was last advanced
	// with, from which the sweeper computes when the bucket is full: a
	// take does not.
	e := &sh.t.slots[i]
	r := e.b.take(sp, now, n)
	e.nsPer = sp.nsPer
	sh.mu.Unlock()
	return r
}

// insert adds a bucket at slot i, which find returned for h and key;
// requires sh.mu held.
func (sh *bucketShard) insert(i int, h uint64, key Key, b Bucket, nsPer float64) {
	if sh.t.needsGrow() {
		sh.t.resize(sizeFor(int(sh.t.n) + 1))
		i, _ = sh.t.find(h, key)
	}
	sh.t.tags[i] = tagOf(h)
	sh.t.slots[i] = slot{h: h, nsPer: nsPer, b: b, id: key.ID, rest: keyRest(key)}
	sh.t.n++
	sh.t.peak = max(sh.t.peak, sh.t.n)
}

// Refund implements Store.
func (s *MemoryStore) Refund(_ context.Context, key Key, spec Spec, now time.Time, n int64) error {
	t := now.UnixNano()
	s.update(key, spec, t, func(b *Bucket, sp shape) { b.refund(sp, t, n) })
	return nil
}

// debit takes n tokens from the bucket unconditionally, driving it into
// debt if need be.
func (s *MemoryStore) debit(key Key, spec Spec, now time.Time, n float64) {
	if n <= 0 {
		return
	}
	t := now.UnixNano()
	s.update(key, spec, t, func(b *Bucket, sp shape) { b.debit(sp, t, n) })
}

// Tokens returns the tokens the bucket holds at now (negative in debt); a
// bucket the store does not hold is full.
func (s *MemoryStore) Tokens(key Key, spec Spec, now time.Time) float64 {
	sh, h := s.hash(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if i, found := sh.t.find(h, key); found {
		return sh.t.slots[i].b.TokensAt(spec, now)
	}
	return float64(spec.Capacity())
}

// update applies f to the bucket key, creating it if need be, and drops it
// again if f leaves it full at now (UnixNano).
func (s *MemoryStore) update(key Key, spec Spec, now int64, f func(*Bucket, shape)) {
	if spec.Unlimited() {
		return
	}
	sp := spec.shape()
	sh, h := s.hash(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	i, found := sh.t.find(h, key)
	if !found {
		var b Bucket
		f(&b, sp)
		if b.fullAt(sp) > now {
			sh.insert(i, h, key, b, sp.nsPer)
		}
		return
	}
	e := &sh.t.slots[i]
	f(&e.b, sp)
	e.nsPer = sp.nsPer
	if e.fullAt() <= now {
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
	if n := int32(len(sh.m)); n > sh.peak {
		sh.peak = n
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
// holds, the measure of its memory: for a gauge, or for a store built on a
// MemoryStore that reports its size. It locks one shard at a time, so under
// traffic it is a close count, not a snapshot of one instant.
func (s *MemoryStore) Len() (buckets, clients int) {
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		buckets += int(sh.t.n)
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
// dropped. The store's own sweeper calls it every SweepInterval. It is
// part of the API for a store built on a MemoryStore (kvstore's local
// layer sweeps it on the cluster store's schedule and clock), for a
// MemoryStore with a negative SweepInterval, which has no sweeper, and for
// tests that sweep at a chosen time.
func (s *MemoryStore) Sweep(now time.Time) int {
	t := now.UnixNano()
	removed := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		removed += sh.t.removeFull(t)
		if shrink(&sh.t.peak, sh.t.n) {
			sh.t.resize(sizeFor(int(sh.t.n)))
		}
		sh.mu.Unlock()

		ss := &s.slots[i]
		ss.mu.Lock()
		if shrink(&ss.peak, int32(len(ss.m))) {
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
func shrink(peak *int32, n int32) bool {
	if *peak < 64 || n > *peak/4 {
		return false
	}
	*peak = n
	return true
}

// minTableSize is the size of a shard's table when its first bucket comes.
const minTableSize = 8

// slot is one entry of a table, 64 bytes: a bucket with its key and the
// key's hash inline, so that a lookup touches one slot. It keeps the
// nanoseconds per token of the spec its bucket was last advanced with
// rather than the time the bucket is full again, which only the sweeper
// needs: a take stores one number instead of computing that time. A lookup reads
// every field but h (the tag stands for it), which comes last: a table of
// 9 to 511 slots is a small allocation whose 8-byte header puts each slot
// 8 bytes past a cache line, and then the fields a lookup reads still
// share one line (TestMemoryStoreLayout).
type slot struct {
	nsPer float64 // the shape's nsPer of the spec b was last advanced with
	b     Bucket
	id    string // the key's ID
	rest  string // the key's kind and scope (see keyRest)
	h     uint64 // the table hash (see MemoryStore.hash), for resizing
}

// fullAt returns the UnixNano at which the slot's bucket is full again, as
// Bucket.fullAt computes it for the spec it was last advanced with.
func (e *slot) fullAt() int64 { return e.b.fullAt(shape{nsPer: e.nsPer}) }

// sameString is a == b, without the call to compare the bytes when both
// point at the same ones, as a key's ID and kind usually do: the caller
// passes the string it passed when the bucket was made.
func sameString(a, b string) bool {
	return len(a) == len(b) && (unsafe.StringData(a) == unsafe.StringData(b) || a == b)
}

// table is an open-addressed hash table with linear probing, keyed by a
// 64-bit hash and verified by the full key. The high 32 bits of the hash
// choose the home slot (scaled to the table's length, which need not be a
// power of two). tags[i] is 0 for an empty slot and otherwise 0x80, plus
// 0x40 for a key with a scope, plus bits 8 to 13 of the hash, so that a
// probe reads the dense tags and opens a slot only when its tag matches;
// a matching tag and equal ID and rest make equal keys. Deletion shifts
// the following entries back, so there are no tombstones. At most four
// fifths of the slots are used.
// A table is not safe for concurrent use; its shard's mutex guards it.
type table struct {
	tags  []uint8
	slots []slot
	n     int32 // entries
	peak  int32 // the most entries since the last shrink
}

func tagOf(h uint64) uint8 { return 0x80 | uint8(h&scopedFlag)<<6 | uint8(h>>8)&0x3f }

func (t *table) home(h uint64) int { return int((h >> 32) * uint64(len(t.slots)) >> 32) }

// find returns the slot holding key (table hash h) and true, or the empty
// slot where it would go and false; -1 if the table has no slots.
func (t *table) find(h uint64, key Key) (int, bool) {
	n := len(t.slots)
	if n == 0 {
		return -1, false
	}
	tags := t.tags[:n]
	tag := tagOf(h)
	for i := t.home(h); ; {
		switch tags[i] {
		case 0:
			return i, false
		case tag:
			// The tag holds the key's scopedness, so a slot with an
			// equal tag keeps its rest the way keyRest keeps key's.
			if s := &t.slots[i]; sameString(s.id, key.ID) &&
				(key.Scope == "" && sameString(s.rest, string(key.Kind)) ||
					key.Scope != "" && restIsScoped(s.rest, key)) {
				return i, true
			}
		}
		if i++; i == n {
			i = 0
		}
	}
}

// needsGrow reports whether one more entry would fill more than four
// fifths of the table.
func (t *table) needsGrow() bool { return (int(t.n)+1)*5 > len(t.slots)*4 }

// sizeFor returns the table size that holds n entries three fifths full
// (so a full table grows by a third), at least minTableSize, or 0 for none.
func sizeFor(n int) int {
	if n == 0 {
		return 0
	}
	return max(minTableSize, n*5/3+1)
}

// resize moves every entry into a table of size slots (more than the
// entries, or 0 when there are none).
func (t *table) resize(size int) {
	oldTags, old := t.tags, t.slots
	t.tags, t.slots = nil, nil
	if size > 0 {
		t.tags, t.slots = make([]uint8, size), make([]slot, size)
	}
	for k := range old {
		if oldTags[k] == 0 {
			continue
		}
		i := t.home(old[k].h)
		for t.tags[i] != 0 {
			if i++; i == size {
				i = 0
			}
		}
		t.tags[i], t.slots[i] = oldTags[k], old[k]
	}
}

// remove empties slot i and shifts back the entries after it that would
// otherwise be cut off from their home slot.
func (t *table) remove(i int) {
	n := len(t.slots)
	// dist is how far b lies after a in probe order.
	dist := func(a, b int) int {
		if d := b - a; d >= 0 {
			return d
		}
		return b - a + n
	}
	for j := i; ; {
		if j++; j == n {
			j = 0
		}
		if t.tags[j] == 0 {
			break
		}
		// The entry at j may move to the hole at i unless its home lies
		// cyclically in (i, j].
		if dist(t.home(t.slots[j].h), j) >= dist(i, j) {
			t.tags[i], t.slots[i] = t.tags[j], t.slots[j]
			i = j
		}
	}
	t.tags[i], t.slots[i] = 0, slot{}
	t.n--
}

// removeFull removes every entry full at now (UnixNano) and returns how
// many it removed.
func (t *table) removeFull(now int64) int {
	removed := 0
	for i := 0; i < len(t.slots); {
		if t.tags[i] != 0 && t.slots[i].fullAt() <= now {
			// remove may shift a later entry into i: look at i again.
			t.remove(i)
			removed++
			continue
		}
		i++
	}
	return removed
}
