package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"

	"github.com/ratethrottle/ratethrottle/pkg/events"
	"github.com/ratethrottle/ratethrottle/pkg/kvstore"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
	"github.com/ratethrottle/ratethrottle/pkg/policy"
	"github.com/ratethrottle/ratethrottle/pkg/wshandler"
)

// stack is the part of a node that needs NATS and JetStream: the cluster
// stores, the ban list, the event publisher, the limiter and the WebSocket
// handler.
type stack struct {
	store     *kvstore.Store
	roomStore *kvstore.Store
	bans      *events.Bans
	pub       *events.Publisher
	autoban   *events.AutoBan
	lim       *limiter.Limiter
	handler   *wshandler.Handler
	statsSub  *nats.Subscription
	leaveSub  *nats.Subscription
	eventsSub *events.Subscription
	unnotify  func()
	counter   *violationCounter
	policy    *policy.Watcher
}

// newStack builds the stack. On error it closes what it built.
func newStack(ctx context.Context, n *node) (_ *stack, err error) {
	cfg := n.cfg
	s := &stack{}
	defer func() {
		if err != nil {
			s.close(context.Background(), n.log)
		}
	}()
	opCtx, cancel := context.WithTimeout(ctx, stackOpTimeout)
	defer cancel()
	def, modes := cfg.Modes()
	kc := kvstore.Config{
		Conn:         n.nc,
		Bucket:       cfg.KVBucket,
		NodeID:       n.id,
		DefaultMode:  def,
		Modes:        modes,
		SyncInterval: cfg.SyncInterval,
		FailMode:     cfg.FailMode,
		Replicas:     cfg.Replicas(),
	}
	if s.store, err = kvstore.New(opCtx, kc); err != nil {
		return nil, fmt.Errorf("kv bucket %q: %w", cfg.KVBucket, err)
	}
	kc.Bucket = cfg.KVBucket + "_rooms"
	if s.roomStore, err = kvstore.New(opCtx, kc); err != nil {
		return nil, fmt.Errorf("kv bucket %q: %w", kc.Bucket, err)
	}
	if s.bans, err = events.NewBans(opCtx, events.BansConfig{
		Conn:     n.nc,
		Bucket:   cfg.KVBucket + "_bans",
		Prefix:   cfg.EventPrefix,
		NodeID:   n.id,
		Replicas: cfg.Replicas(),
	}); err != nil {
		return nil, fmt.Errorf("ban bucket: %w", err)
	}
	if s.pub, err = events.NewPublisher(events.PublisherConfig{Conn: n.nc, Prefix: cfg.EventPrefix, NodeID: n.id}); err != nil {
		return nil, err
	}
	s.counter = newViolationCounter()
	sinks := []limiter.ViolationSink{s.counter, s.pub}
	if cfg.AutoBanThreshold > 0 {
		if s.autoban, err = events.NewAutoBan(events.AutoBanConfig{
			Bans:      s.bans,
			Store:     s.store,
			Threshold: cfg.AutoBanThreshold,
			Window:    cfg.AutoBanWindow,
			Duration:  cfg.AutoBanDuration,
		}); err != nil {
			return nil, err
		}
		sinks = append(sinks, s.autoban)
	}
	sink := limiter.Sinks(sinks...)
	start, err := policy.Compile(cfg.fallbackPolicy())
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err) // validated when loaded
	}
	base, tiers := tableLimits(start, cfg.startScope())
	if s.lim, err = limiter.New(limiter.Config{
		Limits: base,
		Tiers:  tiers,
		Store:  s.store,
		Slots:  s.store,
		Gate:   s.bans,
		Sink:   sink,
	}); err != nil {
		return nil, err
	}
	rooms := &liveRooms{log: n.log}
	if s.policy, err = n.watchPolicy(s.lim, rooms); err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	broker, err := wshandler.NewNATSBroker(wshandler.NATSBrokerConfig{Conn: n.nc, Prefix: cfg.EventPrefix, NodeID: n.id})
	if err != nil {
		return nil, err
	}
	hc := wshandler.Config{
		Limiter:         s.lim,
		TrustedProxies:  cfg.TrustedProxies,
		IPv6PrefixLen:   cfg.IPv6PrefixLen,
		RejectWithClose: cfg.RejectWithClose,
		MaxDenials:      cfg.MaxDenials,
		RoomSlots:       s.roomStore,
		Broker:          broker,
		NodeID:          n.id,
	}
	// The room rules of the policy the node starts with; rooms.attach
	// then applies the cluster's version, and every later one.
	hc.Rooms, hc.RoomPatterns, hc.DefaultRoom = handlerRooms(start)
	if n.ident != nil {
		hc.KeyFunc = clientKey(n.addrKey)
		hc.Metadata = connMetadata
	}
	if s.policy != nil {
		// The policy's message classes, live: a new version applies to
		// the next frame.
		hc.Policy = s.policy
	}
	if s.handler, err = wshandler.New(hc); err != nil {
		return nil, err
	}
	h := s.handler
	rooms.attach(h)
	s.unnotify = s.bans.Notify(func(b events.Ban) {
		if k := h.CloseClient(b.Client, websocket.ClosePolicyViolation, string(limiter.ReasonBanned)); k > 0 {
			n.log.Info("closed banned client's connections", "client", b.Client, "connections", k)
		}
	}, nil)
	if s.leaveSub, err = n.serveLeaveNotices(); err != nil {
		return nil, err
	}
	if s.statsSub, err = n.serveStatsRequests(s); err != nil {
		return nil, err
	}
	if s.eventsSub, err = events.Subscribe(context.Background(), n.nc, events.Filter{Prefix: cfg.EventPrefix}, n.recent.add); err != nil {
		return nil, err
	}
	return s, nil
}

// close releases the stack in dependency order. It tolerates a partly
// built stack.
func (s *stack) close(ctx context.Context, log *slog.Logger) {
	if s.policy != nil {
		_ = s.policy.Close()
	}
	if s.handler != nil {
		if err := s.handler.Shutdown(ctx); err != nil {
			log.Warn("websocket shutdown", "err", err)
		}
	}
	for _, sub := range []*nats.Subscription{s.statsSub, s.leaveSub} {
		if sub != nil {
			_ = sub.Unsubscribe()
		}
	}
	if s.eventsSub != nil {
		_ = s.eventsSub.Close()
	}
	if s.unnotify != nil {
		s.unnotify()
	}
	if s.autoban != nil {
		_ = s.autoban.Close()
	}
	if s.lim != nil {
		_ = s.lim.Close()
	}
	if s.pub != nil {
		if err := s.pub.Close(); err != nil {
			log.Warn("event flush", "err", err)
		}
	}
	if s.bans != nil {
		_ = s.bans.Close()
	}
	for _, st := range []*kvstore.Store{s.roomStore, s.store} {
		if st != nil {
			if err := st.Close(); err != nil {
				log.Warn("kv flush", "err", err)
			}
		}
	}
}

// stackOpTimeout bounds the KV operations of one attempt to build the
// stack. An attempt that times out is retried, and creating a bucket is
// idempotent, so a short bound costs nothing but a retry; a long one made
// a node that raced the others to create a bucket wait it out (see
// bringUp).
const stackOpTimeout = 2 * time.Second
