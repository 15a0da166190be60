package limiter

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

// benchKeys is the number of distinct keys of the keyed benchmarks, more
// than the CPU caches hold; hotKeys is a number whose buckets fit in them.
const (
	benchKeys = 100_000
	hotKeys   = 1_000
)

// benchSpec is the limit every keyed benchmark applies: 6000 a minute
// (100/s) with a burst of 100, for both the store and the baseline.
var benchSpec = Spec{Limit: 6000, Per: time.Minute, Burst: 100}

func benchKeyNames(n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("client-%d", i)
	}
	return names
}

// seq hands each RunParallel goroutine its own random starting point so the
// goroutines spread over the keys instead of marching in step.
var seq atomic.Uint64

func nextIndex(i *uint64) int {
	*i = *i*6364136223846793005 + 1442695040888963407
	return int((*i >> 33) % benchKeys)
}

// BenchmarkTake measures the sharded store on 100,000 distinct keys. The
// "clock" case reads time.Now per call like the baseline does; "fixed" is
// the core cost when the caller passes the time in. "fixed-1k" is "fixed"
// on 1,000 keys, whose buckets stay in the CPU caches: the cost of the
// store's own work without the memory latency of a cold key.
func BenchmarkTake(b *testing.B) {
	names := benchKeyNames(benchKeys)
	keys := make([]Key, benchKeys)
	for i, n := range names {
		keys[i] = Key{Kind: KindMessages, ID: n}
	}
	run := func(b *testing.B, fixed bool, keys []Key) {
		s := NewMemoryStore(MemoryStoreConfig{SweepInterval: -1})
		start := time.Now()
		for _, k := range keys {
			s.TakeAt(k, benchSpec, start, 1)
		}
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			i := seq.Add(rand.Uint64())
			now := time.Now()
			for pb.Next() {
				if !fixed {
					now = time.Now()
				}
				s.TakeAt(keys[nextIndex(&i)%len(keys)], benchSpec, now, 1)
			}
		})
	}
	b.Run("clock", func(b *testing.B) { run(b, false, keys) })
	b.Run("fixed", func(b *testing.B) { run(b, true, keys) })
	b.Run("fixed-1k", func(b *testing.B) { run(b, true, keys[:hotKeys]) })
}

// BenchmarkBaselineXTimeRate is what a user writes without this package:
// a map of x/time/rate limiters under one mutex, same keys, same limit,
// same clock reads.
func BenchmarkBaselineXTimeRate(b *testing.B) { benchBaseline(b, benchKeys) }

// BenchmarkBaselineXTimeRate1k is the baseline on the 1,000 keys of
// BenchmarkTake/fixed-1k.
func BenchmarkBaselineXTimeRate1k(b *testing.B) { benchBaseline(b, hotKeys) }

func benchBaseline(b *testing.B, nkeys int) {
	names := benchKeyNames(nkeys)
	var mu sync.Mutex
	m := make(map[string]*rate.Limiter, nkeys)
	get := func(k string) *rate.Limiter {
		mu.Lock()
		defer mu.Unlock()
		l := m[k]
		if l == nil {
			l = rate.NewLimiter(rate.Limit(float64(benchSpec.Limit)/benchSpec.Per.Seconds()), int(benchSpec.Burst))
			m[k] = l
		}
		return l
	}
	start := time.Now()
	for _, n := range names {
		get(n).AllowN(start, 1)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := seq.Add(rand.Uint64())
		for pb.Next() {
			k := names[nextIndex(&i)%nkeys]
			mu.Lock()
			l := m[k]
			if l == nil {
				l = rate.NewLimiter(rate.Limit(float64(benchSpec.Limit)/benchSpec.Per.Seconds()), int(benchSpec.Burst))
				m[k] = l
			}
			l.AllowN(time.Now(), 1)
			mu.Unlock()
		}
	})
}

// BenchmarkCheckMessage measures Limiter.CheckMessage on 10,000 registered
// connections with the Generous preset, per connection and per client.
func BenchmarkCheckMessage(b *testing.B) {
	for _, scope := range []Scope{PerConnection, PerClient} {
		b.Run(scope.String(), func(b *testing.B) {
			lim := Generous()
			lim.MessagesPerMinute = 1 << 40 // measure the checks, not denials
			lim.BytesPerMinute = 1 << 50
			lim.MessageScope = scope
			l, err := New(Config{Limits: lim})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			const conns = 10_000
			ids := make([]string, conns)
			for i := range ids {
				ids[i] = fmt.Sprintf("conn-%d", i)
				if _, err := l.Connect(ctx, ids[i], fmt.Sprintf("client-%d", i%2500), nil); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i := seq.Add(rand.Uint64())
				for pb.Next() {
					if d := l.CheckMessage(ctx, ids[nextIndex(&i)%conns], 512); !d.Allowed {
						b.Errorf("denied: %+v", d)
						return
					}
				}
			})
		})
	}
}

// TestBenchmarkKeysVary guards the benchmarks' key generator: a generator
// stuck on a few keys would make every benchmark here meaningless.
func TestBenchmarkKeysVary(t *testing.T) {
	t.Parallel()
	seen := make(map[int]bool)
	i := uint64(12345)
	for n := 0; n < 100_000; n++ {
		seen[nextIndex(&i)] = true
	}
	if len(seen) < 60_000 {
		t.Fatalf("100,000 draws hit only %d distinct keys", len(seen))
	}
}
