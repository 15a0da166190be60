package kvstore

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

// Compile-time checks of the interfaces the Limiter uses.
var (
	_ limiter.Store = (*Store)(nil)
	_ limiter.Slots = (*Store)(nil)
)

const shards = 256

// cacheLine is the size the store pads its shards to, so that no two
// shards' locks share a cache line; TestShardLayout checks it.
const cacheLine = 64

// Store is a limiter.Store and limiter.Slots whose buckets and connection
// counts agree across every node that shares a JetStream KV bucket.
//
// Per limit kind it works in one of three modes (see Mode). In Global mode
// each node owns one KV entry per (bucket, node) holding its cumulative
// consumption, a grow-only counter: writes never conflict, and a reader
// applies only the growth it has not seen, so duplicates and reordering
// lose or double nothing. Take and Refund in Global and Local mode do no
// I/O and allocate nothing once a bucket exists.
//
// Concurrent connections are one entry per client ("c.<client>") holding
// each node's count, changed only by compare-and-swap, so the cap holds
// exactly (slots.go). Node heartbeats tell which counts count: liveness is
// judged by the NATS server's timestamps, never a node's clock (nodes.go);
// the counts of a node silent for DeadAfter heartbeats stop counting and
// are purged by the live nodes.
//
// A Store runs three goroutines (the sync loop, the KV watch and the
// Strict lease loop) and the sweeper of its local MemoryStore. It is safe
// for concurrent use; Close flushes, removes this node's entries and stops
// them, and is idempotent.
type Store struct {
	cfg     Config
	nc      *nats.Conn
	js      jetstream.JetStream
	kv      jetstream.KeyValue
	nodeTok string
	epoch   uint64
	now     func() time.Time
	local   *limiter.MemoryStore // Local mode, and Strict while NATS is down; sweeps itself

	seed   maphash.Seed
	gsh    [shards]gshard
	gen    atomic.Uint64 // advanced by every flush; allowances refresh on change
	index  indexMap
	strict strictCache
	ssh    [shards]slotShard

	down        atomic.Bool
	live        atomic.Int64 // live nodes including this one
	nodesMu     sync.RWMutex
	liveness    map[string]*nodeInfo // other nodes by token (nodes.go)
	lastRefresh atomic.Int64
	echoAt      atomic.Int64 // UnixNano at which the watch last delivered this node's own heartbeat
	echoCur     atomic.Int64 // server UnixNano of the own heartbeat the watch last delivered
	echoPrev    atomic.Int64 // the one before it
	inc         uint64       // incarnation: revision of this run's first heartbeat
	srvClock    serverClock  // the NATS server's clock as this node sees it (nodes.go)
	wd          watchdog     // acknowledged writes against what the watch delivers

	kick    chan struct{}
	rewatch chan struct{}
	stop    chan struct{}
	wg      sync.WaitGroup
	once    sync.Once

	stats stats
}

// New connects a Store to the KV bucket cfg.Bucket, creating it if need
// be, clears the entries a previous run under the same NodeID left, loads
// the current state and starts the sync loop and the watch.
func New(ctx context.Context, cfg Config) (*Store, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(cfg.Conn)
	if err != nil {
		return nil, fmt.Errorf("kvstore: jetstream: %w", err)
	}
	s := &Store{
		cfg:      cfg,
		nc:       cfg.Conn,
		js:       js,
		nodeTok:  token(cfg.NodeID),
		epoch:    rand.Uint64() | 1,
		now:      cfg.Now,
		local:    limiter.NewMemoryStore(limiter.MemoryStoreConfig{Now: cfg.Now, SweepInterval: cfg.SweepInterval}),
		seed:     maphash.MakeSeed(),
		liveness: make(map[string]*nodeInfo),
		kick:     make(chan struct{}, 1),
		rewatch:  make(chan struct{}, 1),
		stop:     make(chan struct{}),
	}
	s.echoAt.Store(s.now().UnixNano())
	s.live.Store(1)
	s.index.init()
	s.strict.m = make(map[string]*strictState)
	for i := range s.gsh {
		s.gsh[i].m = make(map[limiter.Key]*gentry)
	}
	for i := range s.ssh {
		s.ssh[i].init()
	}
	if err := s.setup(ctx); err != nil {
		s.local.Close()
		return nil, err
	}
	ready := make(chan struct{})
	s.wg.Add(3)
	go s.watchLoop(ready)
	go s.syncLoop()
	go s.leaseLoop()
	select {
	case <-ready:
	case <-ctx.Done():
		s.Close()
		return nil, fmt.Errorf("kvstore: initial state: %w", ctx.Err())
	}
	return s, nil
}

