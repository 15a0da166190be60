package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"

	"github.com/ratethrottle/ratethrottle/pkg/limiter"
	"github.com/ratethrottle/ratethrottle/pkg/policy"
	"github.com/ratethrottle/ratethrottle/pkg/wshandler"
)

// policySection is the YAML key of the node's policy document.
const policySection = "policy"

// roomsKey is the YAML key of the deprecated room rules, and the key of the
// policy's rooms section.
const roomsKey = "rooms"

// policyBucketSuffix names the KV bucket of the cluster's policy after the
// node's kv.bucket.
const policyBucketSuffix = "_policy"

// resolveRooms checks the deprecated room rules and gives them to a policy
// without a rooms section. A policy that has one and rules set explicitly
// at once are refused: the node would have to pick one silently.
func (c *Config) resolveRooms(src func(key string) string) error {
	if err := (&policy.Document{Rooms: c.Rooms}).Validate(); err != nil {
		return configError(roomsKey, src(roomsKey), nil, policyReason("", err))
	}
	if c.Policy == nil {
		return nil // fallbackPolicy carries them
	}
	if len(c.Policy.Rooms) > 0 {
		if src(roomsKey) != "" {
			return configError(roomsKey, src(roomsKey), nil, "the policy has a rooms section; write every room rule there (the rooms setting is deprecated)")
		}
		return nil
	}
	doc := *c.Policy
	doc.Rooms = c.Rooms
	c.Policy = &doc
	return nil
}

// resolvePolicy reads PolicyFile into Policy, refusing both at once.
func (c *Config) resolvePolicy(bad func(key, value, reason string) error) error {
	if c.PolicyFile == "" {
		return nil
	}
	if c.Policy != nil {
		return bad("policy_file", c.PolicyFile, "set either the policy section or policy_file, not both")
	}
	doc, err := policy.ParseFile(c.PolicyFile)
	if err != nil {
		return bad("policy_file", c.PolicyFile, policyReason("", err))
	}
	c.Policy = doc
	return nil
}

// policyReason lists a policy error's problems with their paths, each
// prefixed with prefix, so that a problem in the node's policy section
// reads "policy.tiers.pro.limits.messages_per_minute = -1: ...".
func policyReason(prefix string, err error) string {
	var ve *policy.ValidationError
	if !errors.As(err, &ve) {
		return err.Error()
	}
	s := make([]string, len(ve.Problems))
	for i, p := range ve.Problems {
		q := *p
		q.Field = prefix + p.Field
		s[i] = q.Problem()
	}
	return strings.Join(s, "; ")
}

// tableLimits returns the base limits (the default tier's) and every
// tier's limits of t, each with the message scope scope: the scope is
// fixed at start-up.
func tableLimits(t *policy.Table, scope limiter.Scope) (limiter.Limits, map[string]limiter.Limits) {
	base := t.Tier("").Limits
	base.MessageScope = scope
	var tiers map[string]limiter.Limits
	for _, name := range t.TierNames() {
		if tiers == nil {
			tiers = map[string]limiter.Limits{}
		}
		l := t.Tier(name).Limits
		l.MessageScope = scope
		tiers[name] = l
	}
	return base, tiers
}

// startScope is the message scope the node starts with, for good: the
// configured policy's, else limits.message_scope.
func (c *Config) startScope() limiter.Scope {
	if c.Policy != nil && c.Policy.Limits.MessageScope != "" {
		return c.Policy.Limits.Limiter().MessageScope
	}
	return c.MessageScope
}

// tierLimits returns the limits a connection of tier gets under the
// policy in force.
func (n *node) tierLimits(tier string) limiter.Limits {
	if s := n.stack.Load(); s != nil {
		return s.policy.Current().Table.Tier(tier).Limits
	}
	t, err := policy.Compile(n.cfg.fallbackPolicy())
	if err != nil {
		return n.cfg.Limits()
	}
	return t.Tier(tier).Limits
}

// fallbackPolicy is the policy in force until the cluster's is read: the
// configured one, else a document holding the node's limits.
func (c *Config) fallbackPolicy() *policy.Document {
	if c.Policy != nil {
		return c.Policy
	}
	return &policy.Document{Limits: policy.LimitsOf(c.Limits()), Rooms: c.Rooms}
}

// handlerRooms returns the room limits of t's room rules in the handler's
// form: exact names, patterns in the order Table.Room tries them (the
// handler takes the first match) and the "*" rule.
func handlerRooms(t *policy.Table) (map[string]wshandler.RoomLimits, []wshandler.RoomPattern, wshandler.RoomLimits) {
	exact := map[string]wshandler.RoomLimits{}
	var patterns []wshandler.RoomPattern
	var def wshandler.RoomLimits
	for _, rr := range t.RoomRules() {
		l := roomLimits(rr.Room)
		switch {
		case rr.Pattern == "*":
			def = l
		case strings.Contains(rr.Pattern, "*"):
			patterns = append(patterns, wshandler.RoomPattern{Pattern: rr.Pattern, Limits: l})
		default:
			exact[rr.Pattern] = l
		}
	}
	return exact, patterns, def
}

