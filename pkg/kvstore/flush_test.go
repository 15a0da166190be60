package kvstore

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/ratethrottle/ratethrottle/pkg/embedded"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
	"github.com/stretchr/testify/require"
)

// TestFlushManyDirtyBuckets dirties more buckets in one interval than the
// NATS client allows asynchronous publishes in flight (4000): the flush
// must still send them all, without errors and without entering the fail
// mode, and another node must see them.
func TestFlushManyDirtyBuckets(t *testing.T) {
	srv := startServer(t, embedded.Config{})
	a := newNode(t, srv.ClientURL(), Config{NodeID: "many-a", Storage: jetstream.MemoryStorage, SyncInterval: time.Hour})
	b := newNode(t, srv.ClientURL(), Config{NodeID: "many-b", Storage: jetstream.MemoryStorage})
	ctx := context.Background()
	spec := limiter.Spec{Limit: 600, Per: time.Hour}
	key := func(i int) limiter.Key { return limiter.Key{Kind: limiter.KindMessages, ID: fmt.Sprint("client-", i)} }
	const n = 4500
	for i := range n {
		r, err := a.Take(ctx, key(i), spec, time.Now(), 1)
		require.NoError(t, err)
		require.True(t, r.OK)
	}
	require.NoError(t, a.Flush(ctx))
	st := a.Stats()
	require.Zero(t, st.WriteErrors)
	require.False(t, st.Down)
	require.GreaterOrEqual(t, st.KVWrites, int64(n))
	_, err := b.Take(ctx, key(n-1), spec, time.Now(), 0)
	require.NoError(t, err)
	waitFor(t, 5*time.Second, "b to see a's take on the last bucket", func() bool {
		return b.Tokens(key(n-1), spec, time.Now()) < 600
	})
}
