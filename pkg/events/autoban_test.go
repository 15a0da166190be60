package events_test

import (
	"context"
	"testing"
	"time"

	"github.com/ratethrottle/ratethrottle/pkg/events"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

// TestAutoBanFiresAtThreshold runs two nodes whose limiters report message
// rate violations to an AutoBan each; both count in one shared store, as
// they would in a cluster store. The ban fires at the fifth violation, not
// before, every node rejects the client, and a ban event says why.
func TestAutoBanFiresAtThreshold(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	watch := subscribe(t, connect(t, srv), events.Filter{Types: []events.Type{events.TypeBan}})
	bansA := newBans(t, events.BansConfig{Conn: connect(t, srv), NodeID: "a"})
	bansB := newBans(t, events.BansConfig{Conn: connect(t, srv), NodeID: "b"})

	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	now := func() time.Time { return t0 } // violations all fall within the window
	shared := limiter.NewMemoryStore(limiter.MemoryStoreConfig{SweepInterval: -1, Now: now})
	defer shared.Close()
	newNode := func(bans *events.Bans) (*limiter.Limiter, *events.AutoBan) {
		ab, err := events.NewAutoBan(events.AutoBanConfig{Bans: bans, Store: shared, Threshold: 5, Window: time.Minute, Duration: time.Hour, Now: now})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = ab.Close() })
		lim, err := limiter.New(limiter.Config{Limits: limiter.Limits{MessagesPerMinute: 1}, Gate: bans, Sink: ab, Now: now})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = lim.Close() })
		return lim, ab
	}
	limA, abA := newNode(bansA)
	limB, abB := newNode(bansB)
	ctx := context.Background()
	const client = "198.51.100.9"
	for _, l := range []*limiter.Limiter{limA, limB} {
		if d, _ := l.Connect(ctx, "conn", client, nil); !d.Allowed {
			t.Fatal("connect denied")
		}
		l.CheckMessage(ctx, "conn", 1) // allowed
	}
	for i := range 4 {
		lim := []*limiter.Limiter{limA, limB}[i%2]
		if d := lim.CheckMessage(ctx, "conn", 1); d.Reason != limiter.ReasonRateLimitExceeded {
			t.Fatalf("violation %d: %+v", i+1, d)
		}
	}
	// The trigger is decided on the deciding goroutine, so these reads
	// are exact: four violations trigger nothing.
	if a, b := abA.Stats(), abB.Stats(); a.Triggered+b.Triggered != 0 || banned(bansA, client) || banned(bansB, client) {
		t.Fatalf("banned before the threshold: %+v %+v", a, b)
	}
	limA.CheckMessage(ctx, "conn", 1) // the fifth
	if s := abA.Stats(); s.Triggered != 1 {
		t.Fatalf("fifth violation did not trigger: %+v", s)
	}
	waitFor(t, time.Second, "node B to see the automatic ban", func() bool { return banned(bansB, client) })
	if d, _ := limB.Connect(ctx, "conn2", client, nil); d.Reason != limiter.ReasonBanned {
		t.Errorf("node B connect after auto-ban: %+v", d)
	}
	waitFor(t, 2*time.Second, "the ban event", func() bool { return watch.len() == 1 })
	e := watch.all()[0]
	if e.Client != client || e.Node != "a" || e.Limit != 5 || e.Observed != 5 || e.RetryAfterMS != 3600000 ||
		e.Metadata["source"] != "auto" || e.Metadata["window"] != "1m0s" || e.Reason == "" {
		t.Errorf("ban event %+v", e)
	}
	// Violations while banned are not counted and do not ban again.
	for range 10 {
		limA.CheckMessage(ctx, "conn", 1)
	}
	if s := abA.Stats(); s.Triggered != 1 || s.Banned != 1 || s.Failed != 0 {
		t.Errorf("stats after the ban %+v", s)
	}
}

func TestAutoBanConfigErrors(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	bans := newBans(t, events.BansConfig{Conn: connect(t, srv)})
	cases := []struct {
		cfg   events.AutoBanConfig
		field string
	}{
		{events.AutoBanConfig{Threshold: 1, Window: time.Second}, "Bans"},
		{events.AutoBanConfig{Bans: bans, Window: time.Second}, "Threshold"},
		{events.AutoBanConfig{Bans: bans, Threshold: 3}, "Window"},
		{events.AutoBanConfig{Bans: bans, Threshold: 3, Window: time.Second, Duration: -1}, "Duration"},
	}
	for _, c := range cases {
		_, err := events.NewAutoBan(c.cfg)
		wantFieldError(t, "NewAutoBan", err, c.field)
	}
}
