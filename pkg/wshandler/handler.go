package wshandler

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
	"github.com/ratethrottle/ratethrottle/pkg/policy"
)

// Handler is the WebSocket endpoint: an http.Handler that admits, upgrades
// and serves connections under a Limiter. Create it with New, mount it on a
// mux, and call Shutdown before the Limiter and the Broker's NATS
// connection are closed.
//
// A Handler is safe for concurrent use.
type Handler struct {
	cfg    Config
	lim    *limiter.Limiter
	gate   limiter.Gate // lim's, consulted on every message
	ownLim bool
	up     *websocket.Upgrader

	ctx    context.Context // store and broker calls; canceled by Shutdown at its end
	cancel context.CancelFunc

	seq atomic.Uint64
	hub hub

	roomRulesMu sync.Mutex // serializes SetRoomLimits
	classSync   classSync  // the shared class buckets across policy changes

	mu       sync.Mutex // guards the fields below
	closed   bool
	conns    map[*Conn]struct{}
	byClient map[string]map[*Conn]struct{}
	wg       sync.WaitGroup // open connections

	overflows     atomic.Int64
	denials       atomic.Int64
	rejected      atomic.Int64
	publishErrors atomic.Int64
	remoteDropped atomic.Int64
	shutdownMu    sync.Mutex
}

// New returns a Handler for cfg, or an error naming the first invalid field.
func New(cfg Config) (*Handler, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	h := &Handler{
		cfg:      cfg,
		lim:      cfg.Limiter,
		up:       cfg.Upgrader,
		conns:    make(map[*Conn]struct{}),
		byClient: make(map[string]map[*Conn]struct{}),
		hub:      hub{rooms: make(map[string]*room), table: newRoomTable(cfg.Rooms, cfg.RoomPatterns, cfg.DefaultRoom)},
	}
	if h.lim == nil {
		h.lim, err = limiter.New(limiter.Config{Limits: limiter.DefaultLimits(), Now: cfg.Now})
		if err != nil {
			return nil, err
		}
		h.ownLim = true
	}
	h.gate = h.lim.Gate()
	if h.cfg.Now == nil {
		h.cfg.Now = h.lim.Now
	}
	if h.up == nil {
		// Buffers for writes come from a pool shared by every connection
		// and go back after each message, so an idle connection holds no
		// write buffer; reads reuse the buffer net/http has already.
		h.up = &websocket.Upgrader{WriteBufferPool: writeBuffers}
	}
	h.ctx, h.cancel = context.WithCancel(context.Background())
	return h, nil
}

// Limiter returns the Limiter the Handler applies.
func (h *Handler) Limiter() *limiter.Limiter { return h.lim }

// ServeHTTP admits and upgrades one WebSocket connection, then returns: the
// connection is served on a goroutine of its own until it ends, and
// Shutdown waits for it. Returning frees what net/http holds for the
// request (its goroutine's stack, the request and its contexts) for the
// connection's whole life.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	closed := h.closed
	h.mu.Unlock()
	if closed {
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	if !websocket.IsWebSocketUpgrade(r) {
		http.Error(w, "websocket upgrade required", http.StatusUpgradeRequired)
		return
	}
	client, err := h.cfg.KeyFunc(r)
	if err == nil {
		err = checkClientID(client)
	}
	if err != nil {
		if errors.Is(err, ErrUnauthenticated) {
			h.rejected.Add(1)
			h.refuse(w, r, http.StatusUnauthorized, errorInfo{code: CodeUnauthenticated})
			return
		}
		http.Error(w, "cannot identify client", http.StatusBadRequest)
		return
	}
	var meta map[string]string
	if h.cfg.Metadata != nil {
		meta = h.cfg.Metadata(r)
	}
	id := h.cfg.NodeID + "-" + strconv.FormatUint(h.seq.Add(1), 36)
	d, err := h.lim.Connect(h.ctx, id, client, meta)
	if err != nil {
		http.Error(w, "unavailable", http.StatusServiceUnavailable)
		return
	}
	if !d.Allowed {
		h.rejected.Add(1)
		h.reject(w, r, d)
		return
	}
	var pv *policy.Version
	if h.cfg.Policy != nil {
		pv = h.cfg.Policy.Current()
	}
	limit := h.readLimit(id, meta, pv)
	sw := &scanWriter{ResponseWriter: w, limit: limit}
	ws, err := h.up.Upgrade(sw, r, nil)
	if err != nil {
		// The upgrader has answered the request.
		_ = h.lim.UnregisterConnection(h.ctx, id)
		return
	}
	c := &Conn{
		h: h, ws: ws, sc: sw.conn, id: id, client: client, meta: meta, user: meta[MetaUser],
		idJSON: appendJSONString(nil, id),
		limit:  limit, pv: pv,
		closing: make(chan struct{}),
		dead:    make(chan struct{}),
		rooms:   make(map[string]membership),
	}
	if !h.track(c) {
		_ = ws.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(websocket.CloseGoingAway, "server shutting down"),
			time.Now().Add(h.cfg.WriteTimeout))
		_ = ws.Close()
		_ = h.lim.UnregisterConnection(h.ctx, id)
		return
	}
	go c.serve()
}

