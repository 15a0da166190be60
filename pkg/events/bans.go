package events

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ratethrottle/ratethrottle/internal/kvwatch"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
	"github.com/ratethrottle/ratethrottle/pkg/subject"
)

// DefaultBanBucket is the KV bucket of bans when a BansConfig leaves it
// empty.
const DefaultBanBucket = "ratethrottle_bans"

// BansConfig configures Bans. Zero fields get defaults.
type BansConfig struct {
	// Conn is the NATS connection to the bucket's JetStream, which also
	// carries the ban and unban events. Required. Bans does not close it.
	Conn *nats.Conn
	// Bucket is the KV bucket. Empty means DefaultBanBucket. Every node
	// of a cluster must use the same bucket.
	Bucket string
	// Prefix is the subject prefix of ban events. Empty means
	// DefaultPrefix.
	Prefix string
	// NodeID names this node in bans it sets. Empty means the host name.
	NodeID string
	// Replicas is the bucket's replication factor. Zero means 1.
	Replicas int
	// Storage is file (the zero value) or memory storage.
	Storage jetstream.StorageType
	// MarkerTTL is how long the bucket keeps the marker that records a
	// lifted or expired ban, so that watchers that reconnect see it. At
	// least one second; zero means one minute.
	MarkerTTL time.Duration
	// UseExisting opens the bucket without creating it or changing its
	// configuration (replicas, storage, marker TTL): a tool that is not a
	// node sets it, so that it never recreates a bucket with other
	// settings. NewBans then fails, wrapping jetstream.ErrBucketNotFound,
	// if the bucket does not exist, and MarkerTTL, Replicas and Storage
	// are ignored, the bucket's own marker TTL applying.
	UseExisting bool
	// NoEvents turns off the ban and unban events.
	NoEvents bool
	// SweepInterval is how often expired bans are dropped from the local
	// cache and a lost watch is restarted. Zero means 30 seconds.
	SweepInterval time.Duration
	// Now returns the current time. Nil means time.Now.
	Now func() time.Time
}

