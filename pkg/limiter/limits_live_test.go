package limiter

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A per-connection bucket that spent 8 of 10 keeps 20% of a new burst of
// 20 (4 tokens), not a fresh 20, and the connection stays registered.
func TestSetLimitsRescalesConnectionBuckets(t *testing.T) {
	t.Parallel()
	l, _ := newTestLimiter(t, Limits{MessagesPerMinute: 10}, nil)
	d, err := l.Connect(ctx, "c1", "alice", nil)
	require.NoError(t, err)
	require.True(t, d.Allowed)
	for i := 0; i < 8; i++ {
		require.True(t, l.CheckMessage(ctx, "c1", 1).Allowed)
	}
	require.NoError(t, l.SetLimits(Limits{MessagesPerMinute: 20}))
	require.Equal(t, int64(20), l.Limits().MessagesPerMinute)
	for i := 0; i < 4; i++ {
		d := l.CheckMessage(ctx, "c1", 1)
		require.True(t, d.Allowed, "message %d after the change", i+1)
		require.Equal(t, int64(20), d.Limit)
	}
	d = l.CheckMessage(ctx, "c1", 1)
	require.False(t, d.Allowed, "the change refilled the bucket")
	require.Equal(t, 3*time.Second, d.RetryAfter, "refills at the new rate")
	require.Equal(t, 1, l.Statistics().ActiveConnections)
}

// Lowering a burst keeps the fraction: 5 of 10 left becomes 2 of 4.
func TestSetLimitsLowerBurstKeepsFraction(t *testing.T) {
	t.Parallel()
	l, _ := newTestLimiter(t, Limits{MessagesPerMinute: 10}, nil)
	_, err := l.Connect(ctx, "c1", "alice", nil)
	require.NoError(t, err)
	for i := 0; i < 5; i++ {
		require.True(t, l.CheckMessage(ctx, "c1", 1).Allowed)
	}
	require.NoError(t, l.SetLimits(Limits{MessagesPerMinute: 4}))
	require.True(t, l.CheckMessage(ctx, "c1", 1).Allowed)
	require.True(t, l.CheckMessage(ctx, "c1", 1).Allowed)
	require.False(t, l.CheckMessage(ctx, "c1", 1).Allowed)
}

// The connection-rate and per-client buckets in the MemoryStore keep their
// level too.
func TestSetLimitsRescalesStoreBuckets(t *testing.T) {
	t.Parallel()
	lim := Limits{ConnectionsPerMinute: 4, MessagesPerMinute: 10, MessageScope: PerClient}
	l, _ := newTestLimiter(t, lim, nil)
	for i := 0; i < 4; i++ {
		d, err := l.Connect(ctx, fmt.Sprint("c", i), "alice", nil)
		require.NoError(t, err)
		require.True(t, d.Allowed)
	}
	for i := 0; i < 10; i++ {
		require.True(t, l.CheckMessage(ctx, "c0", 1).Allowed)
	}
	lim.ConnectionsPerMinute, lim.MessagesPerMinute = 8, 30
	require.NoError(t, l.SetLimits(lim))
	d, err := l.Connect(ctx, "c9", "alice", nil)
	require.NoError(t, err)
	require.False(t, d.Allowed, "an empty connection bucket was refilled")
	require.Equal(t, ReasonConnectionRateExceeded, d.Reason)
	d = l.CheckMessage(ctx, "c1", 1)
	require.False(t, d.Allowed, "an empty client bucket was refilled")
	require.Equal(t, 2*time.Second, d.RetryAfter)
}

func TestSetLimitsRefusals(t *testing.T) {
	t.Parallel()
	l, _ := newTestLimiter(t, Limits{MessagesPerMinute: 10}, nil)
	require.ErrorIs(t, l.SetLimits(Limits{MessagesPerMinute: 10, MessageScope: PerClient}), ErrScopeChange)
	require.Error(t, l.SetLimits(Limits{MessagesPerMinute: -1}))
	require.Equal(t, int64(10), l.Limits().MessagesPerMinute)
}

// A cap set while a connection is open does not release a slot that
// connection never took.
func TestSetLimitsCapAfterConnect(t *testing.T) {
	t.Parallel()
	l, _ := newTestLimiter(t, Limits{}, nil)
	_, err := l.Connect(ctx, "old", "alice", nil)
	require.NoError(t, err)
	require.NoError(t, l.SetLimits(Limits{MaxConcurrentConnections: 1}))
	d, err := l.Connect(ctx, "new", "alice", nil)
	require.NoError(t, err)
	require.True(t, d.Allowed)
	require.NoError(t, l.UnregisterConnection(ctx, "old"))
	d, err = l.Connect(ctx, "third", "alice", nil)
	require.NoError(t, err)
	require.False(t, d.Allowed, "unregistering the old connection released the new one's slot")
}

