package wshandler

import (
	"sync"
	"time"

	"github.com/ratethrottle/ratethrottle/pkg/limiter"
	"github.com/ratethrottle/ratethrottle/pkg/policy"
)

// classSync carries the class buckets of the shared store (the user,
// address and room layers) across a policy change, so that a change keeps
// each bucket's level rescaled to its new burst and never refills one, as
// the connection layer's own buckets are (connBuckets.rescale).
//
// It works lazily, like the connection layer: a connection rescales the
// shared buckets it takes from (its user's and address's for every class,
// its rooms' for every class) at its first class check under the new
// version, and a connection joining a room under the version in force
// rescales the room's; done records the keys rescaled for the version in
// force, so that the connections sharing a key rescale it once, before
// any of them takes from it under the new version; it holds only the keys
// whose spec the change altered, until the next change. A bucket is rescaled
// from the version before the one in force: one that was not used during
// a version that came and went before the next change keeps the spec of
// the version it was last used under, rescaled as if from the previous.
//
// Only a Store that implements limiter.KeyRescaler is rescaled
// (MemoryStore and the cluster store); the cluster store also rescales on
// its own a bucket taken under another spec than its own, and its
// RescaleKey leaves alone one already under the new spec.
type classSync struct {
	mu   sync.Mutex
	tab  *policy.Table // the version done is for
	prev *policy.Table // the version before it
	done map[limiter.Key]struct{}
}

// syncShared rescales the shared class buckets of c for t, whose limits
// for c's tier are res, at now: those of c's user and address and of the
// rooms c is in (all of them when rooms is nil), or of rooms alone. It
// runs on c's read goroutine at its first class check under t and at its
// joins.
func (h *Handler) syncShared(c *Conn, t *policy.Table, res *policy.Resolved, rooms []string, all bool, now time.Time) {
	kr, ok := h.lim.Store().(limiter.KeyRescaler)
	if !ok {
		return
	}
	s := &h.classSync
	s.mu.Lock()
	defer s.mu.Unlock()
	if h.cfg.Policy.Current().Table != t {
		return // t is no longer in force: c syncs again at its next check
	}
	if s.tab != t {
		s.prev, s.tab, s.done = s.tab, t, make(map[limiter.Key]struct{})
	}
	if s.prev == nil {
		return // the first version: no bucket was taken under another
	}
	old := s.prev.Tier(c.meta[limiter.MetaTier])
	for i := range res.Classes {
		class := res.Classes[i].Name
		if all {
			s.rescale(kr, policy.LayerUser, class, c.user, "", old, res, t, now)
			s.rescale(kr, policy.LayerAddress, class, c.client, "", old, res, t, now)
		}
		for _, room := range rooms {
			s.rescale(kr, policy.LayerRoom, class, room, room, old, res, t, now)
		}
	}
}

// rescale rescales the bucket of class in layer l for id (a user, an
// address or a room) from its spec in s.prev (tier old) to its spec in t
// (tier res), once per version; requires s.mu held.
func (s *classSync) rescale(kr limiter.KeyRescaler, l policy.Layer, class, id, room string, old, res *policy.Resolved, t *policy.Table, now time.Time) {
	if id == "" {
		return
	}
	from, to := layerSpec(s.prev, old, l, class, room), layerSpec(t, res, l, class, room)
	if from == to {
		return // nothing to rescale: done keeps only the keys the change reached
	}
	key := limiter.Key{Kind: l.Kind(), Scope: class, ID: id}
	if _, done := s.done[key]; done {
		return
	}
	s.done[key] = struct{}{}
	kr.RescaleKey(key, from, to, now)
}

// layerSpec returns the Spec of class's bucket in layer l under t for a
// connection of tier r (the room rule's for the room layer), unlimited
// when t has no class of that name.
func layerSpec(t *policy.Table, r *policy.Resolved, l policy.Layer, class, room string) limiter.Spec {
	id := t.Class(class)
	cl := r.Class(id)
	if cl == nil || cl.Name != class {
		return limiter.Spec{}
	}
	if l == policy.LayerRoom {
		return t.Room(room).ClassSpec(r, id)
	}
	return cl.Specs[l]
}

// roomNames returns the names of the rooms c is in; c's read goroutine
// alone calls it.
func (c *Conn) roomNames() []string {
	if len(c.rooms) == 0 {
		return nil
	}
	names := make([]string, 0, len(c.rooms))
	for name := range c.rooms {
		names = append(names, name)
	}
	return names
}
