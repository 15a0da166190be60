package limiter

import (
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestMemoryStoreSweepDropsOnlyFullBuckets(t *testing.T) {
	t.Parallel()
	s := NewMemoryStore(MemoryStoreConfig{SweepInterval: -1})
	defer s.Close()
	spec := PerMinute(60)
	s.TakeAt(Key{Kind: KindMessages, ID: "a"}, spec, t0, 1)  // full again at t0+1s
	s.TakeAt(Key{Kind: KindMessages, ID: "b"}, spec, t0, 30) // full again at t0+30s
	s.debit(Key{Kind: KindMessages, ID: "c"}, spec, t0, 90)  // in debt: full at t0+90s
	require.Zero(t, s.Sweep(t0.Add(999*time.Millisecond)))
	require.Equal(t, 1, s.Sweep(t0.Add(time.Second)))
	require.Equal(t, 1, s.Sweep(t0.Add(30*time.Second)))
	require.InDelta(t, -1, s.Tokens(Key{Kind: KindMessages, ID: "c"}, spec, t0.Add(29*time.Second)), 1e-9)
	require.Equal(t, 1, s.Sweep(t0.Add(90*time.Second)))
	b, _ := s.Len()
	require.Zero(t, b)
}

func TestMemoryStoreDeniedFreshTakeKeepsNoState(t *testing.T) {
	t.Parallel()
	s := NewMemoryStore(MemoryStoreConfig{SweepInterval: -1})
	r := s.TakeAt(Key{Kind: KindBytes, ID: "x"}, PerMinute(10), t0, 11)
	require.False(t, r.OK)
	require.Equal(t, Never, r.RetryAfter)
	b, _ := s.Len()
	require.Zero(t, b)
}

func TestMemoryStoreSweeperRunsAndStops(t *testing.T) {
	t.Parallel()
	clk := newClock()
	s := NewMemoryStore(MemoryStoreConfig{SweepInterval: time.Millisecond, Now: clk.Now})
	s.TakeAt(Key{Kind: KindMessages, ID: "a"}, PerMinute(60), t0, 1)
	clk.Advance(time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if b, _ := s.Len(); b == 0 {
			break
		}
		require.True(t, time.Now().Before(deadline), "sweeper did not drop the full bucket")
		runtime.Gosched()
	}
	require.NoError(t, s.Close())
	require.NoError(t, s.Close())
}

func TestMemoryStoreSlotsAtomic(t *testing.T) {
	t.Parallel()
	s := NewMemoryStore(MemoryStoreConfig{SweepInterval: -1})
	var wg sync.WaitGroup
	var mu sync.Mutex
	granted := 0
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, ok, _ := s.Acquire(ctx, "c", 5); ok {
				mu.Lock()
				granted++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	require.Equal(t, 5, granted)
	for i := 0; i < 7; i++ {
		require.NoError(t, s.Release(ctx, "c"))
	}
	n, _ := s.Count(ctx, "c")
	require.Zero(t, n)
	_, clients := s.Len()
	require.Zero(t, clients)
}

// heapInUse returns the live heap after a full collection.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// A million distinct clients, each checked once, must not hold memory once
// their buckets have refilled and the sweep has run. The stated bound: the
// live heap returns to within 4 MiB of where it started (the peak is over
// 100 MiB), because the sweep drops full buckets and rebuilds shard maps
// that have emptied.
func TestMillionClientsMemoryBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates a million buckets")
	}
	l, clk := newTestLimiter(t, DefaultLimits(), nil)
	before := heapInUse()
	const n = 1_000_000
	for i := 0; i < n; i++ {
		if !l.CheckConnection(ctx, fmt.Sprintf("client-%d", i)).Allowed {
			t.Fatalf("client %d denied", i)
		}
	}
	peak := heapInUse()
	buckets, _ := l.own.Len()
	require.Equal(t, n, buckets)
	clk.Advance(time.Second)
	require.Equal(t, n, l.own.Sweep(clk.Now()))
	after := heapInUse()
	t.Logf("heap: before %d KiB, peak %d KiB, after sweep %d KiB", before>>10, peak>>10, after>>10)
	require.Greater(t, peak, before+50<<20, "the test did not grow the heap; it measures nothing")
	require.Less(t, after, before+4<<20, "memory did not return after the sweep")
}

// The sweeper computes when a bucket is full from the rate of the spec the
// bucket was last advanced with, which each take records: a faster spec
// lets the bucket be swept sooner, a slower one (even on a denied take)
// keeps it longer.
func TestMemoryStoreSweepFollowsSpecChange(t *testing.T) {
	t.Parallel()
	slow := Spec{Limit: 60, Per: time.Minute, Burst: 10} // a token a second
	fast := Spec{Limit: 6000, Per: time.Minute, Burst: 10}
	for _, tc := range []struct {
		name        string
		first, then Spec
		n           int64 // taken with then at t0
		ok          bool
		dropped     bool // at t0+1s
	}{
		{"faster", slow, fast, 0, true, true},  // 10 missing at 100/s: full at t0+0.1s
		{"slower", fast, slow, 0, true, false}, // 10 missing at 1/s: full at t0+10s
		{"slower denied", fast, slow, 1, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := NewMemoryStore(MemoryStoreConfig{SweepInterval: -1})
			defer s.Close()
			k := Key{Kind: KindMessages, ID: "a"}
			require.True(t, s.TakeAt(k, tc.first, t0, 10).OK)
			require.Equal(t, tc.ok, s.TakeAt(k, tc.then, t0, tc.n).OK)
			want := 0
			if tc.dropped {
				want = 1
			}
			require.Equal(t, want, s.Sweep(t0.Add(time.Second)))
			if !tc.dropped {
				// Still there: the bucket is not refilled by the sweep.
				require.InDelta(t, 1, s.Tokens(k, tc.then, t0.Add(time.Second)), 1e-9)
			}
		})
	}
}