// readLimit returns the read limit of connection id: the max_message_size
// of its tier (meta's limiter.MetaTier) in the policy version pv when that
// sets one, else the MaxMessageSize the Limiter applies to it (its tier's,
// when the Limiter has tiers). Zero means none.
func (h *Handler) readLimit(id string, meta map[string]string, pv *policy.Version) int64 {
	if pv != nil && pv.Table != nil {
		if m := pv.Table.Tier(meta[limiter.MetaTier]).Limits.MaxMessageSize; m > 0 {
			return m
		}
	}
	if l, ok := h.lim.ConnectionLimits(id); ok {
		return l.MaxMessageSize
	}
	return h.lim.Limits().MaxMessageSize
}

// reject answers a connection refused by the Limiter: 403 for a ban, 503
// when the store is unavailable, 429 with Retry-After otherwise (see
// refuse).
func (h *Handler) reject(w http.ResponseWriter, r *http.Request, d limiter.Decision) {
	status := http.StatusTooManyRequests
	switch d.Reason {
	case limiter.ReasonBanned:
		status = http.StatusForbidden
	case limiter.ReasonStoreUnavailable:
		status = http.StatusServiceUnavailable
	}
	h.refuse(w, r, status, errorFromDecision(d))
}

// refuse answers a refused request with status and the JSON error frame of
// e as the body (with Retry-After when e has a wait); or, with
// RejectWithClose, an upgrade, the error frame (with retry_after_ms, which
// a close reason has no room for) and a 1008 close carrying the code.
func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, status int, e errorInfo) {
	body := append(appendErrorFrame(nil, e), '\n')
	if h.cfg.RejectWithClose {
		ws, err := h.up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		deadline := time.Now().Add(h.cfg.WriteTimeout)
		_ = ws.SetWriteDeadline(deadline)
		_ = ws.WriteMessage(websocket.TextMessage, body)
		_ = ws.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(websocket.ClosePolicyViolation, string(e.code)),
			deadline)
		_ = ws.Close()
		return
	}
	hdr := w.Header()
	hdr.Set("Content-Type", "application/json")
	hdr.Set("Cache-Control", "no-store")
	if s := retrySeconds(e.retry); s > 0 {
		hdr.Set("Retry-After", strconv.FormatInt(s, 10))
	}
	if status == http.StatusUnauthorized {
		hdr.Set("WWW-Authenticate", "Bearer")
	}
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// retrySeconds rounds d up to whole seconds; 0 when d is unknown or Never.
func retrySeconds(d time.Duration) int64 {
	if d <= 0 || d == limiter.Never {
		return 0
	}
	return int64((d + time.Second - 1) / time.Second)
}

