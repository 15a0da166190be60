package limiter_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/ratethrottle/ratethrottle/pkg/embedded"
	"github.com/ratethrottle/ratethrottle/pkg/kvstore"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

// TestWaitSharedThroughClusterStore runs Wait on two nodes, each with its
// own kvstore.Store on a real embedded NATS server, against one client's
// message bucket: 600 a minute (10 a second), burst 2, Strict mode so
// every take is a compare-and-swap on the shared entry. Ten waits in all
// need at least (10-2)/10 s = 800 ms if the nodes share the bucket; apart,
// each node's five would need only 300 ms. 700 ms is the bound tested,
// 100 ms under the exact figure for timer and clock granularity.
func TestWaitSharedThroughClusterStore(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a NATS server")
	}
	srv, err := embedded.Start(embedded.Config{})
	require.NoError(t, err)
	t.Cleanup(srv.Shutdown)

	lim := limiter.Limits{MessagesPerMinute: 600, MessageBurst: 2, MessageScope: limiter.PerClient}
	var nodes []*limiter.Limiter
	for i := range 2 {
		nc, err := nats.Connect(srv.ClientURL())
		require.NoError(t, err)
		t.Cleanup(nc.Close)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		st, err := kvstore.New(ctx, kvstore.Config{Conn: nc, NodeID: []string{"a", "b"}[i],
			Modes: map[limiter.Kind]kvstore.Mode{limiter.KindMessages: kvstore.Strict}})
		cancel()
		require.NoError(t, err)
		t.Cleanup(func() { st.Close() })
		l, err := limiter.New(limiter.Config{Limits: lim, Store: st})
		require.NoError(t, err)
		t.Cleanup(func() { l.Close() })
		nodes = append(nodes, l)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	key := limiter.Key{Kind: limiter.KindMessages, ID: "bridge"}
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 10)
	for _, l := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 5 {
				errs <- l.Wait(ctx, key, 1)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	el := time.Since(start)
	require.GreaterOrEqual(t, el, 700*time.Millisecond, "the two nodes must share one bucket")
	require.Less(t, el, 15*time.Second)
}