func (c *BansConfig) setDefaults() error {
	if c.Conn == nil {
		return invalidConfig("Conn", nil, "is required")
	}
	if err := ValidatePrefix(c.Prefix); err != nil {
		return err
	}
	switch {
	case c.Replicas < 0:
		return invalidConfig("Replicas", c.Replicas, "must not be negative (0 means 1)")
	case c.MarkerTTL < 0 || (c.MarkerTTL > 0 && c.MarkerTTL < time.Second):
		return invalidConfig("MarkerTTL", c.MarkerTTL, "must be at least 1s (0 means 1m)")
	case c.SweepInterval < 0:
		return invalidConfig("SweepInterval", c.SweepInterval, "must not be negative (0 means 30s)")
	}
	if c.Bucket == "" {
		c.Bucket = DefaultBanBucket
	}
	if !safeToken(c.Bucket) {
		return invalidConfig("Bucket", c.Bucket, "must be made of letters, digits, '-' and '_'")
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.MarkerTTL == 0 {
		c.MarkerTTL = time.Minute
	}
	if c.SweepInterval == 0 {
		c.SweepInterval = 30 * time.Second
	}
	if c.NodeID == "" {
		c.NodeID = defaultNode()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// MaxBanDuration is the longest ban that keeps its end. A longer duration
// is stored as a ban until lifted: the server computes a key's expiry in
// nanoseconds since 1970, which overflows for TTLs of about 2,060,000 hours
// from 2026 and would make the key expire at once. A century is far
// inside that limit and far beyond any ban with a meaningful end.
const MaxBanDuration = 100 * 365 * 24 * time.Hour

// Ban is one ban, as stored in the bucket.
type Ban struct {
	// Client is the banned client ID.
	Client string `json:"client"`
	// Reason is why the client is banned.
	Reason string `json:"reason"`
	// Since is when the ban was set.
	Since time.Time `json:"since"`
	// Until is when the ban ends; zero means until lifted.
	Until time.Time `json:"until,omitzero"`
	// Node is the node that set the ban.
	Node string `json:"node"`
	// Auto reports whether an AutoBan policy set the ban.
	Auto bool `json:"auto,omitempty"`
}

// banRecord is the JSON value of a bucket entry.
type banRecord struct {
	V int `json:"v"`
	Ban
}

// banEntry is the local state of one key. A lifted ban stays as a
// tombstone for a while, so that an older update still in flight cannot
// bring it back.
type banEntry struct {
	ban     Ban
	rev     uint64
	lifted  bool
	touched time.Time
}

// notice is what the watch goroutine last told the callbacks about a key.
type notice struct {
	rev    uint64
	client string
	live   bool
	until  time.Time
}

// Bans is the cluster-wide ban list: a JetStream KV bucket with a TTL per
// key, and a local cache that a KV watch keeps up to date on every node.
//
// BannedUntil answers from the cache, with no I/O, so Bans implements
// limiter.Gate: with limiter.Config{Gate: bans} a banned client's
// connections are denied with reason banned. A ban set on one node is in
// every node's cache as soon as the watch delivers it, within milliseconds
// on a healthy cluster. Each key expires on the server at the end of its
// ban; the cache also compares Until with its own clock, so nodes' clocks
// should agree to well within a second.
//
// A ban that ends by its TTL, or whose key is deleted from the bucket by
// another tool, is reported by one unban event cluster-wide, with reason
// "expired" (or "removed"): every node that sees the key's delete marker
// tries to create the claim key "unban.<clientToken>.<markerRevision>" in
// the bucket, and only the node whose create succeeds publishes the event.
// A ban lifted by Unban carries its node's mark in the purge marker, and
// that node publishes the event itself.
//
// One goroutine per Bans applies the watch. Bans is safe for concurrent
// use; Close is idempotent.
type Bans struct {
	cfg      BansConfig
	js       jetstream.JetStream
	kv       jetstream.KeyValue
	nc       *nats.Conn
	subj     string // "$KV.<bucket>."
	subjects Subjects
	ids      *idGen

	mu       sync.RWMutex
	byClient map[string]*banEntry
	byToken  map[string]string

	lmu       sync.Mutex
	listeners map[int]listener
	nextID    int

	invalid   atomic.Uint64
	claimWon  atomic.Uint64
	claimLost atomic.Uint64
	claims    sync.WaitGroup
	claimSem  chan struct{} // bounds the claims in flight (maxClaims)

	watchCtx    context.Context
	cancelWatch context.CancelFunc
	notices     map[string]notice // watch goroutine only

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

type listener struct {
	onBan   func(Ban)
	onUnban func(string)
}

var _ limiter.Gate = (*Bans)(nil)

// NewBans creates or updates the ban bucket, loads the bans in force and
// starts watching the bucket. It returns once the cache holds every ban
// in the bucket, or ErrNotReady if ctx ends first.
func NewBans(ctx context.Context, cfg BansConfig) (*Bans, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	js, err := jetstream.New(cfg.Conn)
	if err != nil {
		return nil, fmt.Errorf("events: jetstream: %w", err)
	}
	var kv jetstream.KeyValue
	if cfg.UseExisting {
		kv, err = js.KeyValue(ctx, cfg.Bucket)
		if err == nil {
			err = cfg.useBucketMarkerTTL(ctx, kv)
		}
	} else {
		kv, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:         cfg.Bucket,
			Description:    "RateThrottle bans",
			History:        1,
			Replicas:       cfg.Replicas,
			Storage:        cfg.Storage,
			LimitMarkerTTL: cfg.MarkerTTL,
		})
	}
	if err != nil {
		return nil, fmt.Errorf("events: ban bucket %q: %w", cfg.Bucket, err)
	}
	b := &Bans{
		cfg:       cfg,
		js:        js,
		kv:        kv,
		nc:        cfg.Conn,
		subj:      "$KV." + cfg.Bucket + ".",
		subjects:  Subjects{Prefix: cfg.Prefix},
		ids:       newIDGen(),
		claimSem:  make(chan struct{}, maxClaims),
		byClient:  make(map[string]*banEntry),
		byToken:   make(map[string]string),
		listeners: make(map[int]listener),
		notices:   make(map[string]notice),
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
	}
	// The watch lives as long as the Bans: its context is not ctx, which
	// bounds only the start.
	b.watchCtx, b.cancelWatch = context.WithCancel(context.Background())
	w, err := kv.WatchAll(b.watchCtx)
	if err != nil {
		b.cancelWatch()
		return nil, fmt.Errorf("events: watch ban bucket: %w", err)
	}
	if err := b.load(ctx, w); err != nil {
		kvwatch.Stop(w, 2*time.Second)
		b.cancelWatch()
		return nil, err
	}
	go b.run(w)
	return b, nil
}

// useBucketMarkerTTL sets MarkerTTL to the existing bucket's.
func (c *BansConfig) useBucketMarkerTTL(ctx context.Context, kv jetstream.KeyValue) error {
	st, err := kv.Status(ctx)
	if err != nil {
		return err
	}
	if ttl := st.LimitMarkerTTL(); ttl >= time.Second {
		c.MarkerTTL = ttl
	}
	return nil
}

// load applies the watch's initial values, without callbacks.
func (b *Bans) load(ctx context.Context, w jetstream.KeyWatcher) error {
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", ErrNotReady, ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return ErrNotReady
			}
			if e == nil {
				return nil
			}
			b.apply(e, false)
		}
	}
}

