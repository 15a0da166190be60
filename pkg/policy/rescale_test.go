package policy

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

func TestRescaleLevel(t *testing.T) {
	for _, c := range []struct {
		level    float64
		old, new int64
		want     float64
	}{
		{0, 10, 20, 0},   // empty stays empty: no refill by the change
		{10, 10, 20, 20}, // full stays full
		{5, 10, 20, 10},  // half stays half
		{5, 10, 4, 2},    // a smaller burst
		{-3, 10, 20, -6}, // debt in proportion
		{7, 10, 10, 7},   // unchanged burst
		{3, 0, 20, 20},   // was unlimited: starts full
		{3, 10, 0, 0},    // becomes unlimited
		{12, 10, 20, 20}, // above the burst (float noise): capped
		{1, 3, 1000, 1000.0 / 3},
	} {
		require.InDelta(t, c.want, limiter.RescaleLevel(c.level, c.old, c.new), 1e-9, "%+v", c)
	}
}

func TestRescaleBucket(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	old := limiter.Spec{Limit: 60, Burst: 10} // one a second
	neu := limiter.Spec{Limit: 120, Burst: 20}
	var b limiter.Bucket
	require.True(t, b.TakeAt(old, t0, 5).OK) // 5 of 10 left

	nb := limiter.RescaleBucket(b, old, neu, t0)
	require.InDelta(t, 10, nb.TokensAt(neu, t0), 1e-9, "half of the new burst")
	require.True(t, nb.TakeAt(neu, t0, 10).OK)
	r := nb.TakeAt(neu, t0, 1)
	require.False(t, r.OK, "the change did not refill the bucket")
	require.Equal(t, 500*time.Millisecond, r.RetryAfter, "it refills at the new rate")

	// An empty bucket stays empty under a larger burst.
	var e limiter.Bucket
	require.True(t, e.TakeAt(old, t0, 10).OK)
	ne := limiter.RescaleBucket(e, old, neu, t0)
	require.InDelta(t, 0, ne.TokensAt(neu, t0), 1e-9)

	// Unlimited on either side: a full bucket.
	require.Equal(t, limiter.Bucket{}, limiter.RescaleBucket(b, limiter.Spec{}, neu, t0))
	require.Equal(t, limiter.Bucket{}, limiter.RescaleBucket(b, old, limiter.Spec{}, t0))
}
