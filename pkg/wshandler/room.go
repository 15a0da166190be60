package wshandler

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
	"github.com/ratethrottle/ratethrottle/pkg/policy"
	"github.com/ratethrottle/ratethrottle/pkg/subject"
)

// The limiter.Kinds of room buckets in the Limiter's Store.
const (
	// KindRoom is a room's total message rate: Key{Kind: KindRoom, Scope: room}.
	KindRoom limiter.Kind = "room"
	// KindRoomMember is a client's message rate in a room:
	// Key{Kind: KindRoomMember, Scope: room, ID: client}.
	KindRoomMember limiter.Kind = "room_member"
)

// room is a room with members on this node.
type room struct {
	name     string
	nameJSON []byte
	rules    atomic.Pointer[roomRules] // the room's limits in force; see SetRoomLimits
	slotKey  string

	refs int // joins in progress plus members; guarded by hub.mu

	mu      sync.Mutex // guards members and names; never held across I/O
	members map[*Conn]struct{}
	names   map[string]*Conn // members' join names, by nameKey

	// subMu guards unsub and subbed. It is held while the Broker
	// subscribes, so that every joiner waits until the subscription is in
	// place, but it guards nothing a member's message or leave needs.
	subMu  sync.Mutex
	unsub  func() error
	subbed bool

	snap atomic.Pointer[[]*Conn] // members, copied on write
}

// deliver queues frame for every member on this node. It never waits.
func (r *room) deliver(frame []byte) {
	p := r.snap.Load()
	if p == nil {
		return
	}
	f := outFrame{typ: websocket.TextMessage, data: frame}
	for _, m := range *p {
		_ = m.enqueue(f)
	}
}

// publishSnap refreshes the snapshot of members; requires r.mu held.
func (r *room) publishSnap() {
	s := make([]*Conn, 0, len(r.members))
	for m := range r.members {
		s = append(s, m)
	}
	r.snap.Store(&s)
}

// hub holds this node's rooms.
type hub struct {
	mu    sync.Mutex
	rooms map[string]*room
	table *roomTable // the room rules in force; replaced by SetRoomLimits
}

// acquire returns the room name with a reference taken, creating it if the
// node's room cap allows.
func (h *Handler) acquireRoom(name string) *room {
	h.hub.mu.Lock()
	defer h.hub.mu.Unlock()
	r := h.hub.rooms[name]
	if r == nil {
		if len(h.hub.rooms) >= h.cfg.MaxRoomsPerNode {
			return nil
		}
		r = &room{
			name: name, nameJSON: appendJSONString(nil, name),
			slotKey: "room:" + subject.Token(name), members: make(map[*Conn]struct{}), names: make(map[string]*Conn),
		}
		r.rules.Store(h.hub.table.lookup(name))
		h.hub.rooms[name] = r
	}
	r.refs++
	return r
}

// releaseRoom drops a reference to r, and r itself with its subscription
// when that was the last. With no reference left no join is in progress,
// so r.subMu is free.
func (h *Handler) releaseRoom(r *room) {
	h.hub.mu.Lock()
	r.refs--
	last := r.refs == 0
	if last {
		delete(h.hub.rooms, r.name)
	}
	h.hub.mu.Unlock()
	if !last {
		return
	}
	r.subMu.Lock()
	unsub := r.unsub
	r.unsub = nil
	r.subMu.Unlock()
	if unsub != nil {
		_ = unsub()
	}
}

// subscribe subscribes r to b once; later callers wait until the first
// subscription is in place. Frames from b that are not valid UTF-8 are
// counted in dropped and never delivered.
func (r *room) subscribe(ctx context.Context, b Broker, dropped *atomic.Int64) error {
	if b == nil {
		return nil
	}
	r.subMu.Lock()
	defer r.subMu.Unlock()
	if r.subbed {
		return nil
	}
	unsub, err := b.Subscribe(ctx, r.name, func(frame []byte) {
		if !utf8.Valid(frame) {
			dropped.Add(1)
			return
		}
		r.deliver(frame)
	})
	if err != nil {
		return err
	}
	r.unsub, r.subbed = unsub, true
	return nil
}

