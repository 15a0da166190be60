package limiter

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/require"
)

// TestTableMatchesMap runs random inserts, removals and sweeps on a table
// whose hashes are drawn from a small set, so that keys collide on the full
// hash and on the tag and crowd into long probe runs that wrap around the
// end, and checks it against a map after every step. Half the keys have a
// scope, and some differ from another only in where kind ends and scope
// begins.
func TestTableMatchesMap(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(7, 11))
	var tb table
	ref := make(map[Key]int64)
	hashOf := func(k Key) uint64 {
		// 24 distinct hashes for 600 keys, 5 tags, homes spread over the
		// table.
		var sum uint64
		for _, c := range k.ID {
			sum = sum*31 + uint64(c)
		}
		h := (sum%24)*0x0aaa_aaaa_0000_0000 | (sum%5)<<8
		if k.Scope != "" {
			h |= scopedFlag
		}
		return h
	}
	key := func() Key {
		id := fmt.Sprintf("k%d", r.IntN(200))
		switch r.IntN(3) {
		case 0:
			return Key{Kind: "room", Scope: "_member", ID: id}
		case 1:
			return Key{Kind: "room_member", ID: id}
		}
		return Key{Kind: "room_", Scope: "member", ID: id}
	}
	check := func(step int) {
		t.Helper()
		if int(tb.n) != len(ref) {
			t.Fatalf("step %d: table holds %d, map %d", step, tb.n, len(ref))
		}
		used := 0
		for i, s := range tb.slots {
			if tb.tags[i] == 0 {
				if s != (slot{}) {
					t.Fatalf("step %d: empty slot %d holds %+v", step, i, s)
				}
				continue
			}
			used++
			if tb.tags[i] != tagOf(s.h) {
				t.Fatalf("step %d: slot %d tag %#x, hash %#x", step, i, tb.tags[i], s.h)
			}
		}
		if used != int(tb.n) {
			t.Fatalf("step %d: %d slots used, n = %d", step, used, tb.n)
		}
		for k, v := range ref {
			i, ok := tb.find(hashOf(k), k)
			if !ok || tb.slots[i].fullAt() != v {
				t.Fatalf("step %d: %v not found", step, k)
			}
		}
	}
	for step := 0; step < 20_000; step++ {
		k := key()
		h := hashOf(k)
		switch op := r.IntN(10); {
		case op < 6: // insert or update
			v := r.Int64N(1000)
			if i, ok := tb.find(h, k); ok {
				tb.slots[i].b.last = v
			} else {
				if tb.needsGrow() {
					tb.resize(sizeFor(int(tb.n) + 1))
					i, _ = tb.find(h, k)
				}
				tb.tags[i] = tagOf(h)
				tb.slots[i] = slot{h: h, nsPer: 1, b: Bucket{last: v}, id: k.ID, rest: keyRest(k)}
				tb.n++
			}
			ref[k] = v
		case op < 9: // remove
			if i, ok := tb.find(h, k); ok {
				tb.remove(i)
			}
			delete(ref, k)
		default: // sweep, sometimes followed by a shrink
			now := r.Int64N(1000)
			want := 0
			for k, v := range ref {
				if v <= now {
					delete(ref, k)
					want++
				}
			}
			if got := tb.removeFull(now); got != want {
				t.Fatalf("step %d: removeFull removed %d, want %d", step, got, want)
			}
			if r.IntN(2) == 0 {
				tb.resize(sizeFor(int(tb.n)))
			}
		}
		check(step)
	}
}

