package policy

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/ratethrottle/ratethrottle/internal/wait"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

var ctx = context.Background()

func docWithTyping(rate int64) *Document {
	return &Document{DefaultClass: "message", Classes: map[string]Class{
		"message": {Connection: Rate{Rate: 60}},
		"typing":  {Connection: Rate{Rate: rate}},
	}}
}

func TestStorePutGetHistory(t *testing.T) {
	srv := startServer(t)
	s := newStore(t, dial(t, srv.ClientURL()), StoreConfig{NodeID: "n1"})

	_, err := s.Get(ctx)
	require.ErrorIs(t, err, ErrNotFound)
	_, err = s.History(ctx)
	require.ErrorIs(t, err, ErrNotFound)

	v1, err := s.Put(ctx, docWithTyping(10), 0, "ada")
	require.NoError(t, err)
	require.NotZero(t, v1.Revision)
	got, err := s.Get(ctx)
	require.NoError(t, err)
	require.Equal(t, v1.Revision, got.Revision)
	require.Equal(t, "ada", got.Who)
	require.Equal(t, docWithTyping(10), got.Document)
	require.NotNil(t, got.Table)

	v2, err := s.Put(ctx, docWithTyping(20), v1.Revision, "bo")
	require.NoError(t, err)

	// Two operators edited revision 1; the second one is stale.
	_, err = s.Put(ctx, docWithTyping(30), v1.Revision, "cy")
	var se *StaleError
	require.ErrorAs(t, err, &se)
	require.ErrorIs(t, err, ErrStale)
	require.Equal(t, StaleError{Want: v1.Revision, Have: v2.Revision}, *se)
	_, err = s.Put(ctx, docWithTyping(30), 0, "cy")
	require.ErrorIs(t, err, ErrStale, "0 means: only if nothing is stored")

	h, err := s.History(ctx)
	require.NoError(t, err)
	require.Len(t, h, 2)
	require.Equal(t, []string{"ada", "bo"}, []string{h[0].Who, h[1].Who})
	require.Equal(t, int64(20), h[1].Document.Classes["typing"].Connection.Rate)
}

func TestStoreStaleRaceExactlyOneWins(t *testing.T) {
	srv := startServer(t)
	s := newStore(t, dial(t, srv.ClientURL()), StoreConfig{})
	v, err := s.Put(ctx, docWithTyping(10), 0, "seed")
	require.NoError(t, err)
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins, stale := 0, 0
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.Put(ctx, docWithTyping(int64(11+i)), v.Revision, "racer")
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case errors.Is(err, ErrStale):
				stale++
			default:
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	require.Equal(t, 1, wins)
	require.Equal(t, 7, stale)
}

func TestStoreRefusesInvalidAndStoresNothing(t *testing.T) {
	srv := startServer(t)
	s := newStore(t, dial(t, srv.ClientURL()), StoreConfig{})
	v, err := s.Put(ctx, docWithTyping(10), 0, "ada")
	require.NoError(t, err)

	bad := docWithTyping(10)
	bad.Tiers = map[string]Tier{"pro": {Classes: map[string]Class{"typing": {Connection: Rate{Rate: -5}}}}}
	_, err = s.Put(ctx, bad, v.Revision, "bo")
	var ve *ValidationError
	require.ErrorAs(t, err, &ve)
	require.Equal(t, []string{"tiers.pro.classes.typing.rate"}, ve.Paths())

	got, err := s.Get(ctx)
	require.NoError(t, err)
	require.Equal(t, v.Revision, got.Revision, "nothing was written")
	h, err := s.History(ctx)
	require.NoError(t, err)
	require.Len(t, h, 1)

	_, err = s.Put(ctx, docWithTyping(10), v.Revision, string([]byte{0xff}))
	require.Error(t, err)
}

