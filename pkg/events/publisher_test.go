package events_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ratethrottle/ratethrottle/pkg/events"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

func newPublisher(t testing.TB, cfg events.PublisherConfig) *events.Publisher {
	t.Helper()
	p, err := events.NewPublisher(cfg)
	if err != nil {
		t.Fatalf("NewPublisher: %v", err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func subscribe(t testing.TB, nc *nats.Conn, f events.Filter) *collector {
	t.Helper()
	c := &collector{}
	sub, err := events.Subscribe(context.Background(), nc, f, c.add)
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	return c
}

func TestPublisherConfigErrors(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	nc := connect(t, srv)
	cases := []struct {
		cfg   events.PublisherConfig
		field string
	}{
		{events.PublisherConfig{}, "Conn"},
		{events.PublisherConfig{Conn: nc, Prefix: "a.*"}, "Prefix"},
		{events.PublisherConfig{Conn: nc, BufferSize: -1}, "BufferSize"},
		{events.PublisherConfig{Conn: nc, FlushTimeout: -time.Second}, "FlushTimeout"},
	}
	for _, c := range cases {
		_, err := events.NewPublisher(c.cfg)
		wantFieldError(t, fmt.Sprintf("NewPublisher(%+v)", c.cfg), err, c.field)
	}
}

// TestEveryTypeWithEveryField publishes one violation of each type through
// a Publisher and a ban and an unban through Bans, and checks that a
// subscriber on another connection receives each with every field.
func TestEveryTypeWithEveryField(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	pubConn, subConn := connect(t, srv), connect(t, srv)
	got := subscribe(t, subConn, events.Filter{})
	pub := newPublisher(t, events.PublisherConfig{Conn: pubConn, NodeID: "node-a"})

	t0 := time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)
	meta := map[string]string{"user_agent": "test", "region": "eu"}
	var want []events.Event
	for i, typ := range events.Types() {
		if !typ.IsViolation() {
			continue
		}
		v := limiter.Violation{
			Type: limiter.ViolationType(typ), Reason: limiter.Reason("reason_" + string(typ)),
			Time: t0.Add(time.Duration(i) * time.Second), ClientID: "client." + string(typ),
			ConnectionID: fmt.Sprintf("conn-%d", i), Room: "room *" + string(typ),
			Size: 512, Limit: 100, Current: int64(200 + i), RetryAfter: 1500 * time.Millisecond, Metadata: meta,
		}
		pub.HandleViolation(v)
		e := events.FromViolation(v)
		e.Node = "node-a"
		want = append(want, e)
	}

	nc := connect(t, srv)
	bans := newBans(t, events.BansConfig{Conn: nc, NodeID: "node-b"})
	ctx := testCtx(t)
	if err := bans.Ban(ctx, "client.ban", time.Hour, "abuse"); err != nil {
		t.Fatal(err)
	}
	if err := bans.Unban(ctx, "client.ban"); err != nil {
		t.Fatal(err)
	}

	waitFor(t, 5*time.Second, "every event type", func() bool { return got.len() >= len(events.Types()) })
	for _, w := range want {
		e, ok := got.find(func(e events.Event) bool { return e.Type == w.Type })
		if !ok {
			t.Errorf("no %s event", w.Type)
			continue
		}
		if e.ID == "" || e.V != 1 || e.Node != w.Node || !e.Time.Equal(w.Time) || e.Reason != w.Reason ||
			e.Client != w.Client || e.Connection != w.Connection || e.Room != w.Room || e.Limit != w.Limit ||
			e.Observed != w.Observed || e.RetryAfterMS != 1500 || e.Metadata["region"] != "eu" || e.Metadata["user_agent"] != "test" {
			t.Errorf("%s: got %+v\nwant %+v", w.Type, e, w)
		}
	}
	ban, ok := got.find(func(e events.Event) bool { return e.Type == events.TypeBan })
	if !ok || ban.Client != "client.ban" || ban.Reason != "abuse" || ban.Node != "node-b" || ban.RetryAfterMS != 3600000 ||
		ban.Until.IsZero() || ban.Metadata["source"] != "manual" || ban.ID == "" {
		t.Errorf("ban event %+v (found %v)", ban, ok)
	}
	unban, ok := got.find(func(e events.Event) bool { return e.Type == events.TypeUnban })
	if !ok || unban.Client != "client.ban" || unban.Node != "node-b" || unban.ID == "" || unban.ID == ban.ID {
		t.Errorf("unban event %+v (found %v)", unban, ok)
	}
	ids := map[string]bool{}
	for _, e := range got.all() {
		if ids[e.ID] {
			t.Errorf("duplicate event id %s", e.ID)
		}
		ids[e.ID] = true
	}
	if s := pub.Stats(); s.Published != uint64(len(want)) || s.Dropped != 0 || s.Failed != 0 {
		t.Errorf("stats %+v", s)
	}
}

// TestWildcardsAndFilters checks the subjects against real subscriptions:
// raw NATS wildcards and Filter by type and by client, with client IDs that
// would break a naive subject.
func TestWildcardsAndFilters(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	nc := connect(t, srv)
	pub := newPublisher(t, events.PublisherConfig{Conn: connect(t, srv)})

	var mu sync.Mutex
	counts := map[string]int{}
	for _, subj := range []string{"ratethrottle.violations.>", "ratethrottle.violations.message_rate.*", "ratethrottle.>"} {
		subj := subj
		if _, err := nc.Subscribe(subj, func(*nats.Msg) { mu.Lock(); counts[subj]++; mu.Unlock() }); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	weird := []string{"a.b", "*", ">", "a b", "日本語", "", strings.Repeat("10KB.*>", 1500)}
	byType := subscribe(t, nc, events.Filter{Types: []events.Type{events.TypeMessageRate}})
	byClient := subscribe(t, nc, events.Filter{Clients: []string{"a.b", ">"}})
	both := subscribe(t, nc, events.Filter{Types: []events.Type{events.TypeBandwidth}, Clients: []string{weird[6]}})

	for _, id := range weird {
		for _, typ := range []limiter.ViolationType{limiter.ViolationMessageRate, limiter.ViolationBandwidth} {
			pub.HandleViolation(limiter.Violation{Type: typ, ClientID: id, Time: time.Now()})
		}
	}
	n := len(weird)
	waitFor(t, 5*time.Second, "wildcard deliveries", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return counts["ratethrottle.violations.>"] == 2*n && counts["ratethrottle.violations.message_rate.*"] == n &&
			counts["ratethrottle.>"] == 2*n && byType.len() == n && byClient.len() == 4 && both.len() == 1
	})
	for _, e := range byType.all() {
		if e.Type != events.TypeMessageRate {
			t.Errorf("type filter let through %s", e.Type)
		}
	}
	for _, e := range byClient.all() {
		if e.Client != "a.b" && e.Client != ">" {
			t.Errorf("client filter let through %q", e.Client)
		}
	}
	if e := both.all()[0]; e.Client != weird[6] || e.Type != events.TypeBandwidth {
		t.Errorf("type and client filter let through %s %.20q", e.Type, e.Client)
	}
}

// TestSubscribeContextCancel checks that cancelling the context ends a
// subscription and its goroutine.
func TestSubscribeContextCancel(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	nc := connect(t, srv)
	ctx, cancel := context.WithCancel(context.Background())
	sub, err := events.Subscribe(ctx, nc, events.Filter{}, func(events.Event) {})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case <-sub.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("subscription did not end after cancel")
	}
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish("ratethrottle.violations.x.y", []byte("not json")); err != nil {
		t.Fatal(err)
	}
}

// TestPublisherDuringOutage cuts NATS off while a limiter reports a stream
// of violations: decisions keep their speed, what cannot be published is
// counted, and publishing resumes after the server is back.
func TestPublisherDuringOutage(t *testing.T) {
	srv := startServer(t)
	// A small reconnect buffer, so that the outage overflows it and the
	// connection refuses events, which the Publisher counts.
	pubConn := connect(t, srv, nats.ReconnectBufSize(4096))
	subConn := connect(t, srv)
	got := subscribe(t, subConn, events.Filter{Types: []events.Type{events.TypeMessageRate}})
	pub := newPublisher(t, events.PublisherConfig{Conn: pubConn, BufferSize: 1024})
	lim, err := limiter.New(limiter.Config{Limits: limiter.Limits{MessagesPerMinute: 1}, Sink: pub})
	if err != nil {
		t.Fatal(err)
	}
	defer lim.Close()
	ctx := context.Background()
	if _, err := lim.Connect(ctx, "c1", "client", nil); err != nil {
		t.Fatal(err)
	}
	lim.CheckMessage(ctx, "c1", 1) // the one allowed message

	const n = 20000
	deny := func() time.Duration {
		start := time.Now()
		for range n {
			if d := lim.CheckMessage(ctx, "c1", 1); d.Allowed {
				t.Fatal("message allowed")
			}
		}
		return time.Since(start)
	}
	baseline := deny()
	waitFor(t, 10*time.Second, "publisher to drain its queue", func() bool { return pub.Stats().Queued == 0 })
	if err := pubConn.Flush(); err != nil {
		t.Fatal(err)
	}

	srv.Stop()
	waitFor(t, 5*time.Second, "publisher connection to notice the outage", func() bool { return !pubConn.IsConnected() })
	outage := deny()
	// A decision that waited for NATS would wait at least the reconnect
	// interval (20 ms), so n of them would take minutes. The bound allows
	// ten times the connected baseline plus 500 ms of scheduler noise on
	// shared CPUs.
	if limit := 10*baseline + 500*time.Millisecond; outage > limit {
		t.Errorf("%d decisions took %v during the outage, %v before it (limit %v)", n, outage, baseline, limit)
	}
	waitFor(t, 10*time.Second, "publisher to drain its queue", func() bool { return pub.Stats().Queued == 0 })
	s := pub.Stats()
	if s.Failed+s.Dropped == 0 {
		t.Errorf("no event counted as failed or dropped during the outage: %+v", s)
	}
	t.Logf("baseline %v, outage %v, stats %+v", baseline, outage, s)

	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "both connections to reconnect", func() bool {
		return pubConn.IsConnected() && subConn.IsConnected()
	})
	// The subscriber's interest is restored on reconnect; a violation is
	// reported at each poll until one arrives.
	before := got.len()
	waitFor(t, 10*time.Second, "an event after the outage", func() bool {
		lim.CheckMessage(ctx, "c1", 1)
		return got.len() > before
	})
	if err := pub.Close(); err != nil {
		t.Logf("close flush: %v", err)
	}
	// Every violation the limiter reported is accounted for.
	reported := uint64(lim.Statistics().Denied[limiter.ReasonRateLimitExceeded])
	s = pub.Stats()
	if sum := s.Published + s.Dropped + s.Failed; sum != reported {
		t.Errorf("published %d + dropped %d + failed %d = %d, want %d reported", s.Published, s.Dropped, s.Failed, sum, reported)
	}
	if err := pub.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestHandleViolationAllocatesNothing backs the claim on Publisher: handing
// it a violation converts and queues it without allocating. The queue is
// large enough that no run fills it.
func TestHandleViolationAllocatesNothing(t *testing.T) {
	srv := startServer(t)
	nc := connect(t, srv)
	p, err := events.NewPublisher(events.PublisherConfig{Conn: nc, NodeID: "n1", BufferSize: 1 << 12})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	v := limiter.Violation{Type: limiter.ViolationMessageRate, Reason: limiter.ReasonRateLimitExceeded,
		Time: time.Unix(1700000000, 0), ClientID: "client", ConnectionID: "conn", Limit: 10,
		RetryAfter: time.Second, Metadata: map[string]string{"k": "v"}}
	if allocs := testing.AllocsPerRun(1000, func() { p.HandleViolation(v) }); allocs != 0 {
		t.Errorf("HandleViolation allocates %.1f times per call, want 0", allocs)
	}
}

// Every event offered to a Publisher ends up counted exactly once, even
// when it is offered while Close runs: Published + Dropped + Failed equals
// the number of offers.
func TestPublisherCloseAccountsForEveryEvent(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	nc := connect(t, srv)
	for round := 0; round < 20; round++ {
		p, err := events.NewPublisher(events.PublisherConfig{Conn: nc, BufferSize: 8})
		if err != nil {
			t.Fatal(err)
		}
		const writers, each = 4, 200
		var wg sync.WaitGroup
		start := make(chan struct{})
		for w := 0; w < writers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				for i := 0; i < each; i++ {
					p.HandleViolation(limiter.Violation{Type: limiter.ViolationMessageRate, ClientID: "c"})
				}
			}()
		}
		close(start)
		_ = p.Close()
		wg.Wait()
		s := p.Stats()
		if got := s.Published + s.Dropped + s.Failed; got != writers*each || s.Queued != 0 {
			t.Fatalf("round %d: published %d + dropped %d + failed %d = %d, queued %d; want %d offers, none queued",
				round, s.Published, s.Dropped, s.Failed, got, s.Queued, writers*each)
		}
	}
}
