package policy

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ratethrottle/ratethrottle/internal/kvwatch"
)

// WatcherConfig configures a Watcher. Store.Conn is required; zero fields
// get defaults.
type WatcherConfig struct {
	// Store locates the document (bucket, key, connection).
	Store StoreConfig
	// Fallback is the policy in force until the cluster's can be read, and
	// while the cluster holds none: the node's file policy. Nil means the
	// empty document, which limits nothing.
	Fallback *Document
	// Seed writes Fallback to the key when the cluster holds no document
	// yet, so that the first node to start publishes its file policy.
	Seed bool
	// OnChange, if set, is called on the Watcher's goroutine with every new
	// version it applies, the first one read from the cluster included. A
	// panic in it is recovered and counted (WatcherStats.Panics).
	OnChange func(*Version)
	// RetryInterval is the pause between attempts to reach the bucket, and
	// how often the connection is checked for a reconnect after which the
	// watch is set up again. Zero means 250 ms.
	RetryInterval time.Duration
	// ResyncInterval is how often the key is read again besides the watch,
	// as a safety net for updates a broken watch missed. Zero means 5 s.
	ResyncInterval time.Duration
}

// Watcher keeps the cluster's current policy: it starts from the fallback,
// switches to the cluster's document as soon as it can read it, and then
// applies every new valid revision as the KV watch delivers it. Invalid
// revisions (written around Store.Put by another tool) are skipped and
// counted; a deleted key keeps the version in force.
//
// Current is safe for concurrent use and allocates nothing; Close stops
// the goroutine and is idempotent.
type Watcher struct {
	cfg     WatcherConfig
	cur     atomic.Pointer[Version]
	store   atomic.Pointer[Store]
	invalid atomic.Uint64
	applied atomic.Uint64
	panics  atomic.Uint64

	ctx       context.Context
	cancel    context.CancelFunc
	done      chan struct{}
	closeOnce sync.Once
}

// NewWatcher validates the fallback, starts watching and returns at once:
// Current is the fallback until the cluster's document is read. An invalid
// cfg is refused with a *limiter.FieldError that unwraps to
// ErrInvalidConfig; an invalid fallback with its *ValidationError.
func NewWatcher(cfg WatcherConfig) (*Watcher, error) {
	if err := cfg.Store.setDefaults(); err != nil {
		return nil, err
	}
	if cfg.Fallback == nil {
		cfg.Fallback = &Document{}
	}
	tab, err := Compile(cfg.Fallback)
	if err != nil {
		return nil, err
	}
	switch {
	case cfg.RetryInterval < 0:
		return nil, invalidConfig("RetryInterval", cfg.RetryInterval, "must not be negative")
	case cfg.ResyncInterval < 0:
		return nil, invalidConfig("ResyncInterval", cfg.ResyncInterval, "must not be negative")
	}
	if cfg.RetryInterval == 0 {
		cfg.RetryInterval = 250 * time.Millisecond
	}
	if cfg.ResyncInterval == 0 {
		cfg.ResyncInterval = 5 * time.Second
	}
	w := &Watcher{cfg: cfg, done: make(chan struct{})}
	w.cur.Store(&Version{Document: cfg.Fallback, Table: tab})
	w.ctx, w.cancel = context.WithCancel(context.Background())
	go w.run()
	return w, nil
}

// Current returns the version in force. Its Revision is 0 while it is the
// fallback.
func (w *Watcher) Current() *Version { return w.cur.Load() }

// Store returns the Store once the bucket has been reached, else nil; an
// admin API writes through it.
func (w *Watcher) Store() *Store { return w.store.Load() }

// WatcherStats counts what a Watcher did.
type WatcherStats struct {
	// Applied counts the cluster versions applied.
	Applied uint64
	// Invalid counts the invalid revisions skipped.
	Invalid uint64
	// Panics counts the panics recovered from OnChange.
	Panics uint64
}

// Stats returns the Watcher's counters.
func (w *Watcher) Stats() WatcherStats {
	return WatcherStats{Applied: w.applied.Load(), Invalid: w.invalid.Load(), Panics: w.panics.Load()}
}

// Close stops the Watcher and waits for its goroutine. It is idempotent.
func (w *Watcher) Close() error {
	w.closeOnce.Do(w.cancel)
	<-w.done
	return nil
}

func (w *Watcher) run() {
	defer close(w.done)
	for w.ctx.Err() == nil {
		s := w.store.Load()
		if s == nil {
			var err error
			if s, err = NewStore(w.ctx, w.cfg.Store); err != nil {
				w.pause(w.cfg.RetryInterval)
				continue
			}
			w.store.Store(s)
		}
		if w.cfg.Seed {
			if _, err := s.Get(w.ctx); errors.Is(err, ErrNotFound) {
				_, _ = s.Put(w.ctx, w.cfg.Fallback, 0, "seed: node "+w.cfg.Store.NodeID)
			}
		}
		if !w.watch(s) {
			w.pause(w.cfg.RetryInterval)
		}
	}
}

// watch applies updates until the watch breaks, the connection
// reconnects (it reports true: watch again at once) or the Watcher closes.
func (w *Watcher) watch(s *Store) (again bool) {
	kw, err := s.kv.Watch(w.ctx, s.cfg.Key)
	if err != nil {
		return false
	}
	defer kvwatch.Stop(kw, s.cfg.Timeout)
	tick := time.NewTicker(w.cfg.ResyncInterval)
	defer tick.Stop()
	// A watch does not always survive its server's restart: after every
	// reconnect of the connection it is set up again, and the new watch
	// delivers the latest revision first.
	reconnects := s.cfg.Conn.Stats().Reconnects
	check := time.NewTicker(w.cfg.RetryInterval)
	defer check.Stop()
	for {
		select {
		case <-w.ctx.Done():
			return false
		case <-check.C:
			if s.cfg.Conn.Stats().Reconnects != reconnects {
				return true
			}
		case <-tick.C:
			if v, err := s.Get(w.ctx); err == nil {
				w.apply(v)
			}
		case e, ok := <-kw.Updates():
			if !ok {
				return false
			}
			if e == nil {
				continue // the initial value, if any, has been delivered
			}
			v := decodeEntry(e)
			switch {
			case errors.Is(v.Err, ErrNotFound):
				// a deletion: the version in force stays
			case v.Err != nil:
				w.invalid.Add(1)
			default:
				w.apply(v)
			}
		}
	}
}

// apply makes v current if it is newer than the version in force.
func (w *Watcher) apply(v *Version) {
	if v.Revision <= w.cur.Load().Revision {
		return
	}
	w.cur.Store(v)
	w.applied.Add(1)
	if w.cfg.OnChange != nil {
		w.notify(v)
	}
}

// notify calls OnChange; a panic in it is recovered and counted, so that
// one bad callback does not stop the policy from following the cluster.
func (w *Watcher) notify(v *Version) {
	defer func() {
		if recover() != nil {
			w.panics.Add(1)
		}
	}()
	w.cfg.OnChange(v)
}

func (w *Watcher) pause(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-w.ctx.Done():
	case <-t.C:
	}
}
