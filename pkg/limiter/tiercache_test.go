package limiter

import (
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// A connection's tier limits are looked up once per limits change and
// kept on the connection; every change, to tiers, away from them and back,
// applies to the connection's next message.
func TestTierLimitsCachedFollowEveryChange(t *testing.T) {
	t.Parallel()
	size := func(n int64) Limits { return Limits{MaxMessageSize: n} }
	l, _ := newTestLimiter(t, size(10), func(c *Config) { c.Tiers = map[string]Limits{"pro": size(20)} })
	_, err := l.Connect(ctx, "p", "p", map[string]string{MetaTier: "pro"})
	require.NoError(t, err)
	allows := func(n int) bool { return l.CheckMessage(ctx, "p", n).Allowed }
	require.True(t, allows(20))
	require.False(t, allows(21))

	require.NoError(t, l.SetTierLimits(size(10), map[string]Limits{"pro": size(30)}))
	require.True(t, allows(30), "the tier's new limits")
	require.NoError(t, l.SetLimits(size(5)))
	require.False(t, allows(6), "no tiers: the base limits")
	require.NoError(t, l.SetTierLimits(size(5), map[string]Limits{"pro": size(40)}))
	require.True(t, allows(40), "tiers again")
	require.NoError(t, l.SetTierLimits(size(5), map[string]Limits{"free": size(50)}))
	require.False(t, allows(6), "the tier gone: the base limits")
}

// Messages racing limits changes (under the race detector) leave no stale
// limits on the connection: once a change has returned, the next message
// uses its limits.
func TestTierLimitsCacheRacesChange(t *testing.T) {
	t.Parallel()
	size := func(n int64) Limits { return Limits{MaxMessageSize: n} }
	l, _ := newTestLimiter(t, size(10), func(c *Config) { c.Tiers = map[string]Limits{"pro": size(20)} })
	_, err := l.Connect(ctx, "p", "p", map[string]string{MetaTier: "pro"})
	require.NoError(t, err)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 2000 {
				l.CheckMessage(ctx, "p", 25) // either limit may apply here
			}
		}()
	}
	for i := range 200 {
		require.NoError(t, l.SetTierLimits(size(10), map[string]Limits{"pro": size(int64(20 + 10*(i%2)))}))
	}
	wg.Wait()
	require.NoError(t, l.SetTierLimits(size(10), map[string]Limits{"pro": size(30)}))
	require.True(t, l.CheckMessage(ctx, "p", 25).Allowed)
	require.NoError(t, l.SetTierLimits(size(10), map[string]Limits{"pro": size(20)}))
	require.False(t, l.CheckMessage(ctx, "p", 25).Allowed)
}
