package limiter

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sethvargo/go-limiter/memorystore"
	ulule "github.com/ulule/limiter/v3"
	ululememory "github.com/ulule/limiter/v3/drivers/store/memory"
	"golang.org/x/time/rate"
)

// The keyed benchmarks compare this package's MemoryStore with the stores
// a user would otherwise pick, on the same keys, at the same rate, with the
// same goroutines, each reading the clock once per decision:
//
//   - ratethrottle: MemoryStore.TakeNow, which reads the store's clock;
//   - ratethrottle-timenow: MemoryStore.TakeAt passed time.Now(), as the
//     Limiter calls it;
//   - go-limiter: github.com/sethvargo/go-limiter's memorystore;
//   - ulule: github.com/ulule/limiter/v3's memory store (a fixed window);
//   - xrate: a map of golang.org/x/time/rate limiters under one mutex, what
//     a user writes without a library.
//
// Every peer gets its keys generated, every key inserted and the setup
// garbage collected before the timer starts.
const (
	benchKeys = 100_000 // more buckets than the CPU caches hold
	hotKeys   = 1_000   // buckets that stay in the caches
	heapKeys  = 1_000_000
)

// benchSpec is the limit every keyed benchmark applies: 6000 a minute
// (100/s) with a burst of 100. The peers get 100 a second.
var benchSpec = Spec{Limit: 6000, Per: time.Minute, Burst: 100}

func benchKeyNames(n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("client-%d", i)
	}
	return names
}

// seq hands each goroutine its own random starting point so the
// goroutines spread over the keys instead of marching in step.
var seq atomic.Uint64

// nextIndex advances the generator *i and returns an index below n from
// its high bits (a multiply and shift, not a division, so that the
// generator costs every peer little and the same).
func nextIndex(i *uint64, n int) int {
	*i = *i*6364136223846793005 + 1442695040888963407
	return int((*i >> 32) * uint64(n) >> 32)
}

// keyedPeer is one store under comparison: setup builds it over names and
// returns the decision for names[i], reading the clock, and a cleanup.
type keyedPeer struct {
	name  string
	setup func(names []string) (take func(i int), cleanup func())
}

func keyedPeers() []keyedPeer {
	return []keyedPeer{
		{"go-limiter", func(names []string) (func(int), func()) {
			s, err := memorystore.New(&memorystore.Config{Tokens: uint64(benchSpec.Burst), Interval: time.Second})
			if err != nil {
				panic(err)
			}
			return func(i int) {
				_, _, _, _, _ = s.Take(context.Background(), names[i])
			}, func() { s.Close(context.Background()) }
		}},
		{"ratethrottle", func(names []string) (func(int), func()) {
			s := NewMemoryStore(MemoryStoreConfig{SweepInterval: -1})
			return func(i int) {
				s.TakeNow(Key{Kind: KindMessages, ID: names[i]}, benchSpec, 1)
			}, func() { s.Close() }
		}},
		{"ratethrottle-timenow", func(names []string) (func(int), func()) {
			s := NewMemoryStore(MemoryStoreConfig{SweepInterval: -1})
			return func(i int) {
				s.TakeAt(Key{Kind: KindMessages, ID: names[i]}, benchSpec, time.Now(), 1)
			}, func() { s.Close() }
		}},
		{"xrate", func(names []string) (func(int), func()) {
			var mu sync.Mutex
			m := make(map[string]*rate.Limiter)
			every := rate.Limit(float64(benchSpec.Limit) / benchSpec.Per.Seconds())
			return func(i int) {
				mu.Lock()
				l := m[names[i]]
				if l == nil {
					l = rate.NewLimiter(every, int(benchSpec.Burst))
					m[names[i]] = l
				}
				l.Allow()
				mu.Unlock()
			}, func() {}
		}},
		{"ulule", func(names []string) (func(int), func()) {
			// No cleaner goroutine: the benchmark's keys never expire.
			s := ululememory.NewStoreWithOptions(ulule.StoreOptions{Prefix: ulule.DefaultPrefix})
			r := ulule.Rate{Period: time.Second, Limit: benchSpec.Burst}
			return func(i int) {
				_, _ = s.Increment(context.Background(), names[i], 1, r)
			}, func() {}
		}},
	}
}