// membership is a connection's membership of a room.
type membership struct {
	r        *room
	name     string // the name given at join; empty if none
	nameJSON []byte // name as a JSON string; nil if none
	slot     bool   // holds a slot of Config.RoomSlots
}

// join adds c to the room name, under the join name nick if it is not
// empty. It returns the error frame of a refusal, or ok.
func (c *Conn) join(name, ref, nick string) (e errorInfo, ok bool) {
	h := c.h
	e = errorInfo{room: name, ref: ref}
	if _, in := c.rooms[name]; in {
		e.code = CodeAlreadyIn
		return e, false
	}
	if len(c.rooms) >= h.cfg.MaxRoomsPerConn {
		e.code, e.limit = CodeTooManyRooms, int64(h.cfg.MaxRoomsPerConn)
		return e, false
	}
	r := h.acquireRoom(name)
	if r == nil {
		e.code, e.limit = CodeTooManyRooms, int64(h.cfg.MaxRoomsPerNode)
		return e, false
	}
	if err := r.subscribe(c.ctx(), h.cfg.Broker, &h.remoteDropped); err != nil {
		h.releaseRoom(r)
		e.code = CodeUnavailable
		return e, false
	}
	// The member cap. Shared slots are counted without r.mu held: their
	// Acquire may be a network round trip. They count every member, in a
	// room without a cap too, so that a cap set at run time
	// (SetRoomLimits) counts the members who joined before it; a room
	// without a cap admits a join the slots cannot count.
	max := r.rules.Load().limits.MaxMembers
	slots := h.cfg.RoomSlots
	var n int64
	full, slot := false, false
	if slots != nil {
		count, got, err := slots.Acquire(c.ctx(), r.slotKey, max)
		switch {
		case err != nil && max > 0:
			h.releaseRoom(r)
			e.code = ErrorCode(limiter.ReasonStoreUnavailable)
			return e, false
		case err == nil:
			n, full, slot = count, !got, got
		}
	}
	key := nameKey(nick)
	taken := false
	r.mu.Lock()
	if max > 0 && slots == nil {
		n = int64(len(r.members))
		full = n >= max
	}
	if nick != "" && !full {
		_, taken = r.names[key]
	}
	if !full && !taken {
		r.members[c] = struct{}{}
		if nick != "" {
			r.names[key] = c
		}
		r.publishSnap()
	}
	r.mu.Unlock()
	if taken {
		if slot {
			_ = slots.Release(c.ctx(), r.slotKey)
		}
		h.releaseRoom(r)
		e.code = CodeNameTaken
		return e, false
	}
	if full {
		h.releaseRoom(r)
		h.violate(limiter.Violation{Type: limiter.ViolationRoomFull, Reason: limiter.ReasonRoomFull,
			Time: h.cfg.Now(), ClientID: c.client, ConnectionID: c.id, Room: name, Limit: max, Current: n,
			Metadata: c.meta})
		e.code, e.limit = ErrorCode(limiter.ReasonRoomFull), max
		return e, false
	}
	m := membership{r: r, name: nick, slot: slot}
	if nick != "" {
		m.nameJSON = appendJSONString(nil, nick)
	}
	c.rooms[name] = m
	if c.resTab != nil && c.resTab == h.cfg.Policy.Current().Table {
		// c has synced its buckets for the version in force: the
		// room's are synced now; otherwise at c's next class check.
		h.syncShared(c, c.resTab, c.res, []string{name}, false, h.cfg.Now())
	}
	return e, true
}

// leave removes c from its room of m.
func (c *Conn) leave(m membership) {
	h := c.h
	r := m.r
	delete(c.rooms, r.name)
	r.mu.Lock()
	delete(r.members, c)
	if m.name != "" {
		delete(r.names, nameKey(m.name))
	}
	r.publishSnap()
	r.mu.Unlock()
	if m.slot {
		_ = h.cfg.RoomSlots.Release(c.ctx(), r.slotKey)
	}
	h.releaseRoom(r)
}

// leaveAll removes c from all its rooms.
func (c *Conn) leaveAll() {
	for _, m := range c.rooms {
		c.leave(m)
	}
}

