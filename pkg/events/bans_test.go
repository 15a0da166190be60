package events_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ratethrottle/ratethrottle/internal/natstest"
	"github.com/ratethrottle/ratethrottle/pkg/events"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
	"github.com/ratethrottle/ratethrottle/pkg/subject"
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
	nc := connect(t, srv)
	cases := []struct {
		cfg   events.BansConfig
		field string
	}{
		{events.BansConfig{}, "Conn"},
		{events.BansConfig{Conn: nc, Bucket: "a.b"}, "Bucket"},
		{events.BansConfig{Conn: nc, MarkerTTL: time.Millisecond}, "MarkerTTL"},
		{events.BansConfig{Conn: nc, Replicas: -1}, "Replicas"},
		{events.BansConfig{Conn: nc, Prefix: ">"}, "Prefix"},
	}
	for _, c := range cases {
		_, err := events.NewBans(context.Background(), c.cfg)
		wantFieldError(t, fmt.Sprintf("NewBans(%+v)", c.cfg), err, c.field)
	}
}

// TestBanOnOneNodeRejectsOnAnother bans a client through node A and
// measures how long node B's limiter takes to reject its connections with
// reason banned, and to tell the application to close open ones.
func TestBanOnOneNodeRejectsOnAnother(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	var closedB clientLog
	a := newBans(t, events.BansConfig{Conn: connect(t, srv), NodeID: "a"})
	b := newBans(t, events.BansConfig{Conn: connect(t, srv), NodeID: "b"})
	var unbannedB clientLog
	cancel := b.Notify(func(ban events.Ban) { closedB.add(ban.Client) }, unbannedB.add)
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
	if !banned(a, client) {
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
	waitFor(t, time.Second, "node B's ban callback", func() bool { return closedB.has(client) })
	if d, _ := limB.Connect(ctx, "other", "198.51.100.1", nil); !d.Allowed {
		t.Errorf("another client was rejected: %+v", d)
	}
	if bans := b.List(); len(bans) != 1 || bans[0].Client != client || bans[0].Reason != "spam" || bans[0].Node != "a" {
		t.Errorf("List = %+v", bans)
	}

	if err := a.Unban(ctx, client); err != nil {
		t.Fatal(err)
	}
	if banned(a, client) {
		t.Error("the unbanning node still sees the ban")
	}
	waitFor(t, time.Second, "node B to lift the ban", func() bool { return !banned(b, client) })
	waitFor(t, time.Second, "node B's unban callback", func() bool { return unbannedB.has(client) })
	if d, _ := limB.Connect(ctx, "later", client, nil); !d.Allowed {
		t.Errorf("connect after unban: %+v", d)
	}

	// A node started later loads the bans in force before NewBans returns.
	if err := a.Ban(ctx, "x.y*z", 0, "forever"); err != nil {
		t.Fatal(err)
	}
	c := newBans(t, events.BansConfig{Conn: connect(t, srv)})
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
	a := newBans(t, events.BansConfig{Conn: connect(t, srv), MarkerTTL: time.Second})
	nc := connect(t, srv)
	js := newJS(t, nc)
	b := newBans(t, events.BansConfig{Conn: nc, MarkerTTL: time.Second})
	t.Cleanup(b.Notify(nil, expired.add))
	ctx := testCtx(t)
	const client = "ttl client"
	start := time.Now()
	if err := a.Ban(ctx, client, 2*time.Second, "short"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Second, "node B to see the ban", func() bool { return banned(b, client) })
	kv, err := js.KeyValue(ctx, events.DefaultBanBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get(ctx, subject.Token(client)); err != nil {
		t.Fatalf("ban key: %v", err)
	}
	// The caches end the ban at exactly two seconds by the clock; the
	// server removes the key when its TTL fires, which it checks about
	// once a second: allow up to 3 s more.
	waitFor(t, 5*time.Second, "the server to expire the key", func() bool {
		_, err := kv.Get(ctx, subject.Token(client))
		return errors.Is(err, jetstream.ErrKeyNotFound)
	})
	if el := time.Since(start); el < 2*time.Second {
		t.Errorf("key gone after %v, before its TTL", el)
	}
	if banned(a, client) || banned(b, client) {
		t.Error("a node still sees the expired ban")
	}
	waitFor(t, 2*time.Second, "the unban callback for the expired ban", func() bool { return expired.has(client) })
}

// kvOf opens the default ban bucket.
func kvOf(t testing.TB, js jetstream.JetStream) jetstream.KeyValue {
	t.Helper()
	kv, err := js.KeyValue(testCtx(t), events.DefaultBanBucket)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// TestBanLongerThanTheStoreHolds sets bans whose TTL would overflow the
// server's nanosecond expiry clock (about 2,060,000 hours from 2026). They
// are stored as bans until lifted, not dropped: a one-second ban set after
// them expires first, which shows the server's expiry pass has run.
func TestBanLongerThanTheStoreHolds(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	nc := connect(t, srv)
	js := newJS(t, nc)
	a := newBans(t, events.BansConfig{Conn: nc, MarkerTTL: time.Second})
	ab, err := events.NewAutoBan(events.AutoBanConfig{Bans: a, Threshold: 1, Window: time.Minute, Duration: 2_100_000 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer ab.Close()
	ctx := testCtx(t)
	long := []time.Duration{events.MaxBanDuration + time.Second, 2_100_000 * time.Hour, time.Duration(1<<63 - 1)}
	for i, d := range long {
		if err := a.Ban(ctx, fmt.Sprint("long-", i), d, "long"); err != nil {
			t.Fatalf("Ban(%v): %v", d, err)
		}
	}
	ab.HandleViolation(limiter.Violation{Type: limiter.ViolationMessageRate, ClientID: "auto-long"})
	waitFor(t, 2*time.Second, "the automatic ban", func() bool { return banned(a, "auto-long") })
	if err := a.Ban(ctx, "short", time.Second, "short"); err != nil {
		t.Fatal(err)
	}
	// A ban at the cap keeps its end.
	if err := a.Ban(ctx, "capped", events.MaxBanDuration, "cap"); err != nil {
		t.Fatal(err)
	}
	kv := kvOf(t, js)
	waitFor(t, 5*time.Second, "the one-second ban to expire on the server", func() bool {
		_, err := kv.Get(ctx, subject.Token("short"))
		return errors.Is(err, jetstream.ErrKeyNotFound)
	})
	for _, c := range []string{"long-0", "long-1", "long-2", "auto-long", "capped"} {
		if _, err := kv.Get(ctx, subject.Token(c)); err != nil {
			t.Errorf("%s: key %v after the server's expiry pass", c, err)
		}
		until, ok := a.BannedUntil(c, time.Now())
		switch {
		case !ok:
			t.Errorf("%s: not banned", c)
		case c == "capped" && until.IsZero():
			t.Errorf("%s: a ban of exactly MaxBanDuration lost its end", c)
		case c != "capped" && !until.IsZero():
			t.Errorf("%s: until %v, want until lifted", c, until)
		}
	}
}

// unbanCount counts the unban events for one client.
func unbanCount(c *collector, client string) (n int) {
	for _, e := range c.all() {
		if e.Type == events.TypeUnban && e.Client == client {
			n++
		}
	}
	return n
}

// TestExpiredBanPublishesOneUnbanEvent runs three nodes on a three-server
// cluster. A ban that ends by its TTL is seen ending by all three, and
// exactly one unban event says so, with reason expired; a lifted ban still
// gets exactly one (the lifting node's), not one more per node.
func TestExpiredBanPublishesOneUnbanEvent(t *testing.T) {
	t.Parallel()
	cl := natstest.Cluster(t, 3)
	servers := cl.Servers()
	watch := subscribe(t, connect(t, servers[1]), events.Filter{Types: []events.Type{events.TypeBan, events.TypeUnban}})
	var nodes []*events.Bans
	var ended [3]clientLog
	for i, srv := range servers {
		n := newBans(t, events.BansConfig{Conn: connect(t, srv), NodeID: fmt.Sprint("n", i), Replicas: 3, MarkerTTL: time.Second})
		t.Cleanup(n.Notify(nil, ended[i].add))
		nodes = append(nodes, n)
	}
	ctx := testCtx(t)
	settled := func(client string) {
		t.Helper()
		waitFor(t, 10*time.Second, "every node to see "+client+"'s ban end", func() bool {
			return ended[0].has(client) && ended[1].has(client) && ended[2].has(client)
		})
		waitFor(t, 5*time.Second, "every node's claim on "+client, func() bool {
			var n uint64
			for _, b := range nodes {
				st := b.Stats()
				n += st.UnbanClaimsWon + st.UnbanClaimsLost
			}
			return n >= 3
		})
	}

	const client = "198.51.100.77"
	start := time.Now()
	if err := nodes[0].Ban(ctx, client, time.Second, "short"); err != nil {
		t.Fatal(err)
	}
	settled(client)
	t.Logf("ban of 1s ended on all three nodes after %v", time.Since(start))
	// Each node publishes its events on one connection, in order: once a
	// later event from every node has arrived, any unban event they
	// published has too.
	for i, b := range nodes {
		if err := b.Ban(ctx, fmt.Sprint("sentinel-", i), time.Hour, ""); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 2*time.Second, "the sentinel ban events", func() bool {
		n := 0
		for _, e := range watch.all() {
			if e.Type == events.TypeBan && strings.HasPrefix(e.Client, "sentinel-") {
				n++
			}
		}
		return n == 3
	})
	if n := unbanCount(watch, client); n != 1 {
		t.Fatalf("%d unban events for the expired ban, want 1", n)
	}
	e, _ := watch.find(func(e events.Event) bool { return e.Type == events.TypeUnban && e.Client == client })
	if e.Reason != "expired" || e.Metadata["source"] != "ttl" || e.Until.IsZero() || e.Node == "" {
		t.Errorf("unban event %+v", e)
	}
	var won uint64
	for _, b := range nodes {
		won += b.Stats().UnbanClaimsWon
	}
	if won != 1 {
		t.Errorf("%d nodes won the claim, want 1", won)
	}

	// A lifted ban: the lifting node's event only.
	if err := nodes[2].Unban(ctx, "sentinel-0"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "every node to see the lift", func() bool {
		return ended[0].has("sentinel-0") && ended[1].has("sentinel-0")
	})
	for i, b := range nodes {
		if err := b.Ban(ctx, fmt.Sprint("sentinel2-", i), time.Hour, ""); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 2*time.Second, "the second sentinels", func() bool {
		n := 0
		for _, e := range watch.all() {
			if strings.HasPrefix(e.Client, "sentinel2-") {
				n++
			}
		}
		return n == 3
	})
	if n := unbanCount(watch, "sentinel-0"); n != 1 {
		t.Errorf("%d unban events for a lifted ban, want 1", n)
	}
}

// TestBansUseExisting opens a bucket a node created without changing its
// settings, and fails on a bucket that does not exist.
func TestBansUseExisting(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	nc := connect(t, srv)
	js := newJS(t, nc)
	ctx := testCtx(t)
	if _, err := events.NewBans(ctx, events.BansConfig{Conn: nc, UseExisting: true}); !errors.Is(err, jetstream.ErrBucketNotFound) {
		t.Fatalf("missing bucket: %v", err)
	}
	node := newBans(t, events.BansConfig{Conn: nc, MarkerTTL: 3 * time.Second})
	tool := newBans(t, events.BansConfig{Conn: connect(t, srv), UseExisting: true, MarkerTTL: time.Hour})
	if err := tool.Ban(ctx, "c", time.Hour, "by tool"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Second, "the node to see the tool's ban", func() bool { return banned(node, "c") })
	st, err := kvOf(t, js).Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.LimitMarkerTTL() != 3*time.Second {
		t.Errorf("marker TTL %v after the tool opened the bucket, want 3s", st.LimitMarkerTTL())
	}
}

// TestRemovedBanKeyPublishesUnban deletes a ban's key with a plain KV
// client, as an operator's other tools might: the nodes lift the ban and
// one unban event says it was removed from the store.
func TestRemovedBanKeyPublishesUnban(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	watch := subscribe(t, connect(t, srv), events.Filter{Types: []events.Type{events.TypeBan, events.TypeUnban}})
	nc := connect(t, srv)
	js := newJS(t, nc)
	a := newBans(t, events.BansConfig{Conn: nc, NodeID: "a"})
	b := newBans(t, events.BansConfig{Conn: connect(t, srv), NodeID: "b"})
	ctx := testCtx(t)
	if err := a.Ban(ctx, "gone", time.Hour, ""); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Second, "node b to see the ban", func() bool { return banned(b, "gone") })
	if err := kvOf(t, js).Delete(ctx, subject.Token("gone")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "both nodes to lift the ban", func() bool { return !banned(a, "gone") && !banned(b, "gone") })
	waitFor(t, 2*time.Second, "both nodes' claims", func() bool {
		sa, sb := a.Stats(), b.Stats()
		return sa.UnbanClaimsWon+sa.UnbanClaimsLost+sb.UnbanClaimsWon+sb.UnbanClaimsLost == 2
	})
	// A later event from each node shows nothing else is in flight.
	if err := a.Ban(ctx, "s1", time.Hour, ""); err != nil {
		t.Fatal(err)
	}
	if err := b.Unban(ctx, "s1"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "node a's ban event and node b's unban event", func() bool {
		_, banned := watch.find(func(e events.Event) bool { return e.Type == events.TypeBan && e.Client == "s1" })
		return banned && unbanCount(watch, "s1") == 1
	})
	if n := unbanCount(watch, "gone"); n != 1 {
		t.Fatalf("%d unban events, want 1", n)
	}
	e, _ := watch.find(func(e events.Event) bool { return e.Type == events.TypeUnban && e.Client == "gone" })
	if e.Reason != "removed" || e.Metadata["source"] != "store" {
		t.Errorf("unban event %+v", e)
	}
}

// TestBansCountInvalidEntries writes a value that is not a ban under a
// client's key with a plain KV client: every node skips it and counts it,
// and the client is not banned.
func TestBansCountInvalidEntries(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	nc := connect(t, srv)
	b := newBans(t, events.BansConfig{Conn: nc})
	if _, err := kvOf(t, newJS(t, nc)).Put(testCtx(t), subject.Token("mallory"), []byte("not a ban")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "the invalid entry counted", func() bool { return b.Stats().Invalid == 1 })
	if banned(b, "mallory") {
		t.Error("an entry that is not a ban banned its client")
	}
}
