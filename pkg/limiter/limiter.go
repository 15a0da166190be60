package limiter

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Config configures a Limiter. Zero fields get defaults.
type Config struct {
	// Limits are the limits to apply. The zero Limits limits nothing; use
	// DefaultLimits or a preset for the usual values.
	Limits Limits
	// Store keeps the buckets whose scope spans connections. Nil means a
	// new MemoryStore, which the Limiter closes on Close.
	Store Store
	// Slots counts concurrent connections per client. Nil means Store if it
	// implements Slots, else the Limiter's own MemoryStore.
	Slots Slots
	// Gate, if set, is consulted before every connection (bans). Layers
	// above the Limiter (pkg/wshandler) take it from Gate, so that it is
	// configured once.
	Gate Gate
	// Sink, if set, receives every violation on the deciding goroutine:
	// the Limiter's own and those the layers above it deliver through
	// Report. A panic in it is recovered and counted
	// (Statistics.ViolationPanics). ViolationFunc adapts a function.
	Sink ViolationSink
	// Now returns the current time. Nil means time.Now.
	Now func() time.Time
	// Tiers are named limits for connections whose metadata names the
	// tier (MetaTier); see SetTierLimits.
	Tiers map[string]Limits
	// UncertainWait bounds how long a connection waits, instead of being
	// refused, when its connection-rate check is denied only because
	// other nodes' allowances hold the tokens (Result.Uncertain: a
	// cluster store whose other node spent alone until it hears of this
	// node's demand and releases them at its next flush). The check is
	// taken again every UncertainStep until it is allowed, certainly
	// denied, or UncertainWait has passed. Zero means
	// DefaultUncertainWait; negative never waits.
	UncertainWait time.Duration
}

// DefaultUncertainWait is the default of Config.UncertainWait: a few sync
// intervals of the cluster store's default (50 ms), a short delay of the
// handshake where a refusal would be wrong.
const DefaultUncertainWait = 250 * time.Millisecond

// UncertainStep is how often a connection waiting out an uncertain denial
// (Config.UncertainWait) takes its check again.
const UncertainStep = 25 * time.Millisecond

// Limiter applies Limits to WebSocket connections and their messages: the
// connection rate and concurrent connections per client when a connection
// opens, and the message size, message rate and bandwidth on every message.
//
// A Limiter is safe for concurrent use. CheckMessage allocates nothing.
type Limiter struct {
	live   atomic.Pointer[liveLimits] // the limits in force; SetLimits swaps it
	liveMu sync.Mutex                 // serialises SetLimits

	store   Store
	slots   Slots
	gate    Gate
	sink    ViolationSink
	now     func() time.Time
	own     *MemoryStore // closed by Close, nil if the caller gave both stores
	reg     *registry
	closed  atomic.Bool
	panics  atomic.Int64
	denied  [numReasons]atomic.Int64
	retired struct{ msgs, bytes atomic.Int64 }
	sleep   func(ctx context.Context, d time.Duration) error // Wait's pause; nil means a timer
	// uncertainWait is Config.UncertainWait resolved: 0 never waits.
	uncertainWait time.Duration
}

// New returns a Limiter for cfg, or an error if cfg.Limits is invalid.
func New(cfg Config) (*Limiter, error) {
	lv, err := newTieredLimits(cfg.Limits, cfg.Tiers)
	if err != nil {
		return nil, err
	}
	l := &Limiter{
		store: cfg.Store,
		slots: cfg.Slots,
		gate:  cfg.Gate,
		sink:  cfg.Sink,
		now:   cfg.Now,
		reg:   newRegistry(),
	}
	switch {
	case cfg.UncertainWait == 0:
		l.uncertainWait = DefaultUncertainWait
	case cfg.UncertainWait > 0:
		l.uncertainWait = cfg.UncertainWait
	}
	l.live.Store(lv)
	if l.now == nil {
		l.now = time.Now
	}
	if l.slots == nil {
		if s, ok := l.store.(Slots); ok {
			l.slots = s
		}
	}
	if l.store == nil || l.slots == nil {
		l.own = NewMemoryStore(MemoryStoreConfig{Now: l.now})
		if l.store == nil {
			l.store = l.own
		}
		if l.slots == nil {
			l.slots = l.own
		}
	}
	return l, nil
}