// roomMessage runs the layers for a message of size bytes to r, in
// DESIGN.md's order, then the class buckets of class id in table t (none
// when t is nil), and takes their tokens. On a denial nothing stays
// taken in any layer, including the Limiter's; an error frame with an
// empty code means the connection is closing and needs no answer.
func (c *Conn) roomMessage(r *room, size int, ref string, t *policy.Table, id policy.ClassID) (e errorInfo, ok bool) {
	h := c.h
	e = errorInfo{room: r.name, ref: ref}
	n := int64(size)
	// The room's rules in force: one load, so that a message meets one
	// version of them in every layer and gives back what it took under it.
	rl := r.rules.Load()
	// 1. The room's size cap.
	if max := rl.limits.MaxMessageSize; max > 0 && n > max {
		h.violate(limiter.Violation{Type: limiter.ViolationMessageSize, Reason: limiter.ReasonMessageTooLarge,
			Time: h.cfg.Now(), ClientID: c.client, ConnectionID: c.id, Room: r.name, Size: n, Limit: max,
			Current: n, RetryAfter: limiter.Never, Metadata: c.meta})
		e.code, e.limit, e.max = ErrorCode(limiter.ReasonMessageTooLarge), max, max
		return e, false
	}
	// 2. The ban gate; a banned client's connection is closing already.
	if !c.gate(r.name, ref) {
		return errorInfo{}, false
	}
	// 3. The connection's or client's message rate and bandwidth.
	now := h.cfg.Now()
	d := h.lim.CheckMessageAt(c.ctx(), c.id, size, now)
	if !d.Allowed {
		de := errorFromDecision(d)
		de.room, de.ref = e.room, e.ref
		return de, false
	}
	store := h.lim.Store()
	// 4. The sender's rate in the room.
	memberKey := limiter.Key{Kind: KindRoomMember, Scope: r.name, ID: c.client}
	if !rl.member.Unlimited() {
		res, err := store.Take(c.ctx(), memberKey, rl.member, now, 1)
		if err != nil || !res.OK {
			h.lim.RefundMessage(c.ctx(), c.id, size)
			return c.roomDenied(e, err, r, rl.member, res, now), false
		}
	}
	// 5. The room's total rate.
	if !rl.total.Unlimited() {
		res, err := store.Take(c.ctx(), limiter.Key{Kind: KindRoom, Scope: r.name}, rl.total, now, 1)
		if err != nil || !res.OK {
			if !rl.member.Unlimited() {
				_ = store.Refund(c.ctx(), memberKey, rl.member, now, 1)
			}
			h.lim.RefundMessage(c.ctx(), c.id, size)
			return c.roomDenied(e, err, r, rl.total, res, now), false
		}
	}
	// 6. The message's class, per connection, user, address and room.
	if id != policy.NoClass {
		if ce, ok := c.takeClass(t, id, r.name, e, now); !ok {
			if !rl.total.Unlimited() {
				_ = store.Refund(c.ctx(), limiter.Key{Kind: KindRoom, Scope: r.name}, rl.total, now, 1)
			}
			if !rl.member.Unlimited() {
				_ = store.Refund(c.ctx(), memberKey, rl.member, now, 1)
			}
			h.lim.RefundMessage(c.ctx(), c.id, size)
			return ce, false
		}
	}
	return e, true
}

// roomDenied reports a room-rate denial and returns its error frame.
func (c *Conn) roomDenied(e errorInfo, err error, r *room, spec limiter.Spec, res limiter.Result, now time.Time) errorInfo {
	h := c.h
	if err != nil {
		e.code = ErrorCode(limiter.ReasonStoreUnavailable)
		h.violate(limiter.Violation{Type: limiter.ViolationStoreUnavailable, Reason: limiter.ReasonStoreUnavailable,
			Time: now, ClientID: c.client, ConnectionID: c.id, Room: r.name, Metadata: c.meta})
		return e
	}
	e.code, e.retry, e.limit, e.uncertain = ErrorCode(limiter.ReasonRoomRateExceeded), res.RetryAfter, spec.Limit, res.Uncertain
	h.violate(limiter.Violation{Type: limiter.ViolationRoomRate, Reason: limiter.ReasonRoomRateExceeded,
		Time: now, ClientID: c.client, ConnectionID: c.id, Room: r.name, Limit: spec.Limit,
		Remaining: res.Remaining, RetryAfter: res.RetryAfter, Metadata: c.meta})
	return e
}
