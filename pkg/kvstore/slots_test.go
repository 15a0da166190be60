package kvstore

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/ratethrottle/ratethrottle/internal/natstest"
	"github.com/ratethrottle/ratethrottle/pkg/embedded"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
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
	srv := startServer(t, embedded.Config{})
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

// failModeEntries sums the times the nodes entered their fail mode, and
// reports whether one is in it now.
func failModeEntries(nodes []*Store) (n int64, down bool) {
	for _, s := range nodes {
		st := s.Stats()
		n += st.FailModeEntries
		down = down || st.Down
	}
	return n, down
}

// simultaneousConnects runs rounds of racers simultaneous Acquires of one
// client on every node, cap limit, releasing the admitted ones after each
// round, and fails on any round that admits other than limit or errs.
//
// The cap is exact while NATS answers. A round during which a node enters
// its fail mode (a KV write failed: on this shared machine under the race
// detector, a stream starved of CPU can stop answering for seconds) is
// decided by the fail mode instead, FailOpenLocal by default; such rounds
// are counted apart, the nodes are let recover, and the test fails if they
// are more than a tenth of the rounds.
func simultaneousConnects(t *testing.T, nodes []*Store, racers int, limit int64, rounds int) {
	t.Helper()
	ctx := context.Background()
	var conflicts, worst int64
	outages := 0
	start := time.Now()
	for round := range rounds {
		var admitted atomic.Int64
		var errs atomic.Int64
		var wg sync.WaitGroup
		entries, downBefore := failModeEntries(nodes)
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
		if after, downAfter := failModeEntries(nodes); after != entries || downBefore || downAfter {
			outages++
			require.LessOrEqual(t, outages, rounds/10, "rounds decided in a fail mode")
			for s := range held {
				require.NoError(t, s.Release(ctx, "mallory"))
			}
			for _, s := range nodes {
				waitFor(t, 30*time.Second, "recovery and every count written", func() bool {
					n, err := s.Count(ctx, "mallory")
					return !s.Down() && err == nil && n == 0
				})
			}
			continue
		}
		require.Zero(t, errs.Load(), "round %d: acquire errors", round)
		if got := admitted.Load(); got != limit {
			var diag []string
			for _, s := range nodes {
				st := s.Stats()
				diag = append(diag, fmt.Sprintf("%s: down %v, fail-mode entries %d, live %d, reclaimed %d, watch restarts %d, write errors %d",
					s.NodeID(), st.Down, st.FailModeEntries, st.LiveNodes, st.Reclaimed, st.WatchRestarts, st.WriteErrors))
			}
			t.Fatalf("round %d: admitted %d of cap %d\n%s", round, got, limit, strings.Join(diag, "\n"))
		}
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
	t.Logf("%d rounds of %d simultaneous connects (cap %d): %v, %d lost swaps, at most %d in a round; %d rounds in a fail mode",
		rounds, racers*len(nodes), limit, time.Since(start).Round(time.Millisecond), conflicts, worst, outages)
}

// TestSimultaneousConnectsExactCap: 1,000 rounds of 9 simultaneous
// connects of one client, 3 on each of 3 nodes, cap 5, in the default
// configuration: every round admits exactly 5.
func TestSimultaneousConnectsExactCap(t *testing.T) {
	srv := startServer(t, embedded.Config{})
	nodes := newNodes(t, srv.ClientURL(), 3, "cap", Config{})
	rounds := 1000
	if testing.Short() {
		rounds = 100
	}
	simultaneousConnects(t, nodes, 3, 5, rounds)
}

// TestSimultaneousConnectsExactCapR3 is the same on a three-server cluster
// with an R3 bucket, each node on its own server.
func TestSimultaneousConnectsExactCapR3(t *testing.T) {
	c := natstest.Cluster(t, 3)
	var nodes []*Store
	for i, u := range c.ClientURLs() {
		nodes = append(nodes, newNode(t, u, Config{NodeID: fmt.Sprintf("r3cap%d", i), Replicas: 3, Storage: jetstream.MemoryStorage}))
	}
	for _, s := range nodes {
		waitFor(t, 10*time.Second, "three live nodes", func() bool { return s.LiveNodes() == 3 })
	}
	simultaneousConnects(t, nodes, 3, 5, 100)
}

// TestSlotsThroughOutage: while NATS is down a node admits by its fail
// mode from what it last saw, and the counts it changed meanwhile reach
// the other nodes after the outage.
func TestSlotsThroughOutage(t *testing.T) {
	srv := startServer(t, embedded.Config{StoreDir: t.TempDir()})
	a := newNode(t, srv.ClientURL(), Config{NodeID: "open"})
	b := newNode(t, srv.ClientURL(), Config{NodeID: "watcher"})
	closed := newNode(t, srv.ClientURL(), Config{NodeID: "closed", FailMode: FailClosed})
	ctx := context.Background()
	_, ok, err := b.Acquire(ctx, "judy", 3)
	require.NoError(t, err)
	require.True(t, ok)
	waitFor(t, 3*time.Second, "a to see b's connection", func() bool { n, _ := a.Count(ctx, "judy"); return n == 1 })

	srv.Stop()
	for _, s := range []*Store{a, closed} {
		waitFor(t, 5*time.Second, "fail mode", s.Down)
	}
	for i := range 3 {
		_, ok, err := a.Acquire(ctx, "judy", 3)
		require.NoError(t, err)
		require.Equal(t, i < 2, ok, "acquire %d during the outage, cap 3 with b's 1", i)
	}
	require.NoError(t, a.Release(ctx, "judy"))
	_, _, err = closed.Acquire(ctx, "judy", 3)
	require.ErrorIs(t, err, limiter.ErrUnavailable)

	require.NoError(t, srv.Restart())
	for _, s := range []*Store{a, closed} {
		waitFor(t, 10*time.Second, "recovery", func() bool { return !s.Down() })
	}
	waitFor(t, 10*time.Second, "b to see a's count written after the outage", func() bool {
		n, _ := b.Count(ctx, "judy")
		return n == 2
	})
	_, ok, err = closed.Acquire(ctx, "judy", 3)
	require.NoError(t, err)
	require.True(t, ok, "the third slot")
	_, ok, err = b.Acquire(ctx, "judy", 3)
	require.NoError(t, err)
	require.False(t, ok, "a fourth slot")
}

// TestNodes: a node lists itself and the others with their liveness, and a
// node that closed stays listed as closed, so callers can tell that one is
// missing.
func TestNodes(t *testing.T) {
	srv := startServer(t, embedded.Config{})
	a := newNode(t, srv.ClientURL(), Config{NodeID: "alpha"})
	b := newNode(t, srv.ClientURL(), Config{NodeID: "beta.with dots"})
	long := strings.Repeat("n", 60)
	newNode(t, srv.ClientURL(), Config{NodeID: long})
	waitFor(t, 5*time.Second, "three live nodes", func() bool { return a.LiveNodes() == 3 })
	ns := a.Nodes()
	require.Len(t, ns, 3)
	require.Equal(t, NodeStatus{ID: "alpha", Self: true, Live: true}, ns[0])
	require.Equal(t, token(long), ns[1].ID, "a long ID is listed by its token")
	require.Equal(t, "beta.with dots", ns[2].ID)
	for _, n := range ns[1:] {
		require.True(t, n.Live)
		require.False(t, n.Closed)
		require.Less(t, n.Silent, 2*200*time.Millisecond+50*time.Millisecond)
	}
	require.NoError(t, b.Close())
	waitFor(t, 3*time.Second, "a to see b closed", func() bool {
		for _, n := range a.Nodes() {
			if n.ID == "beta.with dots" {
				return n.Closed && !n.Live
			}
		}
		return false
	})
	require.Equal(t, 2, a.LiveNodes())
}

// TestPurgedCountIsRepaired: if a live node's count is dropped from a
// client's entry (another node judged it dead), the node writes it again
// as soon as its watch shows the entry without it.
func TestPurgedCountIsRepaired(t *testing.T) {
	srv := startServer(t, embedded.Config{})
	a := newNode(t, srv.ClientURL(), Config{NodeID: "a"})
	b := newNode(t, srv.ClientURL(), Config{NodeID: "b"})
	ctx := context.Background()
	for range 2 {
		_, ok, err := a.Acquire(ctx, "ken", 0)
		require.NoError(t, err)
		require.True(t, ok)
	}
	waitFor(t, 3*time.Second, "b to count 2", func() bool { n, _ := b.Count(ctx, "ken"); return n == 2 })
	// A wrongful purge: the entry rewritten without a's count.
	_, err := b.kv.Put(ctx, slotKey(token("ken")), encodeSlot(nil, "", 0, 0))
	require.NoError(t, err)
	purged := time.Now()
	waitFor(t, 3*time.Second, "a's count back in the entry", func() bool {
		e, err := b.kv.Get(ctx, slotKey(token("ken")))
		require.NoError(t, err)
		entries, ok := decodeSlot(e.Value())
		return ok && ownCount(entries, token("a"), a.inc) == 2
	})
	t.Logf("repaired %v after the purge", time.Since(purged).Round(time.Millisecond))
	waitFor(t, 3*time.Second, "b to count 2 again", func() bool { n, _ := b.Count(ctx, "ken"); return n == 2 })
}