// track records an open connection; false once Shutdown has begun.
func (h *Handler) track(c *Conn) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	h.wg.Add(1)
	h.conns[c] = struct{}{}
	set := h.byClient[c.client]
	if set == nil {
		set = make(map[*Conn]struct{})
		h.byClient[c.client] = set
	}
	set[c] = struct{}{}
	return true
}

func (h *Handler) untrack(c *Conn) {
	h.mu.Lock()
	delete(h.conns, c)
	if set := h.byClient[c.client]; set != nil {
		delete(set, c)
		if len(set) == 0 {
			delete(h.byClient, c.client)
		}
	}
	h.mu.Unlock()
	h.wg.Done()
}

// CloseClient closes every connection of client on this node with code and
// reason, and returns how many it closed. A ban list calls it to drop a
// banned client.
func (h *Handler) CloseClient(client string, code int, reason string) int {
	h.mu.Lock()
	conns := make([]*Conn, 0, len(h.byClient[client]))
	for c := range h.byClient[client] {
		conns = append(conns, c)
	}
	h.mu.Unlock()
	for _, c := range conns {
		c.Close(code, reason)
	}
	return len(conns)
}

// Shutdown refuses new connections, closes every open one with 1001 after
// flushing what is queued for it, and waits until they have ended and are
// unregistered from the Limiter, then flushes the Broker. If ctx ends first,
// the remaining connections are dropped without waiting for their close
// handshake, and ctx's error is returned once they have ended. Shutdown is
// idempotent; later calls return nil at once.
func (h *Handler) Shutdown(ctx context.Context) error {
	h.shutdownMu.Lock()
	defer h.shutdownMu.Unlock()
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	conns := make([]*Conn, 0, len(h.conns))
	for c := range h.conns {
		conns = append(conns, c)
	}
	h.mu.Unlock()

	for _, c := range conns {
		c.Close(websocket.CloseGoingAway, "server shutting down")
	}
	done := make(chan struct{})
	go func() {
		h.wg.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
		for _, c := range conns {
			c.abort()
		}
		<-done
	}
	if f, ok := h.cfg.Broker.(Flusher); ok && h.cfg.Broker != nil {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.cfg.WriteTimeout)
		if ferr := f.Flush(fctx); ferr != nil && err == nil && !errors.Is(ferr, context.Canceled) {
			err = ferr
		}
		cancel()
	}
	h.cancel()
	if h.ownLim {
		_ = h.lim.Close()
	}
	return err
}

// violate reports a violation of the handler's own layers through the
// Limiter (Limiter.Report): counted in its Statistics.Denied and delivered
// to its Sink, a panic there counted in its Statistics.ViolationPanics.
func (h *Handler) violate(v limiter.Violation) { h.lim.Report(v) }

// Stats are a Handler's counters.
type Stats struct {
	// Connections is the number of open connections.
	Connections int
	// Rooms is the number of rooms with members on this node.
	Rooms int
	// Rejected counts connections refused at admission.
	Rejected int64
	// Denials counts denied frames (every error frame).
	Denials int64
	// Overflows counts connections aborted for a full send queue.
	Overflows int64
	// PublishErrors counts room messages the Broker failed to publish.
	PublishErrors int64
	// RemoteDropped counts room frames from the Broker (other nodes, or
	// any publisher on a room subject) dropped undelivered because they
	// are not valid UTF-8.
	RemoteDropped int64
}

// Stats returns the Handler's counters.
func (h *Handler) Stats() Stats {
	h.mu.Lock()
	n := len(h.conns)
	h.mu.Unlock()
	h.hub.mu.Lock()
	rooms := len(h.hub.rooms)
	h.hub.mu.Unlock()
	return Stats{Connections: n, Rooms: rooms, Rejected: h.rejected.Load(), Denials: h.denials.Load(),
		Overflows: h.overflows.Load(), PublishErrors: h.publishErrors.Load(), RemoteDropped: h.remoteDropped.Load()}
}

// writeBuffers is the write buffer pool of the default Upgrader.
var writeBuffers = &sync.Pool{}