// SetLimits races decisions under the race detector; every decision uses
// one whole set of limits.
func TestSetLimitsConcurrent(t *testing.T) {
	t.Parallel()
	l, err := New(Config{Limits: Limits{MessagesPerMinute: 1000}})
	require.NoError(t, err)
	defer l.Close()
	for i := 0; i < 4; i++ {
		_, err := l.Connect(ctx, fmt.Sprint("c", i), fmt.Sprint("u", i), nil)
		require.NoError(t, err)
	}
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func(id string) {
			defer wg.Done()
			for j := 0; j < 2000; j++ {
				d := l.CheckMessage(ctx, id, 1)
				if d.Allowed && d.Limit != 1000 && d.Limit != 2000 {
					t.Errorf("limit %d", d.Limit)
					return
				}
			}
		}(fmt.Sprint("c", i))
	}
	for j := 0; j < 200; j++ {
		require.NoError(t, l.SetLimits(Limits{MessagesPerMinute: int64(1000 + 1000*(j%2))}))
	}
	wg.Wait()
}

func TestMemoryStoreRescale(t *testing.T) {
	t.Parallel()
	s := NewMemoryStore(MemoryStoreConfig{SweepInterval: -1})
	defer s.Close()
	old, nw := PerMinute(10), PerMinute(20)
	keys := []Key{{Kind: KindMessages, ID: "a"}, {Kind: "room", Scope: "lobby", ID: "a"}, {Kind: KindBytes, ID: "a"}}
	for _, k := range keys {
		require.True(t, s.TakeAt(k, old, t0, 6).OK)
	}
	// Both kinds rescaled, whatever the scope; the other kind untouched.
	require.Equal(t, 1, s.Rescale(KindMessages, old, nw, t0))
	require.Equal(t, 1, s.Rescale("room", old, nw, t0))
	require.InDelta(t, 8, s.Tokens(keys[0], nw, t0), 1e-9)
	require.InDelta(t, 8, s.Tokens(keys[1], nw, t0), 1e-9)
	require.InDelta(t, 4, s.Tokens(keys[2], old, t0), 1e-9)
	// A full bucket is dropped; unlimited drops all of a kind.
	require.Equal(t, 0, s.Rescale(KindBytes, old, Spec{}, t0))
	n, _ := s.Len()
	require.Equal(t, 2, n)
	for i := 0; i < 300; i++ {
		require.True(t, s.TakeAt(Key{Kind: KindMessages, ID: fmt.Sprint("k", i)}, nw, t0, 1).OK)
	}
	require.Equal(t, 301, s.Rescale(KindMessages, nw, old, t0))
	require.InDelta(t, 4, s.Tokens(keys[0], old, t0), 1e-9)
	require.InDelta(t, 9.5, s.Tokens(Key{Kind: KindMessages, ID: "k7"}, old, t0), 1e-9)
}

// RescaleKey rescales one bucket, scoped or not, and leaves the others;
// it drops a bucket that the change leaves full, and every bucket that
// becomes unlimited; a bucket the store does not hold is reported so.
func TestMemoryStoreRescaleKey(t *testing.T) {
	t.Parallel()
	s := NewMemoryStore(MemoryStoreConfig{SweepInterval: -1})
	defer s.Close()
	old, nw := PerMinute(10), PerMinute(20)
	a, b := Key{Kind: KindMessages, ID: "a"}, Key{Kind: "room", Scope: "lobby", ID: "a"}
	for _, k := range []Key{a, b} {
		require.True(t, s.TakeAt(k, old, t0, 6).OK)
	}
	require.True(t, s.RescaleKey(b, old, nw, t0))
	require.InDelta(t, 8, s.Tokens(b, nw, t0), 1e-9)
	require.InDelta(t, 4, s.Tokens(a, old, t0), 1e-9, "another key untouched")
	require.False(t, s.RescaleKey(Key{Kind: KindMessages, ID: "none"}, old, nw, t0))
	require.True(t, s.RescaleKey(a, old, Spec{}, t0))
	n, _ := s.Len()
	require.Equal(t, 1, n, "unlimited drops the bucket")
	// Refilled to full by the time of the change: dropped.
	require.True(t, s.RescaleKey(b, nw, old, t0.Add(time.Minute)))
	n, _ = s.Len()
	require.Equal(t, 0, n)
}