// Limits returns the base limits the Limiter applies now: those of every
// connection without a tier (see SetTierLimits).
func (l *Limiter) Limits() Limits { return l.live.Load().limits }

// Store returns the Store the Limiter uses, so that other layers (rooms)
// can keep their buckets in the same place.
func (l *Limiter) Store() Store { return l.store }

// Gate returns the Gate of the Limiter's Config, or nil: the ban list that
// layers above the Limiter consult on every message, as the Limiter does
// on every connection.
func (l *Limiter) Gate() Gate { return l.gate }

// Close releases the Limiter's own store. It is idempotent. After Close,
// CheckConnection, Connect and CheckMessage deny with store_unavailable
// (Connect also returns ErrClosed), and RegisterConnection returns
// ErrClosed.
func (l *Limiter) Close() error {
	if l.closed.Swap(true) {
		return nil
	}
	if l.own != nil {
		return l.own.Close()
	}
	return nil
}

// CheckConnection decides whether client may open a connection now. An
// allowed check takes a token from the client's connection-rate bucket;
// follow it with RegisterConnection. Connect does both in one step and is
// the right call when connections race. It applies the base limits: a
// tier is known from the metadata Connect and RegisterConnection take.
func (l *Limiter) CheckConnection(ctx context.Context, client string) Decision {
	if l.closed.Load() {
		return Decision{Reason: ReasonStoreUnavailable}
	}
	lv := l.live.Load()
	now := l.now()
	d, took := l.admit(ctx, lv, client, now)
	if !d.Allowed {
		return d
	}
	if max := lv.limits.MaxConcurrentConnections; max > 0 {
		n, err := l.slots.Count(ctx, client)
		if err != nil || n >= max {
			l.refundConnection(ctx, lv, client, now, took)
			if err != nil {
				return l.unavailable(client, "", now)
			}
			return l.tooMany(lv, client, n, now)
		}
		d.Limit, d.Remaining = max, max-n
	}
	return d
}

// RegisterConnection records an open connection of client with optional
// metadata, after an allowed CheckConnection. It takes a concurrent
// connection slot without checking the cap (the check has been done).
func (l *Limiter) RegisterConnection(ctx context.Context, connID, client string, meta map[string]string) error {
	if l.closed.Load() {
		return ErrClosed
	}
	slotted := l.live.Load().of(meta[MetaTier]).limits.MaxConcurrentConnections > 0
	if slotted {
		if _, _, err := l.slots.Acquire(ctx, client, 0); err != nil {
			return err
		}
	}
	if !l.register(connID, client, meta, slotted) {
		if slotted {
			_ = l.slots.Release(ctx, client)
		}
		return ErrDuplicateConnection
	}
	return nil
}

// Connect checks and registers a connection in one atomic step: the ban
// gate, the connection rate and the concurrent-connection cap, then the
// registration. N racing Connects for a client with a cap of M admit
// exactly M. A denied Connect consumes nothing. The error is ErrClosed or
// ErrDuplicateConnection; store failures are reported as a denial with
// ReasonStoreUnavailable.
func (l *Limiter) Connect(ctx context.Context, connID, client string, meta map[string]string) (Decision, error) {
	if l.closed.Load() {
		return Decision{Reason: ReasonStoreUnavailable}, ErrClosed
	}
	lv := l.live.Load().of(meta[MetaTier])
	now := l.now()
	d, took := l.admit(ctx, lv, client, now)
	if !d.Allowed {
		return d, nil
	}
	max := lv.limits.MaxConcurrentConnections
	if max > 0 {
		n, ok, err := l.slots.Acquire(ctx, client, max)
		if err != nil || !ok {
			l.refundConnection(ctx, lv, client, now, took)
			if err != nil {
				return l.unavailable(client, "", now), nil
			}
			return l.tooMany(lv, client, n, now), nil
		}
		d.Limit, d.Remaining = max, max-n
	}
	if !l.register(connID, client, meta, max > 0) {
		if max > 0 {
			_ = l.slots.Release(ctx, client)
		}
		l.refundConnection(ctx, lv, client, now, took)
		return Decision{}, ErrDuplicateConnection
	}
	return d, nil
}

