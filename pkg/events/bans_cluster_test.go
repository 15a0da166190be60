package events_test

import (
	"testing"
	"time"

	"github.com/ratethrottle/ratethrottle/internal/natstest"
	"github.com/ratethrottle/ratethrottle/pkg/events"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

// A ban set through one server of a three-server cluster (R3 bucket)
// rejects the client on a node attached to another server within one
// second, and the node there is told to close the client's connections.
func TestBanAcrossClusterServers(t *testing.T) {
	t.Parallel()
	cl := natstest.Cluster(t, 3)
	servers := cl.Servers()

	a := newBans(t, events.BansConfig{Conn: connect(t, servers[0]), NodeID: "a", Replicas: 3})
	var closedC clientLog
	c := newBans(t, events.BansConfig{Conn: connect(t, servers[2]), NodeID: "c", Replicas: 3})
	t.Cleanup(c.Notify(func(b events.Ban) { closedC.add(b.Client) }, nil))
	limC, err := limiter.New(limiter.Config{Limits: limiter.Moderate(), Gate: c})
	if err != nil {
		t.Fatal(err)
	}
	defer limC.Close()

	ctx := testCtx(t)
	const client = "2001:db8::7"
	start := time.Now()
	if err := a.Ban(ctx, client, 10*time.Minute, "flood"); err != nil {
		t.Fatal(err)
	}
	took := waitFor(t, time.Second, "the node on server 3 to reject the banned client", func() bool {
		d, _ := limC.Connect(ctx, "x", client, nil)
		return d.Reason == limiter.ReasonBanned
	})
	waitFor(t, time.Second, "the ban callback on the node on server 3", func() bool { return closedC.has(client) })
	t.Logf("ban set on server 1 rejected on server 3 after %v (%v since Ban was called)", took, time.Since(start))
}