// TestMemoryStoreKeysWithEqualHashStayDistinct puts two keys with the same
// hash in one shard's table and checks that each keeps its own bucket.
func TestMemoryStoreKeysWithEqualHashStayDistinct(t *testing.T) {
	t.Parallel()
	var sh bucketShard
	spec := PerMinute(60)
	a := Key{Kind: KindMessages, ID: "a"}
	b := Key{Kind: KindMessages, ID: "b"}
	const h = 42 << 8
	for _, k := range []Key{a, b} {
		i, found := sh.t.find(h, k)
		if found {
			t.Fatalf("%v found before insertion", k)
		}
		var bk Bucket
		bk.TakeAt(spec, t0, 1)
		sh.insert(i, h, k, bk, 0)
	}
	ia, okA := sh.t.find(h, a)
	ib, okB := sh.t.find(h, b)
	if !okA || !okB || ia == ib {
		t.Fatalf("find: a at %d (%v), b at %d (%v)", ia, okA, ib, okB)
	}
	sh.t.slots[ia].b.TakeAt(spec, t0, 10)
	if got := sh.t.slots[ib].b.TokensAt(spec, t0); got != 59 {
		t.Fatalf("b holds %v tokens after a took 10, want 59", got)
	}
	sh.t.remove(ia)
	if _, ok := sh.t.find(h, a); ok {
		t.Fatal("a found after removal")
	}
	if i, ok := sh.t.find(h, b); !ok || sh.t.slots[i].b.TokensAt(spec, t0) != 59 {
		t.Fatal("b lost when a was removed")
	}
}

// TestTakeAtAllocatesNothing guards the hot path: a TakeAt or TakeNow on a
// bucket the store holds allocates nothing.
func TestTakeAtAllocatesNothing(t *testing.T) {
	s := NewMemoryStore(MemoryStoreConfig{SweepInterval: -1})
	defer s.Close()
	keys := make([]Key, 1000)
	for i := range keys {
		keys[i] = Key{Kind: KindMessages, ID: fmt.Sprintf("c%d", i)}
		s.TakeAt(keys[i], benchSpec, t0, 1)
	}
	i := 0
	if a := testing.AllocsPerRun(1000, func() {
		s.TakeAt(keys[i%len(keys)], benchSpec, t0, 0)
		i++
	}); a != 0 {
		t.Fatalf("TakeAt allocates %v times per call", a)
	}
	if a := testing.AllocsPerRun(1000, func() {
		s.TakeNow(keys[i%len(keys)], benchSpec, 0)
		i++
	}); a != 0 {
		t.Fatalf("TakeNow allocates %v times per call", a)
	}
}

// TestMemoryStoreKindsShareShard guards the locality CheckMessage relies
// on: the buckets of every kind for one ID live in one shard.
func TestMemoryStoreKindsShareShard(t *testing.T) {
	t.Parallel()
	s := NewMemoryStore(MemoryStoreConfig{SweepInterval: -1})
	defer s.Close()
	for i := 0; i < 100; i++ {
		id := fmt.Sprintf("client-%d", i)
		want, _ := s.hash(Key{Kind: KindMessages, ID: id})
		for _, k := range []Kind{KindBytes, KindConnectionRate, "room_member"} {
			if got, _ := s.hash(Key{Kind: k, ID: id, Scope: "lobby"}); got != want {
				t.Fatalf("%s: kind %s in another shard than %s", id, k, KindMessages)
			}
		}
	}
}

// TestMemoryStoreLayout checks the padding the store's speed rests on: a
// slot is 64 bytes, and every field a lookup reads lies on one cache line
// whether the table starts on a line (tables of at most 8 slots, or at
// least 512, which are allocated with no header) or 8 bytes past one (in
// between, behind the allocation header); a shard's lock shares its line
// with no other shard's (and so in the registry's connShard and
// clientShard); the shards start on a line (a MemoryStore is one
// allocation large enough to start on a page).
func TestMemoryStoreLayout(t *testing.T) {
	t.Parallel()
	if got := unsafe.Sizeof(slot{}); got != cacheLine {
		t.Fatalf("slot is %d bytes, want %d", got, cacheLine)
	}
	if got := unsafe.Offsetof(slot{}.h); got != cacheLine-8 {
		t.Fatalf("the hash, which lookups do not read, is at %d, not in the slot's last 8 bytes", got)
	}
	for n := 1; n < 2000; n = sizeFor(n + 1) {
		var tb table
		tb.resize(n)
		off := uintptr(unsafe.Pointer(&tb.slots[0])) % cacheLine
		if off != 0 && off != 8 {
			t.Fatalf("a table of %d slots starts %d bytes past a cache line", n, off)
		}
	}
	for name, size := range map[string]uintptr{
		"bucketShard": unsafe.Sizeof(bucketShard{}), "slotShard": unsafe.Sizeof(slotShard{}),
		// The Limiter's registry of connections is sharded the same way.
		"connShard": unsafe.Sizeof(connShard{}), "clientShard": unsafe.Sizeof(clientShard{}),
	} {
		if size != cacheLine {
			t.Fatalf("%s is %d bytes, not one cache line", name, size)
		}
	}
	s := NewMemoryStore(MemoryStoreConfig{SweepInterval: -1})
	defer s.Close()
	for _, p := range []uintptr{uintptr(unsafe.Pointer(&s.shards[0])), uintptr(unsafe.Pointer(&s.slots[0]))} {
		if p%cacheLine != 0 {
			t.Fatalf("shards at %#x, not on a cache line", p)
		}
	}
}

