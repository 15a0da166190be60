package policy

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratethrottle/ratethrottle/pkg/kvstore"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

// TestUserLimitAcrossThreeNodes: a signed-in user with a connection on
// each of three nodes (three stores on one embedded NATS server, user
// buckets in Strict mode) shares one user bucket: 5 typing frames in all,
// though each connection's own bucket would let it send 5.
func TestUserLimitAcrossThreeNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a NATS server")
	}
	srv := startServer(t)
	tab := exampleTable(t)
	var checkers []*Checker
	for i := range 3 {
		ctx2, cancel := contextWithTimeout(10 * time.Second)
		st, err := kvstore.New(ctx2, kvstore.Config{Conn: dial(t, srv.ClientURL()), NodeID: fmt.Sprint("n", i),
			HeartbeatInterval: 200 * time.Millisecond,
			Modes:             map[limiter.Kind]kvstore.Mode{LayerUser.Kind(): kvstore.Strict}})
		cancel()
		require.NoError(t, err)
		t.Cleanup(func() { st.Close() })
		local := limiter.NewMemoryStore(limiter.MemoryStoreConfig{SweepInterval: -1})
		t.Cleanup(func() { local.Close() })
		checkers = append(checkers, &Checker{Local: local, Shared: st})
	}
	r, id := tab.Tier("free"), tab.Class("typing")
	passed := 0
	var denial Denial
	now := time.Now() // one instant: no refill between the takes
	for round := range 3 {
		for i, c := range checkers {
			sub := Subject{Connection: fmt.Sprint("conn-", i), User: "ada", Address: fmt.Sprint("198.51.100.", i)}
			d, ok, err := c.Take(ctx, r, nil, id, sub, now)
			require.NoError(t, err, "round %d node %d", round, i)
			if ok {
				passed++
			} else {
				denial = d
			}
		}
	}
	require.Equal(t, 5, passed, "one user burst across three nodes")
	require.Equal(t, LayerUser, denial.Layer)
	require.Equal(t, "typing", denial.Class)
}
