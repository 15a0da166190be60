package kvstore

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
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
	c, err := StartCluster(3, ServerConfig{})
	require.NoError(t, err)
	t.Cleanup(c.Shutdown)
	servers := c.Servers()
	var stores []*Store
	for i, s := range servers {
		stores = append(stores, newNode(t, s.ClientURL(), Config{NodeID: fmt.Sprintf("w%d", i), Replicas: 3,
			Storage: jetstream.MemoryStorage, Timeout: time.Second}))
	}
	for _, s := range stores {
		waitFor(t, 10*time.Second, "three live nodes", func() bool { return s.LiveNodes() == 3 })
	}
	ctx := context.Background()
	st, err := stores[0].kv.Status(ctx)
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