func TestStorePublishesChangedEvent(t *testing.T) {
	srv := startServer(t)
	nc := dial(t, srv.ClientURL())
	s := newStore(t, nc, StoreConfig{NodeID: "node-a", EventPrefix: "prod.rt"})
	sub, err := nc.SubscribeSync(ChangedSubject("prod.rt"))
	require.NoError(t, err)
	require.NoError(t, nc.Flush())

	v1, err := s.Put(ctx, docWithTyping(10), 0, "ada")
	require.NoError(t, err)
	next := docWithTyping(20)
	next.Tiers = map[string]Tier{"gold": {}}
	next.DefaultTier = "gold"
	v2, err := s.Put(ctx, next, v1.Revision, "bo")
	require.NoError(t, err)

	var evs []ChangedEvent
	for range 2 {
		m, err := sub.NextMsg(5 * time.Second)
		require.NoError(t, err)
		var ev ChangedEvent
		require.NoError(t, json.Unmarshal(m.Data, &ev))
		evs = append(evs, ev)
	}
	require.Equal(t, "prod.rt.policy.changed", ChangedSubject("prod.rt"))
	require.Equal(t, EventType, evs[0].Type)
	require.Equal(t, "ada", evs[0].Who)
	require.Equal(t, []string{"classes", "default_class"}, evs[0].Changed)
	require.Equal(t, ChangedEvent{V: 1, Type: EventType, Time: evs[1].Time, Node: "node-a", Who: "bo",
		Revision: v2.Revision, PreviousRevision: v1.Revision,
		Changed: []string{"classes.typing.rate", "default_tier", "tiers"}}, evs[1])
}

func TestStoreConfigRefused(t *testing.T) {
	srv := startServer(t)
	nc := dial(t, srv.ClientURL())
	for _, c := range []struct {
		cfg   StoreConfig
		field string
	}{
		{StoreConfig{}, "Conn"},
		{StoreConfig{Conn: nc, Bucket: "a.b"}, "Bucket"},
		{StoreConfig{Conn: nc, Key: "a b"}, "Key"},
		{StoreConfig{Conn: nc, Key: ".a"}, "Key"},
		{StoreConfig{Conn: nc, History: 65}, "History"},
		{StoreConfig{Conn: nc, Replicas: 6}, "Replicas"},
		{StoreConfig{Conn: nc, Timeout: -1}, "Timeout"},
		{StoreConfig{Conn: nc, EventPrefix: "a.*"}, "EventPrefix"},
	} {
		_, err := NewStore(ctx, c.cfg)
		var fe *limiter.FieldError
		require.ErrorAs(t, err, &fe, c.field)
		require.Equal(t, c.field, fe.Field)
		require.ErrorIs(t, err, ErrInvalidConfig, c.field)
	}
	for field, cfg := range map[string]WatcherConfig{
		"Bucket":         {Store: StoreConfig{Conn: nc, Bucket: "a.b"}},
		"RetryInterval":  {Store: StoreConfig{Conn: nc}, RetryInterval: -1},
		"ResyncInterval": {Store: StoreConfig{Conn: nc}, ResyncInterval: -1},
	} {
		_, err := NewWatcher(cfg)
		var fe *limiter.FieldError
		require.ErrorAs(t, err, &fe, field)
		require.Equal(t, field, fe.Field)
		require.ErrorIs(t, err, ErrInvalidConfig, field)
	}
}

func TestWatcherAppliesNewVersionsFast(t *testing.T) {
	srv := startServer(t)
	writer := newStore(t, dial(t, srv.ClientURL()), StoreConfig{})
	var mu sync.Mutex
	var seen []uint64
	w := newWatcher(t, WatcherConfig{Store: StoreConfig{Conn: dial(t, srv.ClientURL())},
		Fallback: docWithTyping(1),
		// The resync would mask a slow watch: push it out of the test.
		ResyncInterval: time.Hour,
		OnChange: func(v *Version) {
			mu.Lock()
			seen = append(seen, v.Revision)
			mu.Unlock()
		}})
	require.Zero(t, w.Current().Revision)
	wait.For(t, 10*time.Second, "watcher connected", func() bool { return w.Store() != nil })

	var rev uint64
	var worst time.Duration
	for i := range 5 {
		v, err := writer.Put(ctx, docWithTyping(int64(10+i)), rev, "ada")
		require.NoError(t, err)
		rev = v.Revision
		took := wait.For(t, time.Second, "the new version applied", func() bool { return w.Current().Revision == rev })
		worst = max(worst, took)
		require.Equal(t, int64(10+i), w.Current().Table.Tier("").Class(w.Current().Table.Class("typing")).Specs[LayerConnection].Limit)
	}
	t.Logf("slowest of 5 changes applied after %v", worst)
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, seen, 5)
	require.Equal(t, uint64(5), w.Stats().Applied)
}

