package kvstore

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// skewed returns a clock offset from the real one by d.
func skewed(d time.Duration) func() time.Time {
	return func() time.Time { return time.Now().Add(d) }
}

// TestLivenessIgnoresClockSkew runs three nodes whose clocks are 5 s
// ahead, right and 5 s behind (25 heartbeat intervals each way). Liveness
// is judged by the NATS server's timestamps, so every node counts all
// three live, purges nothing, and a cap of 2 concurrent connections admits
// exactly 2 across them.
func TestLivenessIgnoresClockSkew(t *testing.T) {
	srv := startServer(t, ServerConfig{})
	var nodes []*Store
	for i, d := range []time.Duration{5 * time.Second, 0, -5 * time.Second} {
		nodes = append(nodes, newNode(t, srv.ClientURL(), Config{NodeID: fmt.Sprintf("skew%d", i), Now: skewed(d)}))
	}
	for _, s := range nodes {
		waitFor(t, 5*time.Second, "three live nodes on "+s.NodeID(), func() bool { return s.LiveNodes() == 3 })
	}
	ctx := context.Background()
	for _, s := range nodes[:2] {
		_, ok, err := s.Acquire(ctx, "grace", 2)
		require.NoError(t, err)
		require.True(t, ok)
	}
	for _, s := range nodes {
		waitFor(t, 3*time.Second, s.NodeID()+" to count 2", func() bool { n, _ := s.Count(ctx, "grace"); return n == 2 })
	}
	// Several dead spans (3 × 200 ms) pass: the condition is that nothing
	// changes, so it is sampled throughout.
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		for _, s := range nodes {
			require.Equal(t, 3, s.LiveNodes(), "live nodes seen by %s", s.NodeID())
			n, err := s.Count(ctx, "grace")
			require.NoError(t, err)
			require.Equal(t, int64(2), n, "count seen by %s", s.NodeID())
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, s := range nodes {
		_, ok, err := s.Acquire(ctx, "grace", 2)
		require.NoError(t, err)
		require.False(t, ok, "%s admitted a third connection", s.NodeID())
		require.Zero(t, s.Stats().Reclaimed, "%s purged a live node's count", s.NodeID())
	}
}

// simultaneousConnects runs rounds of racers simultaneous Acquires of one
// client on every node, cap limit, releasing the admitted ones after each
// round, and fails on any round that admits other than limit or errs.
func simultaneousConnects(t *testing.T, nodes []*Store, racers int, limit int64, rounds int) {
	t.Helper()
	ctx := context.Background()
	var conflicts, worst int64
	start := time.Now()
	for round := range rounds {
		var admitted atomic.Int64
		var errs atomic.Int64
		var wg sync.WaitGroup
		gate := make(chan struct{})
		held := make(chan *Store, racers*len(nodes))
		for _, s := range nodes {
			for range racers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-gate
					_, ok, err := s.Acquire(ctx, "mallory", limit)
					switch {
					case err != nil:
						errs.Add(1)
					case ok:
						admitted.Add(1)
						held <- s
					}
				}()
			}
		}
		close(gate)
		wg.Wait()
		close(held)
		require.Zero(t, errs.Load(), "round %d: acquire errors", round)
		require.Equal(t, limit, admitted.Load(), "round %d: admitted of cap %d", round, limit)
		for s := range held {
			require.NoError(t, s.Release(ctx, "mallory"))
		}
		var c int64
		for _, s := range nodes {
			c += s.Stats().Conflicts
		}
		worst = max(worst, c-conflicts)
		conflicts = c
	}
	t.Logf("%d rounds of %d simultaneous connects (cap %d): %v, %d lost swaps, at most %d in a round",
		rounds, racers*len(nodes), limit, time.Since(start).Round(time.Millisecond), conflicts, worst)
}

// TestSimultaneousConnectsExactCap: 1,000 rounds of 9 simultaneous
// connects of one client, 3 on each of 3 nodes, cap 5, in the default
// configuration: every round admits exactly 5.
func TestSimultaneousConnectsExactCap(t *testing.T) {
	srv := startServer(t, ServerConfig{})
	var nodes []*Store
	for i := range 3 {
		nodes = append(nodes, newNode(t, srv.ClientURL(), Config{NodeID: fmt.Sprintf("cap%d", i)}))
	}
	for _, s := range nodes {
		waitFor(t, 5*time.Second, "three live nodes", func() bool { return s.LiveNodes() == 3 })
	}
	rounds := 1000
	if testing.Short() {
		rounds = 100
	}
	simultaneousConnects(t, nodes, 3, 5, rounds)
}

// TestSimultaneousConnectsExactCapR3 is the same on a three-server cluster
// with an R3 bucket, each node on its own server.
func TestSimultaneousConnectsExactCapR3(t *testing.T) {
	c, err := StartCluster(3, ServerConfig{})
	require.NoError(t, err)
	t.Cleanup(c.Shutdown)
	var nodes []*Store
	for i, u := range c.ClientURLs() {
		nodes = append(nodes, newNode(t, u, Config{NodeID: fmt.Sprintf("r3cap%d", i), Replicas: 3, Storage: jetstream.MemoryStorage}))
	}
	for _, s := range nodes {
		waitFor(t, 10*time.Second, "three live nodes", func() bool { return s.LiveNodes() == 3 })
	}
	simultaneousConnects(t, nodes, 3, 5, 100)
}