// Ban bans client for d, or until lifted if d is zero or longer than
// MaxBanDuration, on every node. A ban replaces any earlier ban of the
// client. The bucket entry expires on
// the server after d, rounded up to whole seconds (the unit of JetStream
// message TTLs); the cache ends the ban at exactly now+d. Unless NoEvents
// is set, a ban event is published on <prefix>.bans.<clientToken>.
func (b *Bans) Ban(ctx context.Context, client string, d time.Duration, reason string) error {
	return b.ban(ctx, client, d, reason, false, nil)
}

// ban sets a ban; auto bans carry the policy's figures in their event.
func (b *Bans) ban(ctx context.Context, client string, d time.Duration, reason string, auto bool, details *Event) error {
	if d < 0 {
		return fmt.Errorf("%w: %v", ErrInvalidDuration, d)
	}
	if b.closed() {
		return ErrClosed
	}
	if d > MaxBanDuration {
		d = 0
	}
	now := b.cfg.Now()
	ban := Ban{Client: client, Reason: reason, Since: now.UTC(), Node: b.cfg.NodeID, Auto: auto}
	if d > 0 {
		ban.Until = now.Add(d).UTC()
	}
	data, err := json.Marshal(banRecord{V: Version, Ban: ban})
	if err != nil {
		return fmt.Errorf("events: encode ban: %w", err)
	}
	token := subject.Token(client)
	var opts []jetstream.PublishOpt
	if d > 0 {
		opts = append(opts, jetstream.WithMsgTTL(ttlSeconds(d)))
	}
	ack, err := b.js.PublishMsg(ctx, &nats.Msg{Subject: b.subj + token, Data: data}, opts...)
	if err != nil {
		return fmt.Errorf("events: ban %q: %w", client, err)
	}
	b.store(token, &banEntry{ban: ban, rev: ack.Sequence, touched: now}, true)
	if !b.cfg.NoEvents {
		e := Event{Type: TypeBan, Reason: reason, Client: client, Time: now,
			RetryAfterMS: retryMS(d), Until: ban.Until, Metadata: map[string]string{"source": "manual"}}
		if auto {
			e.Metadata["source"] = "auto"
		}
		if details != nil {
			e.Limit, e.Observed = details.Limit, details.Observed
			if details.Metadata != nil {
				for k, v := range details.Metadata {
					e.Metadata[k] = v
				}
			}
		}
		b.publish(e)
	}
	return nil
}

// ttlSeconds rounds d up to whole seconds, at least one.
func ttlSeconds(d time.Duration) time.Duration {
	s := (d + time.Second - 1) / time.Second
	return max(s, 1) * time.Second
}

// Unban lifts client's ban on every node. Lifting a client that is not
// banned is harmless. Unless NoEvents is set, an unban event is published.
func (b *Bans) Unban(ctx context.Context, client string) error {
	if b.closed() {
		return ErrClosed
	}
	token := subject.Token(client)
	m := nats.NewMsg(b.subj + token)
	m.Header.Set("KV-Operation", "PURGE")
	m.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	// The marker's body tells the other nodes that this one lifted the ban
	// and publishes its event; a marker without one is an expiry.
	m.Data, _ = json.Marshal(liftRecord{V: Version, Node: b.cfg.NodeID})
	ack, err := b.js.PublishMsg(ctx, m, jetstream.WithMsgTTL(b.cfg.MarkerTTL))
	if err != nil {
		return fmt.Errorf("events: unban %q: %w", client, err)
	}
	now := b.cfg.Now()
	b.store(token, &banEntry{ban: Ban{Client: client}, rev: ack.Sequence, lifted: true, touched: now}, true)
	if !b.cfg.NoEvents {
		b.publish(Event{Type: TypeUnban, Client: client, Time: now, Metadata: map[string]string{}})
	}
	return nil
}

// liftRecord is the body of the purge marker Unban writes.
type liftRecord struct {
	V    int    `json:"v"`
	Node string `json:"lifted_by"`
}

// BansStats counts what a Bans did.
type BansStats struct {
	// UnbanClaimsWon counts the ended bans this node published the unban
	// event of.
	UnbanClaimsWon uint64
	// UnbanClaimsLost counts the ended bans whose unban event this node
	// left to another node.
	UnbanClaimsLost uint64
	// Invalid counts bucket entries skipped because they did not decode as
	// bans.
	Invalid uint64
}

