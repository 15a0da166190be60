package events

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

// KindViolations is the limiter.Kind of the buckets that AutoBan counts
// violations in, one per client.
const KindViolations limiter.Kind = "violations"

// AutoBanConfig configures an AutoBan. Zero fields get defaults, except
// the required Bans, Threshold and Window.
type AutoBanConfig struct {
	// Bans sets the bans. Required.
	Bans *Bans
	// Store counts violations. Give it the limiter's own store (a cluster
	// store counts cluster-wide). Nil means a MemoryStore of the AutoBan's
	// own, which counts on this node only.
	Store limiter.Store
	// Threshold is the number of violations that triggers a ban. Required.
	Threshold int64
	// Window is the time in which Threshold violations trigger a ban.
	// Required.
	Window time.Duration
	// Duration is how long an automatic ban lasts. Zero means 10 minutes;
	// longer than MaxBanDuration means until lifted.
	Duration time.Duration
	// Types are the violation types that count. Empty means every type
	// except banned and store_unavailable, which are not the client's
	// doing.
	Types []limiter.ViolationType
	// Reason is the reason recorded with each ban. Empty means
	// "auto-ban: <Threshold> violations within <Window>".
	Reason string
	// QueueSize is the number of bans that may wait to be written. Zero
	// means 1024.
	QueueSize int
	// Timeout bounds each write of a ban. Zero means 5 seconds.
	Timeout time.Duration
	// Now returns the current time for violations that carry none. Nil
	// means time.Now.
	Now func() time.Time
}