func TestWatcherSkipsInvalidRevisions(t *testing.T) {
	srv := startServer(t)
	nc := dial(t, srv.ClientURL())
	writer := newStore(t, nc, StoreConfig{})
	w := newWatcher(t, WatcherConfig{Store: StoreConfig{Conn: dial(t, srv.ClientURL())}, ResyncInterval: time.Hour})
	v, err := writer.Put(ctx, docWithTyping(10), 0, "ada")
	require.NoError(t, err)
	wait.For(t, 5*time.Second, "first version", func() bool { return w.Current().Revision == v.Revision })

	// Another tool writes around Put: a bad document, then garbage, then
	// a deletion, then a good bare document.
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	kv, err := js.KeyValue(ctx, DefaultBucket)
	require.NoError(t, err)
	_, err = kv.Put(ctx, DefaultKey, []byte("classes: {typing: {rate: -1}}"))
	require.NoError(t, err)
	_, err = kv.Put(ctx, DefaultKey, []byte("{{{"))
	require.NoError(t, err)
	wait.For(t, 5*time.Second, "two invalid revisions counted", func() bool { return w.Stats().Invalid == 2 })
	require.Equal(t, v.Revision, w.Current().Revision, "invalid revisions are never applied")
	require.NoError(t, kv.Delete(ctx, DefaultKey))
	rev, err := kv.Put(ctx, DefaultKey, []byte("classes: {typing: {rate: 99}}\n"))
	require.NoError(t, err)
	wait.For(t, 5*time.Second, "bare document applied", func() bool { return w.Current().Revision == rev })
	require.Empty(t, w.Current().Who)
	require.Equal(t, uint64(2), w.Stats().Invalid)

	h, err := writer.History(ctx)
	require.NoError(t, err)
	require.Len(t, h, 5)
	require.ErrorIs(t, h[1].Err, ErrInvalid)
	require.ErrorIs(t, h[2].Err, ErrInvalid)
	require.ErrorIs(t, h[3].Err, ErrNotFound)
	require.NoError(t, h[4].Err)
}

// A node that starts while NATS is down runs on its file policy and
// switches to the cluster's once the server is back.
func TestWatcherStartsWhileNATSDown(t *testing.T) {
	srv := startServer(t)
	writer := newStore(t, dial(t, srv.ClientURL()), StoreConfig{})
	cluster, err := writer.Put(ctx, docWithTyping(42), 0, "ada")
	require.NoError(t, err)
	srv.Stop()

	file := docWithTyping(7)
	w := newWatcher(t, WatcherConfig{Store: StoreConfig{Conn: dial(t, srv.ClientURL()), Timeout: 200 * time.Millisecond},
		Fallback: file, RetryInterval: 50 * time.Millisecond})
	require.Same(t, file, w.Current().Document)
	require.Zero(t, w.Current().Revision)
	require.Nil(t, w.Store())

	require.NoError(t, srv.Restart())
	wait.For(t, 15*time.Second, "the cluster's policy", func() bool { return w.Current().Revision == cluster.Revision })
	require.Equal(t, "ada", w.Current().Who)
	require.Equal(t, int64(42), w.Current().Document.Classes["typing"].Connection.Rate)
}