// A connection whose metadata names a tier gets the tier's limits; an
// unknown tier gets the base limits; a change keeps each tier's level.
func TestTierLimits(t *testing.T) {
	t.Parallel()
	l, _ := newTestLimiter(t, Limits{MessagesPerMinute: 2}, func(c *Config) {
		c.Tiers = map[string]Limits{"pro": {MessagesPerMinute: 6}}
	})
	for _, c := range []struct{ id, tier string }{{"free", ""}, {"pro", "pro"}, {"odd", "gold"}} {
		_, err := l.Connect(ctx, c.id, c.id, map[string]string{MetaTier: c.tier})
		require.NoError(t, err)
	}
	count := func(id string) int {
		n := 0
		for l.CheckMessage(ctx, id, 1).Allowed {
			n++
		}
		return n
	}
	require.Equal(t, 2, count("free"))
	require.Equal(t, 2, count("odd"))
	lim, ok := l.ConnectionLimits("pro")
	require.True(t, ok)
	require.Equal(t, int64(6), lim.MessagesPerMinute)
	for range 3 {
		require.True(t, l.CheckMessage(ctx, "pro", 1).Allowed)
	}
	// pro at 3 of 6 becomes 6 of 12; free stays empty under a burst of 4.
	require.NoError(t, l.SetTierLimits(Limits{MessagesPerMinute: 4}, map[string]Limits{"pro": {MessagesPerMinute: 12}}))
	require.Equal(t, 6, count("pro"))
	require.Equal(t, 0, count("free"))
	require.ErrorIs(t, l.SetTierLimits(Limits{}, map[string]Limits{"pro": {MessageScope: PerClient}}), ErrScopeChange)
}

// When tiers change differently (base 10 → 20, pro 20 → 40), the
// per-client buckets in the Store are told apart by their clients' tiers:
// alice (base, 5 of 10 left) keeps half of 20, bob (pro, two connections,
// 10 of 20 left) half of 40, rescaled once. Unscaled they would hold 15
// and 30.
func TestSetTierLimitsRescalesStoreBuckets(t *testing.T) {
	t.Parallel()
	base := Limits{MessagesPerMinute: 10, MessageScope: PerClient}
	pro := Limits{MessagesPerMinute: 20, MessageScope: PerClient}
	l, _ := newTestLimiter(t, base, nil)
	require.NoError(t, l.SetTierLimits(base, map[string]Limits{"pro": pro}))
	for id, client := range map[string]string{"a": "alice", "b1": "bob", "b2": "bob"} {
		var meta map[string]string
		if client == "bob" {
			meta = map[string]string{MetaTier: "pro"}
		}
		d, err := l.Connect(ctx, id, client, meta)
		require.NoError(t, err)
		require.True(t, d.Allowed)
	}
	for range 5 {
		require.True(t, l.CheckMessage(ctx, "a", 1).Allowed)
	}
	for range 10 {
		require.True(t, l.CheckMessage(ctx, "b1", 1).Allowed)
	}
	base.MessagesPerMinute, pro.MessagesPerMinute = 20, 40
	require.NoError(t, l.SetTierLimits(base, map[string]Limits{"pro": pro}))
	for conn, left := range map[string]int{"a": 10, "b2": 20} {
		for i := range left {
			require.True(t, l.CheckMessage(ctx, conn, 1).Allowed, "%s: message %d of %d", conn, i+1, left)
		}
		require.False(t, l.CheckMessage(ctx, conn, 1).Allowed, "%s: the change refilled the bucket", conn)
	}
}

// When the message spec changes alike in the base limits and every tier,
// every message bucket in the Store is rescaled, a disconnected client's
// too: alice, gone with 5 of 10 left, comes back to 10 of 20, not 15.
func TestSetTierLimitsUniformRescalesEveryBucket(t *testing.T) {
	t.Parallel()
	base := Limits{ConnectionsPerMinute: 60, MessagesPerMinute: 10, MessageScope: PerClient}
	pro := base
	pro.ConnectionsPerMinute = 120
	l, _ := newTestLimiter(t, base, nil)
	require.NoError(t, l.SetTierLimits(base, map[string]Limits{"pro": pro}))
	_, err := l.Connect(ctx, "a", "alice", nil)
	require.NoError(t, err)
	for range 5 {
		require.True(t, l.CheckMessage(ctx, "a", 1).Allowed)
	}
	require.NoError(t, l.UnregisterConnection(ctx, "a"))
	base.MessagesPerMinute, pro.MessagesPerMinute = 20, 20
	require.NoError(t, l.SetTierLimits(base, map[string]Limits{"pro": pro}))
	_, err = l.Connect(ctx, "a2", "alice", nil)
	require.NoError(t, err)
	for i := range 10 {
		require.True(t, l.CheckMessage(ctx, "a2", 1).Allowed, "message %d of 10", i+1)
	}
	require.False(t, l.CheckMessage(ctx, "a2", 1).Allowed, "the change refilled the bucket")
}
