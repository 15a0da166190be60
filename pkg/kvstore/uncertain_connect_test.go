package kvstore

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/ratethrottle/ratethrottle/pkg/embedded"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
	"github.com/stretchr/testify/require"
)

// TestSecondNodeConnectWaitsForRelease: a client connects through node a,
// which spends alone and so holds the bucket as its allowance; the
// client's next connection arrives at node b, which has held the bucket
// for longer than its first sync interval. b's check is denied only by a's
// allowance (uncertain) until a hears of b's demand and releases it at its
// next flush; the Limiter waits that out and admits the connection. With
// UncertainWait negative the same connection is refused.
func TestSecondNodeConnectWaitsForRelease(t *testing.T) {
	for _, tc := range []struct {
		name    string
		wait    time.Duration
		allowed bool
	}{
		// The release takes one flush of a after it hears of b's
		// demand (~1–2 sync intervals, within the default 250 ms);
		// 2 s keeps the test from timing a loaded machine.
		{"waits", 2 * time.Second, true},
		{"never waits", -1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startServer(t, embedded.Config{})
			a := newNode(t, srv.ClientURL(), Config{NodeID: "a", Storage: jetstream.MemoryStorage})
			b := newNode(t, srv.ClientURL(), Config{NodeID: "b", Storage: jetstream.MemoryStorage})
			for _, s := range []*Store{a, b} {
				waitFor(t, 5*time.Second, "two live nodes", func() bool { return s.LiveNodes() == 2 })
			}
			lim := limiter.Limits{ConnectionsPerMinute: 10} // a slow refill: one token in 6 s
			la, err := limiter.New(limiter.Config{Limits: lim, Store: a})
			require.NoError(t, err)
			t.Cleanup(func() { la.Close() })
			lb, err := limiter.New(limiter.Config{Limits: lim, Store: b, UncertainWait: tc.wait})
			require.NoError(t, err)
			t.Cleanup(func() { lb.Close() })

			key := limiter.Key{Kind: limiter.KindConnectionRate, ID: "client"}
			spec := lim.ConnectionSpec()
			take(t, b, key, spec, 0) // b holds the bucket, with no demand
			require.NoError(t, b.Flush(t.Context()))
			held := time.Now()
			waitFor(t, time.Second, "b's first intervals to pass", func() bool {
				return time.Since(held) > 4*b.cfg.SyncInterval
			})
			for i := range 3 {
				d, err := la.Connect(context.Background(), "a"+string(rune('0'+i)), "client", nil)
				require.NoError(t, err)
				require.True(t, d.Allowed, "connection %d through a: %+v", i, d)
			}
			require.NoError(t, a.Flush(t.Context()))
			waitFor(t, 5*time.Second, "b to see a's spending", func() bool { return b.Tokens(key, spec, time.Now()) < 8 })
			d, err := lb.Connect(context.Background(), "b0", "client", nil)
			require.NoError(t, err)
			require.Equal(t, tc.allowed, d.Allowed, "the connection through b: %+v (b: %s)", d, b.describe(key))
			if !d.Allowed {
				require.True(t, d.Uncertain, "the refusal through b is uncertain: %+v", d)
			}
		})
	}
}