// admit runs the checks every connection passes: the gate and the
// connection rate. took reports whether a rate token was taken.
func (l *Limiter) admit(ctx context.Context, lv *liveLimits, client string, now time.Time) (d Decision, took bool) {
	if l.gate != nil {
		if until, banned := l.gate.BannedUntil(client, now); banned {
			d = Decision{Reason: ReasonBanned}
			if !until.IsZero() {
				d.RetryAfter = max(until.Sub(now), 0)
			}
			l.violate(Violation{Type: ViolationBanned, Reason: ReasonBanned, Time: now, ClientID: client, RetryAfter: d.RetryAfter})
			return d, false
		}
	}
	if lv.connSpec.Unlimited() {
		return allow(0, 0), false
	}
	key := Key{Kind: KindConnectionRate, ID: client}
	r, err := l.store.Take(ctx, key, lv.connSpec, now, 1)
	// An uncertain denial: the tokens are there but other nodes hold
	// them until they hear of this demand; wait for their release.
	for waited := time.Duration(0); err == nil && !r.OK && r.Uncertain && waited < l.uncertainWait; waited += UncertainStep {
		if l.pause(ctx, UncertainStep) != nil {
			break
		}
		now = l.now()
		r, err = l.store.Take(ctx, key, lv.connSpec, now, 1)
	}
	if err != nil {
		return l.unavailable(client, "", now), false
	}
	if !r.OK {
		d = deny(ReasonConnectionRateExceeded, lv.connSpec.Limit, r)
		l.violate(Violation{Type: ViolationConnectionRate, Reason: d.Reason, Time: now, ClientID: client,
			Limit: d.Limit, Remaining: r.Remaining, RetryAfter: r.RetryAfter})
		return d, false
	}
	return allow(lv.connSpec.Limit, r.Remaining), true
}

func (l *Limiter) refundConnection(ctx context.Context, lv *liveLimits, client string, now time.Time, took bool) {
	if took {
		_ = l.store.Refund(ctx, Key{Kind: KindConnectionRate, ID: client}, lv.connSpec, now, 1)
	}
}

func (l *Limiter) tooMany(lv *liveLimits, client string, n int64, now time.Time) Decision {
	max := lv.limits.MaxConcurrentConnections
	l.violate(Violation{Type: ViolationConcurrentConnections, Reason: ReasonTooManyConnections, Time: now,
		ClientID: client, Limit: max, Current: n})
	return Decision{Reason: ReasonTooManyConnections, Limit: max}
}

func (l *Limiter) unavailable(client, connID string, now time.Time) Decision {
	l.violate(Violation{Type: ViolationStoreUnavailable, Reason: ReasonStoreUnavailable, Time: now,
		ClientID: client, ConnectionID: connID})
	return Decision{Reason: ReasonStoreUnavailable}
}

func (l *Limiter) register(connID, client string, meta map[string]string, slotted bool) bool {
	return l.reg.add(&conn{id: connID, client: client, connectedAt: l.now(), meta: meta, slotted: slotted, tier: meta[MetaTier]})
}

// UnregisterConnection forgets a connection and frees its concurrent slot.
// Unregistering an unknown connection is a harmless no-op.
func (l *Limiter) UnregisterConnection(ctx context.Context, connID string) error {
	c := l.reg.remove(connID)
	if c == nil {
		return nil
	}
	c.mu.Lock()
	l.retired.msgs.Add(c.count)
	l.retired.bytes.Add(c.nbytes)
	c.mu.Unlock()
	if c.slotted {
		return l.slots.Release(ctx, c.client)
	}
	return nil
}

