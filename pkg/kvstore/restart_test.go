package kvstore

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

// A node restarted under the same ID still counts what its previous run
// consumed and has not refilled: a restart is not a fresh burst.
func TestRestartKeepsOwnConsumption(t *testing.T) {
	srv := startServer(t, ServerConfig{})
	ctx := context.Background()
	key := limiter.Key{Kind: limiter.KindMessages, ID: "restarted"}
	spec := limiter.Spec{Limit: 10, Per: time.Hour} // no refill to speak of within the test

	first := newNode(t, srv.ClientURL(), Config{NodeID: "r"})
	for i := 0; i < 10; i++ {
		r, err := first.Take(ctx, key, spec, time.Now(), 1)
		require.NoError(t, err)
		require.True(t, r.OK, "take %d", i)
	}
	require.NoError(t, first.Close()) // flushes the counter

	second := newNode(t, srv.ClientURL(), Config{NodeID: "r"})
	r, err := second.Take(ctx, key, spec, time.Now(), 1)
	require.NoError(t, err)
	require.False(t, r.OK, "the restarted node spent its previous run's burst again")
	require.Greater(t, r.RetryAfter, 5*time.Minute)
}