// Stats returns the Bans' counters.
func (b *Bans) Stats() BansStats {
	return BansStats{
		UnbanClaimsWon:  b.claimWon.Load(),
		UnbanClaimsLost: b.claimLost.Load(),
		Invalid:         b.invalid.Load(),
	}
}

// maxClaims bounds the unban claims in flight: when many bans end at once,
// the watch waits for a free place rather than starting a goroutine and a
// KV write for each.
const maxClaims = 16

// claimPrefix starts the keys of unban claims. A client token never holds
// a dot, so these keys cannot be bans.
const claimPrefix = "unban."

// claimUnban publishes the unban event of a ban that ended without Unban,
// if this node is the first to claim it. It runs on its own goroutine, so
// that the watch goes on, with at most maxClaims in flight.
func (b *Bans) claimUnban(token string, rev uint64, n notice) {
	if b.cfg.NoEvents {
		return
	}
	now := b.cfg.Now()
	e := Event{Type: TypeUnban, Client: n.client, Time: now, Until: n.until, Reason: "removed", Metadata: map[string]string{"source": "store"}}
	// The server removes a key at or after its TTL; allow for clocks two
	// seconds apart.
	if !n.until.IsZero() && !now.Before(n.until.Add(-2*time.Second)) {
		e.Reason, e.Metadata["source"] = "expired", "ttl"
	}
	key := claimPrefix + token + "." + strconv.FormatUint(rev, 10)
	select {
	case b.claimSem <- struct{}{}:
	case <-b.watchCtx.Done():
		return
	}
	b.claims.Add(1)
	go func() {
		defer b.claims.Done()
		defer func() { <-b.claimSem }()
		ctx, cancel := context.WithTimeout(b.watchCtx, 5*time.Second)
		defer cancel()
		// The claim outlives the marker, so that a watch restarted while
		// the marker is still there finds the claim taken.
		_, err := b.kv.Create(ctx, key, []byte(b.cfg.NodeID), jetstream.KeyTTL(2*b.cfg.MarkerTTL))
		if err != nil {
			b.claimLost.Add(1)
			return
		}
		b.publish(e)
		b.claimWon.Add(1)
	}()
}

// publish sends a ban or unban event. Ban and Unban do I/O anyway, so it
// publishes directly rather than through a Publisher's queue.
func (b *Bans) publish(e Event) {
	e.V, e.ID, e.Node = Version, b.ids.next(), b.cfg.NodeID
	data, err := Encode(e)
	if err != nil {
		return
	}
	_ = b.nc.Publish(b.subjects.Event(&e), data)
}

// store applies an entry to the cache if it is newer than what the cache
// holds for its key. A lift from the watch does not know its client (the
// key is a token); clientKnown is false then, and a lift of a key the
// cache never held is ignored.
func (b *Bans) store(token string, e *banEntry, clientKnown bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	client, known := b.byToken[token]
	if known {
		if old := b.byClient[client]; old != nil && old.rev >= e.rev {
			return
		}
		if !clientKnown {
			e.ban.Client = client
		} else if client != e.ban.Client {
			// Two IDs with one hashed token: the newer entry wins the key.
			delete(b.byClient, client)
		}
	} else if !clientKnown {
		return
	}
	b.byToken[token] = e.ban.Client
	b.byClient[e.ban.Client] = e
}

// BannedUntil implements limiter.Gate: it reports whether client is banned
// at now and until when (zero until lifted). It does no I/O.
func (b *Bans) BannedUntil(client string, now time.Time) (time.Time, bool) {
	b.mu.RLock()
	e := b.byClient[client]
	var ban Ban
	var live bool
	if e != nil && !e.lifted {
		ban, live = e.ban, true
	}
	b.mu.RUnlock()
	if !live || (!ban.Until.IsZero() && !now.Before(ban.Until)) {
		return time.Time{}, false
	}
	return ban.Until, true
}

// List returns the bans in force now, in no particular order.
func (b *Bans) List() []Ban {
	now := b.cfg.Now()
	b.mu.RLock()
	defer b.mu.RUnlock()
	var out []Ban
	for _, e := range b.byClient {
		if !e.lifted && (e.ban.Until.IsZero() || now.Before(e.ban.Until)) {
			out = append(out, e.ban)
		}
	}
	return out
}