// CheckMessage decides whether connection connID may send a message of
// size bytes, checking in order: the connection is known, the size, the
// message rate, the bandwidth. An allowed message is counted; a denied one
// consumes nothing. It allocates nothing. It is CheckMessageAt at the
// Limiter's clock's now.
func (l *Limiter) CheckMessage(ctx context.Context, connID string, size int) Decision {
	return l.CheckMessageAt(ctx, connID, size, l.now())
}

// Now returns the current time of the Limiter's clock (Config.Now), for a
// layer above the Limiter that decides at the same time as the Limiter's
// own checks.
func (l *Limiter) Now() time.Time { return l.now() }

// CheckMessageAt is CheckMessage at now, for a caller that has read the
// clock already and checks further layers of the same message at the same
// time (the WebSocket handler's rooms and classes): one clock read for
// them all. now should come from the Limiter's clock (Now): a time behind
// the buckets' last one takes from them as if at their last time.
func (l *Limiter) CheckMessageAt(ctx context.Context, connID string, size int, now time.Time) Decision {
	if l.closed.Load() {
		l.count(ReasonStoreUnavailable)
		return Decision{Reason: ReasonStoreUnavailable}
	}
	c := l.reg.get(connID)
	if c == nil {
		l.count(ReasonConnectionNotFound)
		return Decision{Reason: ReasonConnectionNotFound}
	}
	n := int64(size)
	lv := l.limitsOf(c)
	if max := lv.limits.MaxMessageSize; max > 0 && n > max {
		l.violate(Violation{Type: ViolationMessageSize, Reason: ReasonMessageTooLarge, Time: now, ClientID: c.client,
			ConnectionID: c.id, Size: n, Limit: max, Current: n, RetryAfter: Never, Metadata: c.meta})
		return Decision{Reason: ReasonMessageTooLarge, Limit: max, MaxSize: max, RetryAfter: Never}
	}
	var d Decision
	if lv.limits.MessageScope == PerClient {
		if d = l.takeShared(ctx, lv, c, n, now); d.Allowed {
			c.mu.Lock()
			c.record(n, now)
			c.mu.Unlock()
		}
	} else {
		d = l.takeOwn(lv, c, n, now) // records under the lock it holds anyway
	}
	if !d.Allowed {
		v := Violation{Type: ViolationMessageRate, Reason: d.Reason, Time: now, ClientID: c.client, ConnectionID: c.id,
			Size: n, Limit: d.Limit, Remaining: d.Remaining, RetryAfter: d.RetryAfter, Metadata: c.meta}
		switch d.Reason {
		case ReasonBandwidthExceeded:
			v.Type = ViolationBandwidth
		case ReasonStoreUnavailable:
			v.Type = ViolationStoreUnavailable
		}
		l.violate(v)
	}
	return d
}

// limitsOf returns the limits in force for c: the base limits without
// tiers, else its tier's, from the cache on c while the limits have not
// changed. Connections racing on a change each store a value of the
// live limits they read; a stale one is replaced at the next message.
func (l *Limiter) limitsOf(c *conn) *liveLimits {
	top := l.live.Load()
	if top.tiers == nil {
		return top
	}
	if lv := c.lv.Load(); lv != nil && lv.top == top {
		return lv
	}
	lv := top.of(c.tier)
	c.lv.Store(lv)
	return lv
}

// record counts an allowed message of n bytes. Requires c.mu held.
func (c *conn) record(n int64, now time.Time) {
	c.count++
	c.nbytes += n
	c.lastMsg = now
}