// roomLimits returns a room rule's limits as the handler's.
func roomLimits(r policy.Room) wshandler.RoomLimits {
	return wshandler.RoomLimits{
		MaxMembers:              r.MaxMembers,
		MessagesPerMinute:       r.MessagesPerMinute,
		MessageBurst:            r.MessageBurst,
		MemberMessagesPerMinute: r.MemberMessagesPerMinute,
		MemberMessageBurst:      r.MemberMessageBurst,
		MaxMessageSize:          r.MaxMessageSize,
	}
}

// liveRooms gives the WebSocket handler the room rules of every policy
// version. The Watcher may deliver a version before the handler exists
// (the first one read from the cluster): the latest is kept and applied
// when the handler is attached.
type liveRooms struct {
	mu   sync.Mutex // serializes update and attach, so the latest version is applied last
	h    *wshandler.Handler
	last *policy.Version // the latest version delivered; nil before the first
	log  *slog.Logger
}

// update applies v's room rules to the handler, if attached.
func (l *liveRooms) update(v *policy.Version) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.last = v
	if l.h != nil {
		l.apply(v)
	}
}

// attach gives l its handler, built with the rules the node starts with,
// and applies the latest version delivered so far.
func (l *liveRooms) attach(h *wshandler.Handler) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.h = h
	if l.last != nil {
		l.apply(l.last)
	}
}

// apply sets v's room rules in the handler; requires l.mu held. The open
// connections stay in their rooms, which get the new rules at once (see
// wshandler.Handler.SetRoomLimits).
func (l *liveRooms) apply(v *policy.Version) {
	exact, patterns, def := handlerRooms(v.Table)
	if err := l.h.SetRoomLimits(exact, patterns, def); err != nil {
		l.log.Error("policy room rules not applied; the rooms keep their limits", "revision", v.Revision, "err", err)
		return
	}
	l.log.Info("room rules applied", "revision", v.Revision, "rooms", len(exact), "patterns", len(patterns))
}

// watchPolicy starts the Watcher of the cluster's policy, which applies
// every new version to lim and, through rooms, to the handler's room
// rules. The first node with a configured policy publishes it when the
// cluster holds none.
func (n *node) watchPolicy(lim *limiter.Limiter, rooms *liveRooms) (*policy.Watcher, error) {
	cfg := n.cfg
	return policy.NewWatcher(policy.WatcherConfig{
		Store: policy.StoreConfig{
			Conn:        n.nc,
			Bucket:      cfg.KVBucket + policyBucketSuffix,
			Replicas:    cfg.Replicas(),
			EventPrefix: cfg.EventPrefix,
			NodeID:      n.id,
		},
		Fallback: cfg.fallbackPolicy(),
		Seed:     cfg.Policy != nil,
		OnChange: func(v *policy.Version) {
			n.applyPolicy(lim, v)
			rooms.update(v)
		},
	})
}

// applyPolicy gives lim the base and tier limits of v. The message scope
// is fixed at start-up: a version that changes it is applied with the
// node's scope, and the node says so.
func (n *node) applyPolicy(lim *limiter.Limiter, v *policy.Version) {
	cur := lim.Limits().MessageScope
	if s := v.Document.Limits.MessageScope; s != "" && s != cur.String() {
		n.log.Warn("policy changes limits.message_scope, which takes a restart; keeping the node's", "revision", v.Revision, "scope", cur.String())
	}
	base, tiers := tableLimits(v.Table, cur)
	if err := lim.SetTierLimits(base, tiers); err != nil {
		n.log.Error("policy not applied", "revision", v.Revision, "err", err)
		return
	}
	n.log.Info("policy applied", "revision", v.Revision, "changed_by", v.Who, "tiers", len(tiers))
}

// servePolicy serves GET and PUT /admin/policy through policy.Handler;
// GET /admin/policy/history is GET /admin/policy?history=1.
func (n *node) servePolicy(w http.ResponseWriter, r *http.Request) {
	s := n.stack.Load()
	if strings.HasSuffix(r.URL.Path, "/history") {
		r.URL.RawQuery = "history=1"
	}
	h := policy.Handler{
		Store: s.policy.Store,
		Who: func(r *http.Request) string {
			return fmt.Sprintf("admin API on node %s from %s", n.id, r.RemoteAddr)
		},
	}
	h.ServeHTTP(w, r)
}

// policySummary says what --check-config found of the policy.
func policySummary(c *Config) string {
	if c.Policy == nil {
		return " (no policy: the node's limits apply until the cluster holds one)"
	}
	t, err := policy.Compile(c.Policy)
	if err != nil {
		return ""
	}
	return fmt.Sprintf(" (policy: %d classes, %d tiers, %d room rules)", len(t.ClassNames()), len(t.TierNames()), len(c.Policy.Rooms))
}
