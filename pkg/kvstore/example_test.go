package kvstore_test

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/ratethrottle/ratethrottle/pkg/embedded"
	"github.com/ratethrottle/ratethrottle/pkg/kvstore"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

// Two nodes share one connection-rate limit through JetStream KV. Strict
// mode makes every decision exact across nodes: the client gets 3 new
// connections a minute in total, whichever node it reaches.
func Example() {
	srv, err := embedded.Start(embedded.Config{})
	if err != nil {
		panic(err)
	}
	defer srv.Shutdown()

	limits := limiter.Limits{ConnectionsPerMinute: 3}
	ctx := context.Background()
	var nodes []*limiter.Limiter
	for _, id := range []string{"node-a", "node-b"} {
		nc, err := nats.Connect(srv.ClientURL())
		if err != nil {
			panic(err)
		}
		defer nc.Close()
		store, err := kvstore.New(ctx, kvstore.Config{
			Conn:   nc,
			NodeID: id,
			Modes:  map[limiter.Kind]kvstore.Mode{limiter.KindConnectionRate: kvstore.Strict},
		})
		if err != nil {
			panic(err)
		}
		defer store.Close()
		l, err := limiter.New(limiter.Config{Limits: limits, Store: store})
		if err != nil {
			panic(err)
		}
		defer l.Close()
		nodes = append(nodes, l)
	}
	for i := range 4 {
		node := nodes[i%2]
		d := node.CheckConnection(ctx, "10.0.0.7")
		fmt.Printf("connection %d on node %d: %v %s\n", i+1, i%2, d.Allowed, d.Reason)
	}
	// Output:
	// connection 1 on node 0: true ok
	// connection 2 on node 1: true ok
	// connection 3 on node 0: true ok
	// connection 4 on node 1: false connection_rate_exceeded
}
