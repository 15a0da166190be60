package events_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ratethrottle/ratethrottle/pkg/events"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

func newBans(t testing.TB, cfg events.BansConfig) *events.Bans {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := events.NewBans(ctx, cfg)
	if err != nil {
		t.Fatalf("NewBans: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// clientLog records the clients passed to a callback.
type clientLog struct {
	mu      sync.Mutex
	clients []string
}

func (l *clientLog) add(c string) { l.mu.Lock(); l.clients = append(l.clients, c); l.mu.Unlock() }

func (l *clientLog) has(c string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, x := range l.clients {
		if x == c {
			return true
		}
	}
	return false
}

func TestBansConfigErrors(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	js := newJS(t, connect(t, srv))
	cases := []struct {
		cfg   events.BansConfig
		field string
	}{
		{events.BansConfig{}, "JetStream"},
		{events.BansConfig{JetStream: js, Bucket: "a.b"}, "Bucket"},
		{events.BansConfig{JetStream: js, MarkerTTL: time.Millisecond}, "MarkerTTL"},
		{events.BansConfig{JetStream: js, Replicas: -1}, "Replicas"},
		{events.BansConfig{JetStream: js, Prefix: ">"}, "Prefix"},
	}
	for _, c := range cases {
		_, err := events.NewBans(context.Background(), c.cfg)
		var ce *events.ConfigError
		if !errors.As(err, &ce) || ce.Field != c.field {
			t.Errorf("NewBans(%+v) = %v, want a ConfigError on %s", c.cfg, err, c.field)
		}
	}
}

// TestBanOnOneNodeRejectsOnAnother bans a client through node A and
// measures how long node B's limiter takes to reject its connections with
// reason banned, and to tell the application to close open ones.
func TestBanOnOneNodeRejectsOnAnother(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	var closedB clientLog
	a := newBans(t, events.BansConfig{JetStream: newJS(t, connect(t, srv)), Node: "a"})
	b := newBans(t, events.BansConfig{JetStream: newJS(t, connect(t, srv)), Node: "b", OnBan: func(ban events.Ban) { closedB.add(ban.Client) }})
	var unbannedB clientLog
	cancel := b.Notify(nil, unbannedB.add)
	defer cancel()
	limB, err := limiter.New(limiter.Config{Limits: limiter.Moderate(), Gate: b})
	if err != nil {
		t.Fatal(err)
	}
	defer limB.Close()

	ctx := testCtx(t)
	const client = "203.0.113.7"
	if d, _ := limB.Connect(ctx, "before", client, nil); !d.Allowed {
		t.Fatalf("connect before the ban: %+v", d)
	}
	start := time.Now()
	if err := a.Ban(ctx, client, time.Hour, "spam"); err != nil {
		t.Fatal(err)
	}
	if !a.IsBanned(client) {
		t.Error("the banning node does not see its own ban at once")
	}
	var last limiter.Decision
	waitFor(t, time.Second, "node B to reject the banned client", func() bool {
		last, _ = limB.Connect(ctx, "after", client, nil)
		return last.Reason == limiter.ReasonBanned
	})
	t.Logf("ban visible on node B after %v", time.Since(start))
	if last.RetryAfter <= 59*time.Minute || last.RetryAfter > time.Hour {
		t.Errorf("RetryAfter %v, want just under an hour", last.RetryAfter)
	}
	waitFor(t, time.Second, "node B's OnBan", func() bool { return closedB.has(client) })
	if d, _ := limB.Connect(ctx, "other", "198.51.100.1", nil); !d.Allowed {
		t.Errorf("another client was rejected: %+v", d)
	}
	if bans := b.List(); len(bans) != 1 || bans[0].Client != client || bans[0].Reason != "spam" || bans[0].Node != "a" {
		t.Errorf("List = %+v", bans)
	}

	if err := a.Unban(ctx, client); err != nil {
		t.Fatal(err)
	}
	if a.IsBanned(client) {
		t.Error("the unbanning node still sees the ban")
	}
	waitFor(t, time.Second, "node B to lift the ban", func() bool { return !b.IsBanned(client) })
	waitFor(t, time.Second, "node B's OnUnban", func() bool { return unbannedB.has(client) })
	if d, _ := limB.Connect(ctx, "later", client, nil); !d.Allowed {
		t.Errorf("connect after unban: %+v", d)
	}

	// A node started later loads the bans in force before NewBans returns.
	if err := a.Ban(ctx, "x.y*z", 0, "forever"); err != nil {
		t.Fatal(err)
	}
	c := newBans(t, events.BansConfig{JetStream: newJS(t, connect(t, srv))})
	if until, ok := c.BannedUntil("x.y*z", time.Now()); !ok || !until.IsZero() {
		t.Errorf("late node: BannedUntil = %v, %v; want a ban until lifted", until, ok)
	}
	if err := a.Ban(ctx, "x", -time.Second, ""); !errors.Is(err, events.ErrInvalidDuration) {
		t.Errorf("negative duration: %v", err)
	}
}

// TestBanExpiresByTTL sets a two-second ban and checks that the server
// removes the key by its TTL and every node's cache lets the client in.
func TestBanExpiresByTTL(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	var expired clientLog
	a := newBans(t, events.BansConfig{JetStream: newJS(t, connect(t, srv)), MarkerTTL: time.Second})
	js := newJS(t, connect(t, srv))
	b := newBans(t, events.BansConfig{JetStream: js, MarkerTTL: time.Second, OnUnban: expired.add})
	ctx := testCtx(t)
	const client = "ttl client"
	start := time.Now()
	if err := a.Ban(ctx, client, 2*time.Second, "short"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Second, "node B to see the ban", func() bool { return b.IsBanned(client) })
	kv, err := js.KeyValue(ctx, events.DefaultBanBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get(ctx, events.ClientToken(client)); err != nil {
		t.Fatalf("ban key: %v", err)
	}
	// The caches end the ban at exactly two seconds by the clock; the
	// server removes the key when its TTL fires, which it checks about
	// once a second: allow up to 3 s more.
	waitFor(t, 5*time.Second, "the server to expire the key", func() bool {
		_, err := kv.Get(ctx, events.ClientToken(client))
		return errors.Is(err, jetstream.ErrKeyNotFound)
	})
	if el := time.Since(start); el < 2*time.Second {
		t.Errorf("key gone after %v, before its TTL", el)
	}
	if a.IsBanned(client) || b.IsBanned(client) {
		t.Error("a node still sees the expired ban")
	}
	waitFor(t, 2*time.Second, "OnUnban for the expired ban", func() bool { return expired.has(client) })
}