// setup creates or binds the bucket, clears this node's stale entries and
// writes its first heartbeat.
func (s *Store) setup(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 4*s.cfg.Timeout)
	defer cancel()
	kv, err := ensureBucket(ctx, s.js, s.cfg)
	if err != nil {
		return err
	}
	s.kv = kv
	lister, err := kv.ListKeysFiltered(ctx, connKey("*", s.nodeTok))
	if err != nil {
		return fmt.Errorf("kvstore: list own entries: %w", err)
	}
	var stale []string
	for k := range lister.Keys() {
		stale = append(stale, k)
	}
	for _, k := range stale {
		if err := kv.Delete(ctx, k); err != nil {
			return fmt.Errorf("kvstore: clear own entry: %w", err)
		}
	}
	rev, err := kv.Put(ctx, nodeKey(s.nodeTok), s.heartbeatValue())
	if err != nil {
		return fmt.Errorf("kvstore: heartbeat: %w", err)
	}
	s.inc = rev
	return nil
}

// ensureBucket creates the KV bucket or binds to an existing one.
func ensureBucket(ctx context.Context, js jetstream.JetStream, cfg Config) (jetstream.KeyValue, error) {
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      cfg.Bucket,
		Description: "RateThrottle cluster state",
		History:     1,
		TTL:         cfg.TTL,
		Storage:     cfg.Storage,
		Replicas:    cfg.Replicas,
	})
	if errors.Is(err, jetstream.ErrBucketExists) {
		kv, err = js.KeyValue(ctx, cfg.Bucket)
	}
	switch {
	case err == nil:
		return kv, nil
	case errors.Is(err, jetstream.ErrJetStreamNotEnabled), errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount),
		errors.Is(err, nats.ErrNoResponders), errors.Is(err, jetstream.ErrNoStreamResponse):
		return nil, fmt.Errorf("%w: %v", ErrJetStreamDisabled, err)
	}
	return nil, fmt.Errorf("kvstore: bucket %q: %w", cfg.Bucket, err)
}

// NodeID returns this node's ID.
func (s *Store) NodeID() string { return s.cfg.NodeID }

// Mode returns the mode of kind.
func (s *Store) Mode(kind limiter.Kind) Mode {
	if m, ok := s.cfg.Modes[kind]; ok {
		return m
	}
	return s.cfg.DefaultMode
}

// Take implements limiter.Store.
func (s *Store) Take(ctx context.Context, key limiter.Key, spec limiter.Spec, now time.Time, n int64) (limiter.Result, error) {
	if spec.Unlimited() {
		return limiter.Result{OK: true, Remaining: spec.Capacity()}, nil
	}
	switch s.Mode(key.Kind) {
	case Local:
		return s.local.TakeAt(key, spec, now, n), nil
	case Strict:
		return s.strictTake(ctx, key, spec, now, n)
	}
	return s.globalTake(key, spec, now, n)
}

// Refund implements limiter.Store.
func (s *Store) Refund(ctx context.Context, key limiter.Key, spec limiter.Spec, now time.Time, n int64) error {
	if spec.Unlimited() || n <= 0 {
		return nil
	}
	switch s.Mode(key.Kind) {
	case Local:
		return s.local.Refund(ctx, key, spec, now, n)
	case Strict:
		return s.strictRefund(ctx, key, spec, now, n)
	}
	s.globalRefund(key, spec, now, n)
	return nil
}