// Notify adds callbacks, either of which may be nil, and returns a
// function that removes them. An application that holds connections, such
// as a WebSocket handler, uses it to close a banned client's connections.
//
// onBan is called on every node, this one included, for each ban set
// after Notify returns. onUnban is called on every node when a ban is
// lifted or expires, with the client ID; the unban event, by contrast, is
// published once per ended ban cluster-wide (see Bans). Both run on the
// watch goroutine and must return quickly.
func (b *Bans) Notify(onBan func(Ban), onUnban func(client string)) (cancel func()) {
	b.lmu.Lock()
	id := b.nextID
	b.nextID++
	b.listeners[id] = listener{onBan, onUnban}
	b.lmu.Unlock()
	return func() {
		b.lmu.Lock()
		delete(b.listeners, id)
		b.lmu.Unlock()
	}
}

// Close stops the watch. It is idempotent. The bans stay in the bucket.
func (b *Bans) Close() error {
	b.closeOnce.Do(func() {
		close(b.stop)
		<-b.done
		b.claims.Wait()
	})
	return nil
}

func (b *Bans) closed() bool {
	select {
	case <-b.stop:
		return true
	default:
		return false
	}
}

// retryWatch is how soon a lost watch is restarted.
const retryWatch = time.Second

// run applies the watch, sweeps the cache and restarts a lost watch until
// Close.
func (b *Bans) run(w jetstream.KeyWatcher) {
	defer close(b.done)
	sweep := time.NewTicker(b.cfg.SweepInterval)
	defer sweep.Stop()
	retry := time.NewTimer(retryWatch)
	defer retry.Stop()
	for {
		var updates <-chan jetstream.KeyValueEntry
		if w != nil {
			updates = w.Updates()
		}
		select {
		case <-b.stop:
			if w != nil {
				kvwatch.Stop(w, 2*time.Second)
			}
			b.cancelWatch()
			return
		case e, ok := <-updates:
			switch {
			case !ok:
				w = nil
				retry.Reset(retryWatch)
			case e != nil:
				b.apply(e, true)
			}
		case <-retry.C:
			if w == nil {
				nw, err := b.kv.WatchAll(b.watchCtx)
				if err == nil {
					w = nw
				} else {
					retry.Reset(retryWatch)
				}
			}
		case <-sweep.C:
			b.sweep(b.cfg.Now())
		}
	}
}

// apply applies one watched entry and, if notify is set, calls the
// listeners for a new ban or a lifted one.
func (b *Bans) apply(kve jetstream.KeyValueEntry, notify bool) {
	token, rev := kve.Key(), kve.Revision()
	if strings.Contains(token, ".") {
		return // an unban claim
	}
	now := b.cfg.Now()
	var ban Ban
	live := kve.Operation() == jetstream.KeyValuePut
	if live {
		var rec banRecord
		if err := json.Unmarshal(kve.Value(), &rec); err != nil || rec.V != Version || subject.Token(rec.Client) != token {
			b.invalid.Add(1)
			return
		}
		ban = rec.Ban
		b.store(token, &banEntry{ban: ban, rev: rev, touched: now}, true)
	} else {
		b.store(token, &banEntry{rev: rev, lifted: true, touched: now}, false)
	}
	n := b.notices[token]
	if rev <= n.rev {
		return
	}
	b.notices[token] = notice{rev: rev, client: ban.Client, live: live, until: ban.Until}
	if !notify {
		return
	}
	switch {
	case live && (ban.Until.IsZero() || now.Before(ban.Until)):
		b.each(func(l listener) {
			if l.onBan != nil {
				l.onBan(ban)
			}
		})
	case !live && n.live:
		b.notices[token] = notice{rev: rev, client: n.client}
		if len(kve.Value()) == 0 {
			b.claimUnban(token, rev, n)
		}
		b.each(func(l listener) {
			if l.onUnban != nil {
				l.onUnban(n.client)
			}
		})
	}
}

func (b *Bans) each(fn func(listener)) {
	b.lmu.Lock()
	ls := make([]listener, 0, len(b.listeners))
	for _, l := range b.listeners {
		ls = append(ls, l)
	}
	b.lmu.Unlock()
	for _, l := range ls {
		fn(l)
	}
}

// tombstoneAge is how long a lifted ban is remembered.
const tombstoneAge = 10 * time.Minute

// sweep drops expired bans and old tombstones from the cache.
func (b *Bans) sweep(now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for client, e := range b.byClient {
		expired := !e.lifted && !e.ban.Until.IsZero() && !now.Before(e.ban.Until.Add(tombstoneAge))
		if expired || (e.lifted && now.Sub(e.touched) > tombstoneAge) {
			delete(b.byClient, client)
			delete(b.byToken, subject.Token(client))
		}
	}
	for token, n := range b.notices {
		if !n.live {
			if _, ok := b.byToken[token]; !ok {
				delete(b.notices, token)
			}
		}
	}
}
