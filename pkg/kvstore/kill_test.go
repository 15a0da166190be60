package kvstore

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/ratethrottle/ratethrottle/internal/natstest"
)

// TestKilledNodeKeepsSurvivorsLive kills a node together with the NATS
// server it runs on, the one that leads the R3 bucket's stream, as a
// `kill -9` of a node process with its embedded server does. For the next
// 15 s, past the client library's own recovery of the watches (two missed
// 5 s idle heartbeats), neither survivor may count the other dead or lose
// the other's connection count: only the killed node goes.
func TestKilledNodeKeepsSurvivorsLive(t *testing.T) {
	if testing.Short() {
		t.Skip("15 s of sampling")
	}
	c := natstest.Cluster(t, 3)
	servers := c.Servers()
	var nodes []*Store
	for i, srv := range servers {
		nodes = append(nodes, newNode(t, srv.ClientURL(), Config{NodeID: fmt.Sprintf("k%d", i), Replicas: 3,
			HeartbeatInterval: time.Second}))
	}
	for _, s := range nodes {
		waitFor(t, 10*time.Second, "three live nodes", func() bool { return s.LiveNodes() == 3 })
	}
	ctx := context.Background()
	for _, s := range nodes {
		_, ok, err := s.Acquire(ctx, "ivan", 0)
		require.NoError(t, err)
		require.True(t, ok)
	}
	for _, s := range nodes {
		waitFor(t, 3*time.Second, "3 connections counted", func() bool { n, _ := s.Count(ctx, "ivan"); return n == 3 })
	}
	st, err := nodes[0].kv.Status(ctx)
	require.NoError(t, err)
	leader := st.(*jetstream.KeyValueBucketStatus).StreamInfo().Cluster.Leader
	var survivors []*Store
	for i, srv := range servers {
		if srv.Config().Name != leader {
			survivors = append(survivors, nodes[i])
			continue
		}
		// The process dies: no goodbye, then its server goes.
		nodes[i].nc.Close()
		nodes[i].Close()
		srv.Stop()
	}
	require.Len(t, survivors, 2)
	killed := time.Now()
	var minLive, minCount = 3, int64(3)
	for time.Since(killed) < 15*time.Second {
		for _, s := range survivors {
			minLive = min(minLive, s.LiveNodes())
			n, err := s.Count(ctx, "ivan")
			require.NoError(t, err)
			minCount = min(minCount, n)
			require.GreaterOrEqual(t, s.LiveNodes(), 2, "%s lost a live node %v after the kill", s.NodeID(), time.Since(killed))
			require.GreaterOrEqual(t, n, int64(2), "%s lost a live node's count %v after the kill", s.NodeID(), time.Since(killed))
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, s := range survivors {
		require.Equal(t, 2, s.LiveNodes(), "%s still counts the killed node", s.NodeID())
		n, err := s.Count(ctx, "ivan")
		require.NoError(t, err)
		require.Equal(t, int64(2), n, "%s", s.NodeID())
	}
	t.Logf("over 15 s after the kill: live nodes >= %d, connections counted >= %d", minLive, minCount)
}