// Down reports whether the store is in its fail mode because NATS is
// unreachable.
func (s *Store) Down() bool { return s.down.Load() }

// LiveNodes returns the number of live nodes this node knows, itself
// included.
func (s *Store) LiveNodes() int { return int(s.live.Load()) }

// Flush sends this node's pending Global consumption now, as the sync loop
// does every SyncInterval.
func (s *Store) Flush(ctx context.Context) error { return s.flush(ctx, true) }

// Close flushes pending consumption, removes this node's connection counts
// and heartbeat, and stops the goroutines. It is idempotent; the Store
// keeps deciding locally after Close.
func (s *Store) Close() error {
	var err error
	s.once.Do(func() {
		close(s.stop)
		s.wg.Wait()
		if s.nc.IsConnected() {
			ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timeout)
			err = s.flush(ctx, true)
			s.removeOwn(ctx)
			cancel()
		}
		s.local.Close()
	})
	return err
}

func (s *Store) shardOf(k limiter.Key) *gshard {
	h := maphash.String(s.seed, k.ID)
	if k.Scope != "" {
		h ^= maphash.String(s.seed, k.Scope) * 31
	}
	return &s.gsh[h%shards]
}

func (s *Store) kickFlush() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// syncLoop flushes every SyncInterval (sooner when kicked), heartbeats,
// reclaims dead nodes, watches the connection and sweeps idle state.
func (s *Store) syncLoop() {
	defer s.wg.Done()
	tick := time.NewTicker(s.cfg.SyncInterval)
	defer tick.Stop()
	hb := time.NewTicker(s.cfg.HeartbeatInterval)
	defer hb.Stop()
	sweep := time.NewTicker(s.cfg.SweepInterval)
	defer sweep.Stop()
	minGap := s.cfg.SyncInterval / 2
	var last time.Time
	for {
		select {
		case <-s.stop:
			return
		case <-tick.C:
		case <-s.kick:
			if time.Since(last) < minGap {
				continue
			}
		case <-hb.C:
			s.checkConn()
			if !s.down.Load() {
				s.heartbeat()
			}
			continue
		case <-sweep.C:
			s.sweep(s.now())
			continue
		}
		last = time.Now()
		s.checkConn()
		if s.down.Load() {
			s.gen.Add(1)
			continue
		}
		// flush bounds each chunk by Timeout itself.
		if err := s.flush(context.Background(), false); err != nil {
			s.enterDown()
		}
	}
}

// checkConn updates the down flag from the connection state, and on
// recovery re-establishes the watch and rewrites what the outage held back.
func (s *Store) checkConn() {
	up := s.nc.IsConnected()
	if !up {
		s.enterDown()
		return
	}
	if !s.down.Load() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timeout)
	defer cancel()
	kv, err := ensureBucket(ctx, s.js, s.cfg)
	if err != nil {
		return
	}
	if _, err := kv.Put(ctx, nodeKey(s.nodeTok), s.heartbeatValue()); err != nil {
		return
	}
	s.down.Store(false)
	select {
	case s.rewatch <- struct{}{}:
	default:
	}
	s.flushStrictDebt(ctx)
	s.flushSlots(ctx, true)
}

func (s *Store) enterDown() {
	if !s.down.Swap(true) {
		s.stats.failModeEntries.Add(1)
	}
}

// sweep drops Global entries that are full, clean and quiet, and Strict
// cache entries that are full.
func (s *Store) sweep(now time.Time) {
	t := now.UnixNano()
	quiet := t - int64(10*s.cfg.SyncInterval)
	for i := range s.gsh {
		sh := &s.gsh[i]
		var drop []*gentry
		sh.mu.Lock()
		for k, e := range sh.m {
			if !e.dirty && e.b.FullAt(e.spec).UnixNano() <= t && e.touched < quiet && !s.holding(e, t) {
				delete(sh.m, k)
				e.dead = true
				drop = append(drop, e)
			}
		}
		sh.mu.Unlock()
		if len(drop) > 0 {
			s.index.mu.Lock()
			for _, e := range drop {
				if s.index.m[e.base] == e {
					delete(s.index.m, e.base)
				}
			}
			s.index.mu.Unlock()
		}
	}
	s.strict.sweep(t)
}

