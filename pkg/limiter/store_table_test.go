package limiter

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// TestTableMatchesMap runs random inserts, removals and sweeps on a table
// whose hashes are drawn from a small set, so that keys collide on the full
// hash and crowd into long probe runs that wrap around the end, and checks
// it against a map after every step.
func TestTableMatchesMap(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(7, 11))
	var tb table
	ref := make(map[Key]int64)
	hashOf := func(k Key) uint64 {
		// 24 distinct hashes for 200 keys; never 0.
		var sum uint64
		for _, c := range k.ID {
			sum = sum*31 + uint64(c)
		}
		return 1 + (sum%24)<<8 | sum%3
	}
	key := func() Key { return Key{Kind: KindMessages, ID: fmt.Sprintf("k%d", r.IntN(200))} }
	check := func(step int) {
		t.Helper()
		if tb.n != len(ref) {
			t.Fatalf("step %d: table holds %d, map %d", step, tb.n, len(ref))
		}
		used := 0
		for _, s := range tb.slots {
			if s.h != 0 {
				used++
				if want, ok := ref[s.key]; !ok || want != s.fullAt {
					t.Fatalf("step %d: slot %v not in the map (%d, %v)", step, s.key, want, ok)
				}
			}
		}
		if used != tb.n {
			t.Fatalf("step %d: %d slots used, n = %d", step, used, tb.n)
		}
		for k, v := range ref {
			i, ok := tb.find(hashOf(k), k)
			if !ok || tb.slots[i].fullAt != v {
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
				tb.slots[i].fullAt = v
			} else {
				if tb.needsGrow() {
					tb.resize(max(minTableSize, 2*len(tb.slots)))
					i, _ = tb.find(h, k)
				}
				tb.slots[i] = slot{h: h, fullAt: v, key: k}
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
				tb.resize(tb.sizeFor(tb.n))
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

// TestTakeAtAllocatesNothing guards the hot path: a Take on a bucket the
// store holds allocates nothing.
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
}

// TestMemoryStoreKindsShareShard guards the locality CheckMessage relies
// on: the buckets of every kind for one ID live in one shard.
func TestMemoryStoreKindsShareShard(t *testing.T) {
	t.Parallel()
	s := NewMemoryStore(MemoryStoreConfig{SweepInterval: -1})
	defer s.Close()
	for i := 0; i < 100; i++ {
		id := fmt.Sprintf("client-%d", i)
		want := s.shard(s.hash(Key{Kind: KindMessages, ID: id}))
		for _, k := range []Kind{KindBytes, KindConnectionRate, "room_member"} {
			if got := s.shard(s.hash(Key{Kind: k, ID: id})); got != want {
				t.Fatalf("%s: kind %s in another shard than %s", id, k, KindMessages)
			}
		}
	}
}
