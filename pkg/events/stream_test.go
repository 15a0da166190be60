package events_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ratethrottle/ratethrottle/pkg/events"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

// TestReplayAfterRestart keeps history in a stream and checks that a
// durable consumer that stops and starts again receives what was published
// while it was away, and nothing twice.
func TestReplayAfterRestart(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	ctx := testCtx(t)
	stream, err := events.EnsureStream(ctx, connect(t, srv), events.StreamConfig{MaxMsgs: 1000, Storage: jetstream.MemoryStorage})
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c := info.Config; c.MaxMsgs != 1000 || c.MaxAge != 24*time.Hour || c.MaxBytes != 256<<20 || c.Discard != jetstream.DiscardOld {
		t.Errorf("stream limits %+v", c)
	}
	pub := newPublisher(t, events.PublisherConfig{Conn: connect(t, srv)})
	report := func(conn string) {
		pub.HandleViolation(limiter.Violation{Type: limiter.ViolationMessageRate, ClientID: "c", ConnectionID: conn, Time: time.Now()})
	}
	waitStored := func(n uint64) {
		waitFor(t, 5*time.Second, "events stored", func() bool {
			info, err := stream.Info(ctx)
			return err == nil && info.State.Msgs == n
		})
	}
	for _, c := range []string{"1", "2", "3"} {
		report(c)
	}
	waitStored(3)

	cfg := events.DurableConfig{Durable: "audit", Filter: events.Filter{Types: []events.Type{events.TypeMessageRate}}}
	first := &collector{}
	sub, err := events.SubscribeDurable(ctx, connect(t, srv), cfg, first.add)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the first three events", func() bool { return first.len() == 3 })
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}

	for _, c := range []string{"4", "5", "6"} {
		report(c)
	}
	waitStored(6)
	second := &collector{}
	sub, err = events.SubscribeDurable(ctx, connect(t, srv), cfg, second.add)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	waitFor(t, 5*time.Second, "the three missed events", func() bool { return second.len() >= 3 })
	for i, e := range second.all() {
		if want := string(rune('4' + i)); e.Connection != want {
			t.Errorf("replayed event %d is connection %q, want %q", i, e.Connection, want)
		}
	}
	// Another durable starts from the oldest event kept.
	fresh := &collector{}
	sub2, err := events.SubscribeDurable(ctx, connect(t, srv), events.DurableConfig{Durable: "fresh"}, fresh.add)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "all six events for a new durable", func() bool { return fresh.len() == 6 })
	_ = sub2.Close()

	ctx2, cancel := context.WithCancel(ctx)
	sub3, err := events.SubscribeDurable(ctx2, connect(t, srv), events.DurableConfig{Durable: "cancelled"}, func(events.Event) {})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case <-sub3.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("durable subscription did not end after cancel")
	}
}

// TestStreamConfigErrors checks that EnsureStream, SubscribeDurable and
// Subscribe refuse a missing connection or handler and negative limits, naming the
// field, before they touch the server.
func TestStreamConfigErrors(t *testing.T) {
	t.Parallel()
	nc := connect(t, startServer(t))
	ctx := testCtx(t)
	for _, c := range []struct {
		nc    *nats.Conn
		cfg   events.StreamConfig
		field string
	}{
		{nil, events.StreamConfig{}, "nc"},
		{nc, events.StreamConfig{MaxAge: -time.Second}, "MaxAge"},
		{nc, events.StreamConfig{MaxMsgs: -1}, "MaxMsgs"},
		{nc, events.StreamConfig{MaxBytes: -1}, "MaxBytes"},
		{nc, events.StreamConfig{Replicas: -1}, "Replicas"},
		{nc, events.StreamConfig{Prefix: "a..b"}, "Prefix"},
	} {
		_, err := events.EnsureStream(ctx, c.nc, c.cfg)
		wantFieldError(t, fmt.Sprintf("EnsureStream(%+v)", c.cfg), err, c.field)
	}
	fn := func(events.Event) {}
	for _, c := range []struct {
		nc    *nats.Conn
		cfg   events.DurableConfig
		fn    func(events.Event)
		field string
	}{
		{nil, events.DurableConfig{Durable: "d"}, fn, "nc"},
		{nc, events.DurableConfig{Durable: "d"}, nil, "fn"},
		{nc, events.DurableConfig{}, fn, "Durable"},
		{nc, events.DurableConfig{Durable: "d", AckWait: -time.Second}, fn, "AckWait"},
		{nc, events.DurableConfig{Durable: "d", Filter: events.Filter{Prefix: "a.>"}}, fn, "Prefix"},
	} {
		_, err := events.SubscribeDurable(ctx, c.nc, c.cfg, c.fn)
		wantFieldError(t, fmt.Sprintf("SubscribeDurable(%+v)", c.cfg), err, c.field)
	}
	_, err := events.Subscribe(ctx, nil, events.Filter{}, fn)
	wantFieldError(t, "Subscribe(nil)", err, "nc")
}