// Stats is a snapshot of a Store's counters, for metrics.
type Stats struct {
	// Flushes counts the Global batches sent.
	Flushes int64
	// KVWrites counts entries written to KV (counters, CAS updates,
	// connection counts, heartbeats).
	KVWrites int64
	// WriteErrors counts failed KV writes.
	WriteErrors int64
	// Conflicts counts lost compare-and-swaps (Strict buckets, connection
	// counts).
	Conflicts int64
	// Retries counts Strict decisions retried after a conflict.
	Retries int64
	// RemoteUpdates counts other nodes' counter updates applied.
	RemoteUpdates int64
	// SyncLag is the lag of the last remote update applied: from the other
	// node's write to its application here.
	SyncLag time.Duration
	// FailModeEntries counts the times the store entered its fail mode.
	FailModeEntries int64
	// Reclaimed counts connection-count entries of dead nodes purged.
	Reclaimed int64
	// WatchRestarts counts the KV watches restarted because they stopped
	// delivering this node's own heartbeats.
	WatchRestarts int64
	// Down reports whether the store is in its fail mode now.
	Down bool
	// LiveNodes is the number of live nodes, this one included.
	LiveNodes int
	// CounterWrites counts Global counters written (part of KVWrites).
	CounterWrites int64
	// WatchMessages counts the updates the KV watch delivered: every
	// node's counters, connection counts and heartbeats, this node's own
	// included.
	WatchMessages int64
	// Buckets is the number of Global buckets this node holds state for.
	Buckets int
}

type stats struct {
	flushes, kvWrites, writeErrors, conflicts, retries atomic.Int64
	remoteUpdates, syncLag, failModeEntries, reclaimed atomic.Int64
	watchRestarts                                      atomic.Int64
	counterWrites, watchMessages                       atomic.Int64
}

// Stats returns a snapshot of the store's counters.
func (s *Store) Stats() Stats {
	return Stats{
		Flushes:         s.stats.flushes.Load(),
		KVWrites:        s.stats.kvWrites.Load(),
		WriteErrors:     s.stats.writeErrors.Load(),
		Conflicts:       s.stats.conflicts.Load(),
		Retries:         s.stats.retries.Load(),
		RemoteUpdates:   s.stats.remoteUpdates.Load(),
		SyncLag:         time.Duration(s.stats.syncLag.Load()),
		FailModeEntries: s.stats.failModeEntries.Load(),
		Reclaimed:       s.stats.reclaimed.Load(),
		WatchRestarts:   s.stats.watchRestarts.Load(),
		Down:            s.down.Load(),
		LiveNodes:       int(s.live.Load()),
		CounterWrites:   s.stats.counterWrites.Load(),
		WatchMessages:   s.stats.watchMessages.Load(),
		Buckets:         s.buckets(),
	}
}

// Tokens returns the tokens this node sees in the bucket key at now,
// negative in debt; a bucket it does not hold is full. For Strict buckets
// it is the last state this node wrote or read. A bucket held under
// another Spec is seen rescaled to spec, as its next Take will rescale it.
func (s *Store) Tokens(key limiter.Key, spec limiter.Spec, now time.Time) float64 {
	switch s.Mode(key.Kind) {
	case Local:
		return s.local.Tokens(key, spec, now)
	case Strict:
		if _, v, ok := s.strict.get(strictKey(key)); ok {
			now = s.serverTime(now)
			b, _, _ := v.bucketUnder(spec, now)
			return b.TokensAt(spec, now)
		}
		return float64(spec.Capacity())
	}
	sh := s.shardOf(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if e := sh.m[key]; e != nil {
		if e.spec != spec && !spec.Unlimited() {
			// Held under another Spec: its next Take rescales it.
			b := limiter.RescaleBucket(e.b, e.spec, spec, now)
			return b.TokensAt(spec, now)
		}
		return e.b.TokensAt(spec, now)
	}
	return float64(spec.Capacity())
}