// TestMemoryStoreScopedKeysStayDistinct checks keys that differ only in
// where the kind ends and the scope begins, or in a kind long enough to
// need a two-byte length, against the buckets they must not share.
func TestMemoryStoreScopedKeysStayDistinct(t *testing.T) {
	t.Parallel()
	s := NewMemoryStore(MemoryStoreConfig{SweepInterval: -1})
	defer s.Close()
	long := Kind(strings.Repeat("k", 200))
	keys := []Key{
		{Kind: "room", Scope: "_member", ID: "a"},
		{Kind: "room_member", ID: "a"},
		{Kind: "room_", Scope: "member", ID: "a"},
		{Kind: "room_member", Scope: "", ID: "a\x00"},
		{Kind: long, Scope: "x", ID: "a"},
		{Kind: long + "x", ID: "a"},
		{Kind: long[:199], Scope: "kx", ID: "a"},
		{Kind: "\x04room", Scope: "_member", ID: "a"},
		{},
		{Scope: "a"},
	}
	spec := PerMinute(100)
	for i, k := range keys {
		// Key i takes i+1 tokens; every other bucket must be untouched.
		require.True(t, s.TakeAt(k, spec, t0, int64(i+1)).OK)
	}
	for i, k := range keys {
		require.Equal(t, float64(100-i-1), s.Tokens(k, spec, t0), "key %d %q", i, k)
	}
	b, _ := s.Len()
	require.Equal(t, len(keys), b)
}

// TestMemoryStoreTakeNow checks the store's own clock: it follows the
// config's Now when there is one, and otherwise tracks the wall clock.
func TestMemoryStoreTakeNow(t *testing.T) {
	t.Parallel()
	clk := newClock()
	s := NewMemoryStore(MemoryStoreConfig{SweepInterval: -1, Now: clk.Now})
	defer s.Close()
	k := Key{Kind: KindMessages, ID: "a"}
	spec := PerMinute(60)
	require.True(t, s.TakeNow(k, spec, 60).OK)
	r := s.TakeNow(k, spec, 1)
	require.False(t, r.OK)
	require.Equal(t, time.Second, r.RetryAfter)
	clk.Advance(time.Second)
	require.True(t, s.TakeNow(k, spec, 1).OK)

	own := NewMemoryStore(MemoryStoreConfig{SweepInterval: -1})
	defer own.Close()
	before := time.Now().UnixNano()
	got := own.nowNano()
	after := time.Now().UnixNano()
	// The monotonic clock and the wall clock may drift apart by the
	// wall clock's slewing, microseconds over a test's run.
	require.InDelta(t, float64(before+after)/2, float64(got), float64(after-before)/2+float64(time.Millisecond))
	require.True(t, own.TakeNow(k, spec, 60).OK)
	require.False(t, own.TakeNow(k, spec, 1).OK)
	require.InDelta(t, 0, own.Tokens(k, spec, time.Now()), 0.1)
}

// eqShort agrees with == for every length up to past its inline limit,
// with the strings differing in any one byte or not at all.
func TestEqShort(t *testing.T) {
	t.Parallel()
	for n := 0; n <= 20; n++ {
		a := make([]byte, n)
		for i := range a {
			a[i] = byte('a' + i)
		}
		require.True(t, eqShort(string(a), string(append([]byte(nil), a...))), "length %d", n)
		require.False(t, eqShort(string(a), string(a)+"x"), "length %d and %d", n, n+1)
		for i := range n {
			b := append([]byte(nil), a...)
			b[i] ^= 0x20
			require.False(t, eqShort(string(a), string(b)), "length %d, byte %d differs", n, i)
		}
	}
}