// takeOwn takes from the connection's own buckets, both under its lock,
// and records the message if it is allowed.
func (l *Limiter) takeOwn(lv *liveLimits, c *conn, n int64, now time.Time) Decision {
	c.mu.Lock()
	defer c.mu.Unlock()
	mr := c.msgs.TakeAt(lv.msgSpec, now, 1)
	if !mr.OK {
		return deny(ReasonRateLimitExceeded, lv.msgSpec.Limit, mr)
	}
	if br := c.bytes.TakeAt(lv.byteSpec, now, n); !br.OK {
		c.msgs.RefundAt(lv.msgSpec, now, 1)
		return deny(ReasonBandwidthExceeded, lv.byteSpec.Limit, br)
	}
	c.record(n, now)
	return allow(lv.msgSpec.Limit, mr.Remaining)
}

// takeShared takes from the client's buckets in the Store.
func (l *Limiter) takeShared(ctx context.Context, lv *liveLimits, c *conn, n int64, now time.Time) Decision {
	msgKey := Key{Kind: KindMessages, ID: c.client}
	var mr Result
	if !lv.msgSpec.Unlimited() {
		var err error
		if mr, err = l.store.Take(ctx, msgKey, lv.msgSpec, now, 1); err != nil {
			return Decision{Reason: ReasonStoreUnavailable}
		}
		if !mr.OK {
			return deny(ReasonRateLimitExceeded, lv.msgSpec.Limit, mr)
		}
	}
	if !lv.byteSpec.Unlimited() {
		br, err := l.store.Take(ctx, Key{Kind: KindBytes, ID: c.client}, lv.byteSpec, now, n)
		if err != nil || !br.OK {
			if !lv.msgSpec.Unlimited() {
				_ = l.store.Refund(ctx, msgKey, lv.msgSpec, now, 1)
			}
			if err != nil {
				return Decision{Reason: ReasonStoreUnavailable}
			}
			return deny(ReasonBandwidthExceeded, lv.byteSpec.Limit, br)
		}
	}
	return allow(lv.msgSpec.Limit, mr.Remaining)
}

// RefundMessage gives back what an allowed CheckMessage of size bytes took
// on connID, for a caller whose own later check (a room limit, say) denies
// the message: a denied message consumes nothing in any layer. The message
// is also removed from the connection's counts.
func (l *Limiter) RefundMessage(ctx context.Context, connID string, size int) {
	c := l.reg.get(connID)
	if c == nil {
		return
	}
	n := int64(size)
	now := l.now()
	lv := l.limitsOf(c)
	c.mu.Lock()
	if lv.limits.MessageScope == PerConnection {
		c.msgs.RefundAt(lv.msgSpec, now, 1)
		c.bytes.RefundAt(lv.byteSpec, now, n)
	}
	c.count--
	c.nbytes -= n
	c.mu.Unlock()
	if lv.limits.MessageScope == PerClient {
		if !lv.msgSpec.Unlimited() {
			_ = l.store.Refund(ctx, Key{Kind: KindMessages, ID: c.client}, lv.msgSpec, now, 1)
		}
		if !lv.byteSpec.Unlimited() {
			_ = l.store.Refund(ctx, Key{Kind: KindBytes, ID: c.client}, lv.byteSpec, now, n)
		}
	}
}

// violate counts the denial v describes and reports v.
func (l *Limiter) violate(v Violation) {
	l.count(v.Reason)
	report(l.sink, v, &l.panics)
}

// Report counts and delivers a violation that a layer above the Limiter
// decided (a room limit, a message class, a protocol check) exactly as the
// Limiter's own: v.Reason is counted in Statistics.Denied and v goes to
// the Config's Sink on the calling goroutine, a panic in it recovered and
// counted in Statistics.ViolationPanics. It allocates nothing beyond what
// the Sink does.
func (l *Limiter) Report(v Violation) { l.violate(v) }

// CountDenial counts a denial with reason r in Statistics.Denied without
// reporting a violation, for a layer above the Limiter that refuses a
// request without one. Use Report for a denial that is a violation.
func (l *Limiter) CountDenial(r Reason) { l.count(r) }

func (l *Limiter) count(r Reason) {
	if i := reasonIndex(r); i >= 0 {
		l.denied[i].Add(1)
	}
}