func (c *AutoBanConfig) setDefaults() error {
	switch {
	case c.Bans == nil:
		return invalidConfig("Bans", nil, "is required")
	case c.Threshold <= 0:
		return invalidConfig("Threshold", c.Threshold, "must be positive")
	case c.Window <= 0:
		return invalidConfig("Window", c.Window, "must be positive")
	case c.Duration < 0:
		return invalidConfig("Duration", c.Duration, "must not be negative (0 means 10m)")
	case c.QueueSize < 0:
		return invalidConfig("QueueSize", c.QueueSize, "must not be negative (0 means 1024)")
	case c.Timeout < 0:
		return invalidConfig("Timeout", c.Timeout, "must not be negative (0 means 5s)")
	}
	if c.Duration == 0 {
		c.Duration = 10 * time.Minute
	}
	if len(c.Types) == 0 {
		for _, t := range types {
			if t.IsViolation() && t != TypeBanned && t != TypeStoreUnavailable {
				c.Types = append(c.Types, limiter.ViolationType(t))
			}
		}
	}
	if c.Reason == "" {
		c.Reason = fmt.Sprintf("auto-ban: %d violations within %v", c.Threshold, c.Window)
	}
	if c.QueueSize == 0 {
		c.QueueSize = 1024
	}
	if c.Timeout == 0 {
		c.Timeout = 5 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// AutoBanStats counts what an AutoBan did.
type AutoBanStats struct {
	// Triggered counts clients that reached the threshold.
	Triggered uint64
	// Banned counts bans written.
	Banned uint64
	// Failed counts bans that could not be written; the client's next
	// violation tries again.
	Failed uint64
	// Dropped counts bans refused because the queue was full.
	Dropped uint64
}

// AutoBan is the automatic ban policy: a client with Threshold violations
// within Window is banned for Duration on every node, and a ban event
// records it. It implements limiter.ViolationSink; combine it with a
// Publisher through Sinks.
//
// Violations are counted in a token bucket per client, kept in Store
// under KindViolations: Threshold tokens refilling over Window, with a
// burst of Threshold. Each counted violation takes a token and the one that
// takes the last whole token (or finds none) triggers the ban. So
// Threshold violations in quick succession trigger it, as does a
// sustained rate above Threshold per Window once the burst is spent; a
// client with fewer than Threshold violations in every Window is never
// banned. A client already banned is not counted, and a ban refills the
// client's bucket, so after the ban it takes Threshold new violations to
// ban again.
//
// HandleViolation does no I/O beyond the Store's Take: the ban is written
// by the AutoBan's one goroutine. AutoBan is safe for concurrent use;
// Close is idempotent.
type AutoBan struct {
	cfg   AutoBanConfig
	spec  limiter.Spec
	store limiter.Store
	own   *limiter.MemoryStore

	mu      sync.Mutex
	pending map[string]bool
	w       *worker[banRequest]

	closed    atomic.Bool
	triggered atomic.Uint64
	banned    atomic.Uint64
	failed    atomic.Uint64
	dropped   atomic.Uint64

	closeOnce sync.Once
}

type banRequest struct {
	client   string
	now      time.Time
	observed int64
}

var _ limiter.ViolationSink = (*AutoBan)(nil)

// NewAutoBan returns a running AutoBan, or an error naming the invalid
// field of cfg.
func NewAutoBan(cfg AutoBanConfig) (*AutoBan, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	a := &AutoBan{
		cfg:     cfg,
		spec:    limiter.Spec{Limit: cfg.Threshold, Per: cfg.Window, Burst: cfg.Threshold},
		store:   cfg.Store,
		pending: make(map[string]bool),
	}
	if a.store == nil {
		a.own = limiter.NewMemoryStore(limiter.MemoryStoreConfig{Now: cfg.Now})
		a.store = a.own
	}
	a.w = startWorker(cfg.QueueSize, a.ban)
	return a, nil
}

// HandleViolation counts v and, at the threshold, queues a ban of its
// client. It never blocks on the network.
func (a *AutoBan) HandleViolation(v limiter.Violation) {
	if a.closed.Load() || !slices.Contains(a.cfg.Types, v.Type) {
		return
	}
	now := v.Time
	if now.IsZero() {
		now = a.cfg.Now()
	}
	if _, banned := a.cfg.Bans.BannedUntil(v.ClientID, now); banned {
		return
	}
	r, err := a.store.Take(context.Background(), a.key(v.ClientID), a.spec, now, 1)
	if err != nil || (r.OK && r.Remaining > 0) {
		return
	}
	observed := a.cfg.Threshold - r.Remaining
	if !r.OK {
		observed++
	}
	a.mu.Lock()
	if a.pending[v.ClientID] {
		a.mu.Unlock()
		return
	}
	a.pending[v.ClientID] = true
	a.mu.Unlock()
	a.triggered.Add(1)
	if !a.w.offer(banRequest{client: v.ClientID, now: now, observed: observed}) {
		a.dropped.Add(1)
		a.release(v.ClientID)
	}
}

func (a *AutoBan) key(client string) limiter.Key {
	return limiter.Key{Kind: KindViolations, ID: client}
}

func (a *AutoBan) release(client string) {
	a.mu.Lock()
	delete(a.pending, client)
	a.mu.Unlock()
}

// Stats returns the AutoBan's counters.
func (a *AutoBan) Stats() AutoBanStats {
	return AutoBanStats{
		Triggered: a.triggered.Load(),
		Banned:    a.banned.Load(),
		Failed:    a.failed.Load(),
		Dropped:   a.dropped.Load(),
	}
}

// Close stops the AutoBan after writing the bans already queued, and
// closes its own store. It is idempotent.
func (a *AutoBan) Close() error {
	a.closeOnce.Do(func() {
		a.closed.Store(true)
		a.w.close()
		if a.own != nil {
			_ = a.own.Close()
		}
	})
	return nil
}

// ban writes one automatic ban and refills the client's bucket.
func (a *AutoBan) ban(r banRequest) {
	defer a.release(r.client)
	ctx, cancel := context.WithTimeout(context.Background(), a.cfg.Timeout)
	defer cancel()
	details := &Event{Limit: a.cfg.Threshold, Observed: r.observed,
		Metadata: map[string]string{"window": a.cfg.Window.String()}}
	if err := a.cfg.Bans.ban(ctx, r.client, a.cfg.Duration, a.cfg.Reason, true, details); err != nil {
		a.failed.Add(1)
		return
	}
	a.banned.Add(1)
	_ = a.store.Refund(ctx, a.key(r.client), a.spec, r.now, a.cfg.Threshold)
}
