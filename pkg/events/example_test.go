package events_test

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ratethrottle/ratethrottle/pkg/embedded"
	"github.com/ratethrottle/ratethrottle/pkg/events"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

func ExampleSubjects() {
	fmt.Println(events.Subjects{}.Violation(events.TypeMessageRate, "10.0.0.1"))
	fmt.Println(events.Subjects{Prefix: "prod"}.ViolationsOfType(events.TypeBandwidth))
	// Output:
	// ratethrottle.violations.message_rate.MTAuMC4wLjE
	// prod.violations.bandwidth.*
}

// ExamplePublisher wires a Publisher into a limiter and receives its
// events in another service with Subscribe.
func ExamplePublisher() {
	srv, err := embedded.Start(embedded.Config{})
	if err != nil {
		panic(err)
	}
	defer srv.Shutdown()
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		panic(err)
	}
	defer nc.Close()

	received := make(chan events.Event, 1)
	sub, err := events.Subscribe(context.Background(), nc, events.Filter{Types: []events.Type{events.TypeMessageRate}},
		func(e events.Event) { received <- e })
	if err != nil {
		panic(err)
	}
	defer sub.Close()

	pub, err := events.NewPublisher(events.PublisherConfig{Conn: nc, NodeID: "node-1"})
	if err != nil {
		panic(err)
	}
	defer pub.Close()
	lim, err := limiter.New(limiter.Config{Limits: limiter.Limits{MessagesPerMinute: 1}, Sink: pub})
	if err != nil {
		panic(err)
	}
	defer lim.Close()

	ctx := context.Background()
	lim.Connect(ctx, "conn-1", "203.0.113.5", nil)
	lim.CheckMessage(ctx, "conn-1", 10)
	lim.CheckMessage(ctx, "conn-1", 10) // denied: one message a minute

	select {
	case e := <-received:
		fmt.Println(e.Type, e.Client, e.Connection, e.Node, e.Limit, e.RetryAfterMS > 0)
	case <-time.After(5 * time.Second):
		fmt.Println("no event")
	}
	// Output: message_rate 203.0.113.5 conn-1 node-1 1 true
}

// ExampleBans bans a client cluster-wide and shows a limiter that uses the
// ban list as its gate rejecting it.
func ExampleBans() {
	srv, err := embedded.Start(embedded.Config{})
	if err != nil {
		panic(err)
	}
	defer srv.Shutdown()
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		panic(err)
	}
	defer nc.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	bans, err := events.NewBans(ctx, events.BansConfig{Conn: nc})
	if err != nil {
		panic(err)
	}
	defer bans.Close()
	lim, err := limiter.New(limiter.Config{Limits: limiter.Moderate(), Gate: bans})
	if err != nil {
		panic(err)
	}
	defer lim.Close()

	if err := bans.Ban(ctx, "203.0.113.5", 10*time.Minute, "abuse"); err != nil {
		panic(err)
	}
	d, _ := lim.Connect(ctx, "conn-1", "203.0.113.5", nil)
	_, banned := bans.BannedUntil("203.0.113.5", time.Now())
	fmt.Println(banned, d.Allowed, d.Reason)
	// Output: true false banned
}
