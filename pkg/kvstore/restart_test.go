package kvstore

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratethrottle/ratethrottle/pkg/embedded"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

// A node restarted under the same ID still counts what its previous run
// consumed and has not refilled: a restart is not a fresh burst.
func TestRestartKeepsOwnConsumption(t *testing.T) {
	srv := startServer(t, embedded.Config{})
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

// A restart also counts the spending its previous run left unpublished
// within a standing allowance (an uncontested bucket's deferred counter):
// Close writes it.
func TestRestartKeepsDeferredConsumption(t *testing.T) {
	srv := startServer(t, embedded.Config{})
	ctx := context.Background()
	key := limiter.Key{Kind: limiter.KindMessages, ID: "deferred"}
	spec := limiter.Spec{Limit: 10, Per: time.Hour}
	first := newNode(t, srv.ClientURL(), Config{NodeID: "d"})
	newNode(t, srv.ClientURL(), Config{NodeID: "other"}) // a second live node: counters go out
	waitFor(t, 5*time.Second, "two live nodes", func() bool { return first.LiveNodes() == 2 })
	r, err := first.Take(ctx, key, spec, time.Now(), 1)
	require.NoError(t, err)
	require.True(t, r.OK)
	waitFor(t, 3*time.Second, "the first counter to go out", func() bool { return first.Stats().CounterWrites > 0 })
	for i := 1; i < 10; i++ {
		r, err := first.Take(ctx, key, spec, time.Now(), 1)
		require.NoError(t, err)
		require.True(t, r.OK, "take %d", i)
	}
	w := first.Stats().CounterWrites
	waitFor(t, 3*time.Second, "a flush to visit the bucket", func() bool { return !first.dirtyEntry(key) })
	require.Equal(t, w, first.Stats().CounterWrites, "the 9 tokens stay unpublished within the allowance")
	require.NoError(t, first.Close())

	second := newNode(t, srv.ClientURL(), Config{NodeID: "d"})
	r, err = second.Take(ctx, key, spec, time.Now(), 1)
	require.NoError(t, err)
	require.False(t, r.OK, "the restarted node spent its previous run's deferred tokens again")
}
