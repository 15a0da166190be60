package wshandler

import (
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

// SetRoomLimits replaces the room rules in force (Config.Rooms,
// RoomPatterns and DefaultRoom) in the running Handler, without closing
// a connection or leaving a room. Invalid rules return a
// *limiter.FieldError naming the field as New does, and change nothing.
//
// The rooms created from its return on get the new rules, and so do the
// rooms with members on this node: each message loads its room's rules
// once (an atomic load, no lock), so a message checked while the rules
// change meets either version in all its layers.
//
// Buckets keep their level. When the Limiter's Store implements
// limiter.KeyRescaler, the total bucket of each room on this node whose
// rate changes, and the member buckets of its members (each client once),
// are rescaled with limiter.RescaleBucket: they hold the same fraction of
// the new burst as of the old one and are never refilled by the change.
// The cluster store (pkg/kvstore) rescales only this node's share of a
// bucket, and only if it holds it under the old Spec, so calling this on
// every node applies the change to each bucket once. Buckets of rooms
// without members here, and of clients no longer in the room, keep their
// state and get the new Spec at their next Take (the cluster store then
// rescales them from the Spec it recorded; MemoryStore keeps their
// tokens).
//
// A lowered MaxMembers evicts no one: the members stay, and joins are
// refused until the room is below the new cap. A new MaxMessageSize
// applies to the next message. Calls are serialized; it is safe for
// concurrent use with every other method.
func (h *Handler) SetRoomLimits(rooms map[string]RoomLimits, patterns []RoomPattern, def RoomLimits) error {
	if err := validateRooms(rooms, patterns, def, h.cfg.MaxRoomNameLength); err != nil {
		return err
	}
	t := newRoomTable(rooms, patterns, def)
	type change struct {
		r        *room
		old, new *roomRules
	}
	h.roomRulesMu.Lock()
	defer h.roomRulesMu.Unlock()
	// Swap the table and every room's rules under hub.mu, so that no room
	// is created from the old table after the swap.
	var changed []change
	h.hub.mu.Lock()
	h.hub.table = t
	for name, r := range h.hub.rooms {
		nr := t.lookup(name)
		if old := r.rules.Swap(nr); old.total != nr.total || old.member != nr.member {
			changed = append(changed, change{r, old, nr})
		}
	}
	h.hub.mu.Unlock()
	kr, ok := h.lim.Store().(limiter.KeyRescaler)
	if !ok || len(changed) == 0 {
		return nil
	}
	now := h.cfg.Now()
	for _, c := range changed {
		if c.old.total != c.new.total {
			kr.RescaleKey(limiter.Key{Kind: KindRoom, Scope: c.r.name}, c.old.total, c.new.total, now)
		}
		if c.old.member == c.new.member {
			continue
		}
		for _, client := range c.r.clients() {
			kr.RescaleKey(limiter.Key{Kind: KindRoomMember, Scope: c.r.name, ID: client}, c.old.member, c.new.member, now)
		}
	}
	return nil
}

// clients returns the clients of r's members on this node, each once.
func (r *room) clients() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := make(map[string]struct{}, len(r.members))
	out := make([]string, 0, len(r.members))
	for m := range r.members {
		if _, dup := seen[m.client]; !dup {
			seen[m.client] = struct{}{}
			out = append(out, m.client)
		}
	}
	return out
}