// setupKeyed builds peer p over nkeys keys, decides once for every key and
// collects the setup's garbage, so that none of it is collected inside the
// timed loop.
func setupKeyed(b *testing.B, p keyedPeer, nkeys int) (func(int), func()) {
	b.Helper()
	names := benchKeyNames(nkeys)
	take, cleanup := p.setup(names)
	for i := range names {
		take(i)
	}
	runtime.GC()
	runtime.GC()
	b.ReportAllocs()
	b.ResetTimer()
	return take, cleanup
}

// BenchmarkKeyed is one keyed decision (one token from one key's bucket,
// reading the clock) in each peer. "random-100k" draws 100,000 keys at
// random from RunParallel's goroutines (GOMAXPROCS: 2 on the project's
// machine); "hot-1k" draws 1,000 keys from one goroutine. Run it several
// times with -count 1 to interleave the peers (see docs/BENCHMARKS.md).
func BenchmarkKeyed(b *testing.B) {
	for _, p := range keyedPeers() {
		b.Run("random-100k/"+p.name, func(b *testing.B) {
			take, cleanup := setupKeyed(b, p, benchKeys)
			defer cleanup()
			b.RunParallel(func(pb *testing.PB) {
				i := seq.Add(rand.Uint64())
				for pb.Next() {
					take(nextIndex(&i, benchKeys))
				}
			})
		})
	}
	for _, p := range keyedPeers() {
		b.Run("hot-1k/"+p.name, func(b *testing.B) {
			take, cleanup := setupKeyed(b, p, hotKeys)
			defer cleanup()
			i := seq.Add(rand.Uint64())
			for range b.N {
				take(nextIndex(&i, hotKeys))
			}
		})
	}
}

// turnOps is how many decisions each peer makes in one turn of
// BenchmarkKeyedInterleaved: about a millisecond of work.
const turnOps = 4096

// BenchmarkKeyedInterleaved runs the store and go-limiter in turns of
// turnOps decisions, in alternating order, timing each turn, so that the
// machine's load, which changes over seconds on a shared machine, falls on
// both alike. Only these two take turns, so that their tables (20 MB at
// 100,000 keys) can share the caches without a third evicting them. b.N is
// the decisions per peer. It reports each peer's ns per decision
// (ns/op-PEER) and go-limiter's time over the store's (x-ratethrottle: the
// store's throughput as a multiple of go-limiter's). In "random-100k"
// GOMAXPROCS goroutines share each turn, as RunParallel's would; "hot-1k"
// runs one.
func BenchmarkKeyedInterleaved(b *testing.B) {
	var peers []keyedPeer
	for _, p := range keyedPeers() {
		if p.name == "go-limiter" || p.name == "ratethrottle" {
			peers = append(peers, p)
		}
	}
	for _, c := range []struct {
		name              string
		nkeys, goroutines int
	}{{"random-100k", benchKeys, runtime.GOMAXPROCS(0)}, {"hot-1k", hotKeys, 1}} {
		b.Run(c.name, func(b *testing.B) {
			names := benchKeyNames(c.nkeys)
			takes := make([]func(int), len(peers))
			for j, p := range peers {
				take, cleanup := p.setup(names)
				defer cleanup()
				for i := range names {
					take(i)
				}
				takes[j] = take
			}
			seeds := make([]uint64, c.goroutines)
			for g := range seeds {
				seeds[g] = rand.Uint64()
			}
			run := func(take func(int), n int) {
				if c.goroutines == 1 {
					for range n {
						take(nextIndex(&seeds[0], c.nkeys))
					}
					return
				}
				var wg sync.WaitGroup
				for g := range c.goroutines {
					wg.Go(func() {
						for range n / c.goroutines {
							take(nextIndex(&seeds[g], c.nkeys))
						}
					})
				}
				wg.Wait()
			}
			elapsed := make([]time.Duration, len(peers))
			runtime.GC()
			runtime.GC()
			b.ReportAllocs()
			b.ResetTimer()
			for turn, done := 0, 0; done < b.N; turn++ {
				n := min(turnOps, b.N-done)
				n -= n % c.goroutines
				if n == 0 {
					n = c.goroutines
				}
				for k := range peers {
					j := (turn + k) % len(peers)
					start := time.Now()
					run(takes[j], n)
					elapsed[j] += time.Since(start)
				}
				done += n
			}
			b.StopTimer()
			var base time.Duration
			for j, p := range peers {
				b.ReportMetric(float64(elapsed[j])/float64(b.N), "ns/op-"+p.name)
				if p.name == "go-limiter" {
					base = elapsed[j]
				}
			}
			for j, p := range peers {
				if p.name != "go-limiter" {
					b.ReportMetric(float64(base)/float64(elapsed[j]), "x-"+p.name)
				}
			}
		})
	}
}

