package kvstore

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/ratethrottle/ratethrottle/internal/natstest"
	"github.com/ratethrottle/ratethrottle/pkg/embedded"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
	"github.com/stretchr/testify/require"
)

// TestWatchSurvivesStreamLeaderLoss stops the NATS server that leads the
// stream of an R3 bucket. The watches' consumers live there and go with it
// while the connections of the nodes on the other servers stay up, so
// nothing tells those nodes; left alone their watches stay silent until
// the client library notices missed idle heartbeats (over 10 s), and
// meanwhile they count every other node dead. A node whose own heartbeats
// stop coming back restarts its watch: the survivors keep seeing each
// other live and applying each other's consumption.
func TestWatchSurvivesStreamLeaderLoss(t *testing.T) {
	c := natstest.Cluster(t, 3)
	servers := c.Servers()
	var stores []*Store
	for i, s := range servers {
		stores = append(stores, newNode(t, s.ClientURL(), Config{NodeID: fmt.Sprintf("w%d", i), Replicas: 3,
			Storage: jetstream.MemoryStorage, Timeout: time.Second}))
	}
	survivors, _ := stopStreamLeader(t, servers, stores)
	ctx := context.Background()

	// Each survivor spends 10 tokens; each must see the other's 10 and
	// count the other live, well before the client library's own
	// recovery (2 missed 5 s idle heartbeats).
	spec := limiter.Spec{Limit: 600, Per: time.Hour}
	key := limiter.Key{Kind: limiter.KindMessages, ID: "after-leader-loss"}
	for _, s := range survivors {
		_, err := s.Take(ctx, key, spec, time.Now(), 0)
		require.NoError(t, err)
	}
	for _, s := range survivors {
		for range 10 {
			require.Eventually(t, func() bool {
				r, err := s.Take(ctx, key, spec, time.Now(), 1)
				return err == nil && r.OK
			}, 5*time.Second, 5*time.Millisecond)
		}
	}
	for _, s := range survivors {
		waitFor(t, 5*time.Second, "each survivor to see 20 tokens spent", func() bool {
			return s.Tokens(key, spec, time.Now()) < 581
		})
	}
	// Three heartbeat intervals later the survivors still see each other.
	time.Sleep(3 * 200 * time.Millisecond) // heartbeats must pass: the condition is that nothing changes
	for _, s := range survivors {
		require.GreaterOrEqual(t, s.LiveNodes(), 2)
	}
}

// TestWatchStallDetectedFast: after the stream leader of an R3 bucket
// stops, a survivor's flushes are acknowledged by the new leader while its
// watch (whose consumer went with the old leader) delivers nothing. With
// the default 1 s heartbeats, waiting for this node's own heartbeats to
// stop coming back takes 2–3 s; a node whose acknowledged writes do not
// come back through its watch restarts it well within a second.
func TestWatchStallDetectedFast(t *testing.T) {
	c := natstest.Cluster(t, 3)
	servers := c.Servers()
	var stores []*Store
	for i, s := range servers {
		cfg := Config{NodeID: fmt.Sprintf("f%d", i), Replicas: 3, Storage: jetstream.MemoryStorage,
			Timeout: time.Second, HeartbeatInterval: time.Second}
		cfg.Conn = dial(t, s.ClientURL())
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		st, err := New(ctx, cfg)
		cancel()
		require.NoError(t, err)
		t.Cleanup(func() { st.Close() })
		stores = append(stores, st)
	}
	survivors, leader := stopStreamLeader(t, servers, stores)
	ctx := context.Background()
	w, r := survivors[0], survivors[1]
	spec := limiter.Spec{Limit: 1 << 20, Per: time.Hour}
	key := limiter.Key{Kind: limiter.KindMessages, ID: "stall"}
	_, err := r.Take(ctx, key, spec, time.Now(), 0)
	require.NoError(t, err)
	// The writer spends a token and flushes every 20 ms until a flush is
	// acknowledged (the new leader is elected); then it keeps spending
	// until the reader sees its spending.
	var acked time.Time
	waitFor(t, 15*time.Second, "a flush acknowledged after the leader's loss", func() bool {
		_, _ = w.Take(ctx, key, spec, time.Now(), 1)
		if w.Flush(ctx) == nil && !w.Down() {
			acked = time.Now()
			return true
		}
		return false
	})
	took := waitFor(t, 10*time.Second, "the reader to see the writer's spending", func() bool {
		_, _ = w.Take(ctx, key, spec, time.Now(), 1)
		_ = w.Flush(ctx)
		// The reader decides too (a node that does not decide does not
		// need a current view, and writes nothing to check its watch by).
		_, _ = r.Take(ctx, key, spec, time.Now(), 0)
		return r.Tokens(key, spec, time.Now()) < float64(spec.Capacity())-0.5
	})
	t.Logf("leader %s stopped; first acknowledged flush %v later the reader saw it (watch restarts: writer %d, reader %d)",
		leader, took.Round(time.Millisecond), w.Stats().WatchRestarts, r.Stats().WatchRestarts)
	_ = acked
	require.Less(t, took, time.Second)
}

// stopStreamLeader waits until each of stores, one per server of a
// three-server cluster, sees three live nodes, stops the server that leads
// the KV bucket's stream and returns the stores of the other two and the
// stopped server's name.
func stopStreamLeader(t *testing.T, servers []*embedded.Server, stores []*Store) ([]*Store, string) {
	t.Helper()
	for _, s := range stores {
		waitFor(t, 10*time.Second, "three live nodes", func() bool { return s.LiveNodes() == 3 })
	}
	st, err := stores[0].kv.Status(context.Background())
	require.NoError(t, err)
	leader := st.(*jetstream.KeyValueBucketStatus).StreamInfo().Cluster.Leader
	var survivors []*Store
	for i, s := range servers {
		if s.Config().Name == leader {
			s.Stop()
		} else {
			survivors = append(survivors, stores[i])
		}
	}
	require.Len(t, survivors, 2, "stream leader %q among the servers", leader)
	return survivors, leader
}