// A watch that loses its server keeps applying changes once it is back.
func TestWatcherSurvivesServerRestart(t *testing.T) {
	srv := startServer(t)
	wnc := dial(t, srv.ClientURL())
	w := newWatcher(t, WatcherConfig{Store: StoreConfig{Conn: wnc}, ResyncInterval: time.Hour})
	writer := newStore(t, dial(t, srv.ClientURL()), StoreConfig{})
	v1, err := writer.Put(ctx, docWithTyping(1), 0, "ada")
	require.NoError(t, err)
	wait.For(t, 5*time.Second, "v1", func() bool { return w.Current().Revision == v1.Revision })

	srv.Stop()
	require.NoError(t, srv.Restart())
	wait.For(t, 10*time.Second, "reconnected", func() bool { return wnc.IsConnected() })
	var v2 *Version
	wait.For(t, 10*time.Second, "a write after the restart", func() bool {
		v2, err = writer.Put(ctx, docWithTyping(2), v1.Revision, "bo")
		return err == nil
	})
	took := wait.For(t, 3*time.Second, "v2 applied", func() bool { return w.Current().Revision == v2.Revision })
	t.Logf("applied %v after the write that followed the restart", took)
}

func TestWatcherSeedsAnEmptyCluster(t *testing.T) {
	srv := startServer(t)
	w := newWatcher(t, WatcherConfig{Store: StoreConfig{Conn: dial(t, srv.ClientURL()), NodeID: "n1"},
		Fallback: docWithTyping(5), Seed: true})
	wait.For(t, 5*time.Second, "seeded and applied", func() bool { return w.Current().Revision != 0 })
	require.Equal(t, "seed: node n1", w.Current().Who)
	require.Equal(t, docWithTyping(5), w.Current().Document)

	// A second node seeds nothing: the cluster's document wins.
	w2 := newWatcher(t, WatcherConfig{Store: StoreConfig{Conn: dial(t, srv.ClientURL()), NodeID: "n2"},
		Fallback: docWithTyping(9), Seed: true})
	wait.For(t, 5*time.Second, "second node", func() bool { return w2.Current().Revision == w.Current().Revision })
	require.Equal(t, int64(5), w2.Current().Document.Classes["typing"].Connection.Rate)
}

func TestWatcherRecoversPanickingCallback(t *testing.T) {
	srv := startServer(t)
	writer := newStore(t, dial(t, srv.ClientURL()), StoreConfig{})
	w := newWatcher(t, WatcherConfig{Store: StoreConfig{Conn: dial(t, srv.ClientURL())},
		OnChange: func(*Version) { panic("bad callback") }})
	v1, err := writer.Put(ctx, docWithTyping(1), 0, "ada")
	require.NoError(t, err)
	v2, err := writer.Put(ctx, docWithTyping(2), v1.Revision, "ada")
	require.NoError(t, err)
	wait.For(t, 5*time.Second, "both versions applied", func() bool { return w.Current().Revision == v2.Revision })
	require.GreaterOrEqual(t, w.Stats().Panics, uint64(1))
}

func TestWatcherRefusesInvalidFallback(t *testing.T) {
	nc, err := nats.Connect("nats://127.0.0.1:1", nats.RetryOnFailedConnect(true), nats.MaxReconnects(0))
	require.NoError(t, err)
	defer nc.Close()
	_, err = NewWatcher(WatcherConfig{Store: StoreConfig{Conn: nc}, Fallback: &Document{DefaultTier: "x"}})
	require.ErrorIs(t, err, ErrInvalid)
	_, err = NewWatcher(WatcherConfig{})
	require.Error(t, err)
}

func TestDiff(t *testing.T) {
	a := docWithTyping(10)
	require.Empty(t, Diff(a, docWithTyping(10)))
	b := docWithTyping(10)
	b.Classes["typing"] = Class{Connection: Rate{Rate: 10}, User: &Rate{Rate: 5}}
	b.Limits.MaxMessageSize = 100
	delete(b.Classes, "message")
	require.Equal(t, []string{"classes.message", "classes.typing.user", "limits"}, Diff(a, b))
	require.Equal(t, []string{"classes", "default_class"}, Diff(nil, a))
}