// BenchmarkTakeFixedTime is the store's own cost when the caller passes
// the time in, as the Limiter does for the checks of one message.
func BenchmarkTakeFixedTime(b *testing.B) {
	for _, nkeys := range []int{benchKeys, hotKeys} {
		b.Run(fmt.Sprint(nkeys), func(b *testing.B) {
			names := benchKeyNames(nkeys)
			s := NewMemoryStore(MemoryStoreConfig{SweepInterval: -1})
			defer s.Close()
			now := time.Now()
			for _, n := range names {
				s.TakeAt(Key{Kind: KindMessages, ID: n}, benchSpec, now, 1)
			}
			runtime.GC()
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i := seq.Add(rand.Uint64())
				for pb.Next() {
					s.TakeAt(Key{Kind: KindMessages, ID: names[nextIndex(&i, nkeys)]}, benchSpec, now, 1)
				}
			})
		})
	}
}

// BenchmarkHeapPerKey reports the live heap each peer holds per tracked
// key (B/key) after one decision on each of 1,000,000 keys. The key
// strings are made before the first measurement, so a store that keeps the
// caller's string is not charged for it; one that copies it is.
func BenchmarkHeapPerKey(b *testing.B) {
	names := benchKeyNames(heapKeys)
	for _, p := range keyedPeers() {
		if p.name == "ratethrottle-timenow" {
			continue // the same store as ratethrottle
		}
		b.Run(p.name, func(b *testing.B) {
			var perKey float64
			for range b.N {
				before := heapInUse()
				take, cleanup := p.setup(names)
				for i := range names {
					take(i)
				}
				after := heapInUse()
				perKey = float64(int64(after)-int64(before)) / heapKeys
				runtime.KeepAlive(take)
				cleanup()
			}
			b.ReportMetric(perKey, "B/key")
		})
	}
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
			runtime.GC()
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i := seq.Add(rand.Uint64())
				for pb.Next() {
					if d := l.CheckMessage(ctx, ids[nextIndex(&i, conns)], 512); !d.Allowed {
						b.Errorf("denied: %+v", d)
						return
					}
				}
			})
		})
	}
}

// TestBenchmarkKeysVary guards the benchmarks' key generator: a generator
// stuck on a few keys, or one that favours some, would make every
// benchmark here meaningless. 100,000 uniform draws from n keys hit
// n(1-e^(-100000/n)) distinct keys: 63,212 of 100,000 and all 1,000 of
// 1,000; the bounds below are well inside what a uniform draw gives.
func TestBenchmarkKeysVary(t *testing.T) {
	t.Parallel()
	for _, n := range []int{benchKeys, hotKeys} {
		counts := make([]int, n)
		i := uint64(12345)
		for range 100_000 {
			counts[nextIndex(&i, n)]++
		}
		distinct, most := 0, 0
		for _, c := range counts {
			if c > 0 {
				distinct++
			}
			most = max(most, c)
		}
		switch n {
		case benchKeys:
			if distinct < 62_000 || most > 12 {
				t.Fatalf("100,000 draws from %d keys: %d distinct, the most drawn %d times", n, distinct, most)
			}
		case hotKeys:
			if distinct != n || most > 160 {
				t.Fatalf("100,000 draws from %d keys: %d distinct, the most drawn %d times", n, distinct, most)
			}
		}
	}
}
