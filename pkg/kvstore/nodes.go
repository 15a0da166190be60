package kvstore

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Node liveness.
//
// Every node writes its heartbeat "n.<node>" every HeartbeatInterval. The
// value carries the node's incarnation: the KV revision of the first
// heartbeat of its current run, which grows across restarts, so an entry
// written by an earlier run of a node ID is told apart from the current
// run's.
//
// Liveness is judged by the NATS server's timestamps alone, never by a
// node's clock, and never by how late an entry arrives. The watch delivers
// this node's own heartbeats too; another node is dead once this node's
// own heartbeat was stored more than DeadAfter heartbeat intervals after
// that node's last one. Both timestamps are the stream's and both arrive
// in stream order through the same watch: clock skew between nodes does
// not matter, and a watch that lags, stalls or replays a backlog delivers
// this node's own heartbeats no sooner than the other nodes' earlier ones,
// so it never makes a live node look dead.
//
// Destructive steps (purging a dead node's entries and heartbeat) use the
// own heartbeat before the latest as their reference, one interval more
// careful than counting, and the heartbeat is deleted only at the revision
// that was judged dead, so a node that wrote again meanwhile keeps it.

// nodeInfo is what this node knows of another node. Guarded by
// Store.nodesMu.
type nodeInfo struct {
	// stamp is the server's UnixNano of the node's last heartbeat; for a
	// node known only from its connection entries, the stamp of this
	// node's own heartbeat when they were first seen.
	stamp int64
	inc   uint64 // incarnation of its run as last seen
	rev   uint64 // revision of its last heartbeat, for a conditional delete
	heard bool   // a heartbeat was seen
	gone  bool   // its heartbeat was deleted: the node closed or was purged
}

// deadSpan is the silence, in server nanoseconds, after which a node is
// dead.
func (s *Store) deadSpan() int64 { return int64(s.cfg.DeadAfter) * int64(s.cfg.HeartbeatInterval) }

// heartbeatValue encodes a heartbeat: the writer's clock (for people
// reading the bucket; no node judges by it) and the incarnation.
func (s *Store) heartbeatValue() []byte {
	return binary.LittleEndian.AppendUint64(marshalInt(s.now().UnixNano()), s.inc)
}

// parseHeartbeat returns a heartbeat's incarnation; 0 means the entry's
// own revision (the first heartbeat of a run, written before its revision
// was known).
func parseHeartbeat(b []byte) (inc uint64, ok bool) {
	switch len(b) {
	case 9:
		_, ok = unmarshalInt(b)
		return 0, ok
	case 17:
		if _, ok = unmarshalInt(b[:9]); !ok {
			return 0, false
		}
		return binary.LittleEndian.Uint64(b[9:]), true
	}
	return 0, false
}

// applyNode records a heartbeat entry from the watch.
func (s *Store) applyNode(e jetstream.KeyValueEntry) {
	tok := strings.TrimPrefix(e.Key(), "n.")
	removed := e.Operation() != jetstream.KeyValuePut
	stamp := e.Created().UnixNano()
	if tok == s.nodeTok {
		// A removed own heartbeat (another node judged this one dead) is
		// written again by the next heartbeat; the connection entries it
		// purged are repaired as the watch shows them (applySlot).
		if !removed {
			at := s.now().UnixNano()
			s.echoAt.Store(at)
			s.srvClock.stamped(e.Revision(), stamp)
			// After a gap in delivery (a stalled watch, restarted), the
			// first own heartbeat may come in a restarted watch's first
			// batch, which holds only each key's latest value: another
			// node's newer heartbeat can still be behind it in the batch,
			// and this node holds that node's heartbeat from before the
			// gap. Such a heartbeat judges by nothing until the batch has
			// been delivered (Delta 0); the next one, live, does.
			prev := s.srvClock.lastEcho.Swap(at)
			live := e.Delta() == 0 || at-prev <= 2*int64(s.cfg.HeartbeatInterval)
			if cur := s.echoCur.Load(); live && stamp > cur {
				s.echoPrev.Store(cur)
				s.echoCur.Store(stamp)
				s.countLive()
			}
		}
		return
	}
	var inc uint64
	if !removed {
		var ok bool
		if inc, ok = parseHeartbeat(e.Value()); !ok {
			return
		}
		if inc == 0 {
			inc = e.Revision()
		}
	}
	s.nodesMu.Lock()
	n := s.liveness[tok]
	if n == nil {
		n = &nodeInfo{stamp: stamp}
		s.liveness[tok] = n
	}
	if removed {
		n.gone = true
	} else {
		n.stamp, n.rev, n.heard, n.gone = max(n.stamp, stamp), e.Revision(), true, false
		n.inc = max(n.inc, inc)
	}
	s.nodesMu.Unlock()
	s.countLive()
}

// countsLocked reports whether an entry of node written by its incarnation
// inc counts, judged against ref, the stamp of one of this node's own
// heartbeats (0: none seen yet, nothing is judged dead). An entry of a
// node whose heartbeat was deleted does not count; one of a later run than
// the one heard counts (its heartbeat, written before it, is on its way);
// one of an earlier run does not; a node known only from its entries gets
// DeadAfter from first sight (noteNodes). Requires s.nodesMu held.
func (s *Store) countsLocked(node string, inc uint64, ref int64) bool {
	if node == s.nodeTok {
		return inc == s.inc
	}
	n := s.liveness[node]
	switch {
	case n == nil:
		return true
	case n.gone:
		return false
	case n.heard && inc > n.inc:
		return true
	case inc < n.inc:
		return false
	}
	return ref == 0 || ref-n.stamp <= s.deadSpan()
}

// noteNodes registers the nodes of entries this node has never heard of,
// stamped with its own latest heartbeat: they count for DeadAfter
// intervals, long enough for a live node's heartbeat to arrive, and are
// purged after that.
func (s *Store) noteNodes(entries []slotEntry) {
	ref := s.echoCur.Load()
	if ref == 0 || len(entries) == 0 {
		return
	}
	unknown := false
	s.nodesMu.RLock()
	for _, e := range entries {
		if e.node != s.nodeTok && s.liveness[e.node] == nil {
			unknown = true
			break
		}
	}
	s.nodesMu.RUnlock()
	if !unknown {
		return
	}
	s.nodesMu.Lock()
	for _, e := range entries {
		if e.node != s.nodeTok && s.liveness[e.node] == nil {
			s.liveness[e.node] = &nodeInfo{stamp: ref, inc: e.inc}
		}
	}
	s.nodesMu.Unlock()
}

// countLive counts the live nodes, this one included.
func (s *Store) countLive() {
	ref, dead := s.echoCur.Load(), s.deadSpan()
	n := int64(1)
	s.nodesMu.RLock()
	for _, ni := range s.liveness {
		if ni.heard && !ni.gone && (ref == 0 || ref-ni.stamp <= dead) {
			n++
		}
	}
	s.nodesMu.RUnlock()
	s.live.Store(n)
}

// heartbeat writes this node's heartbeat, recounts the live nodes, purges
// what dead nodes left, and writes the connection counts that need it
// (all of them now and then, to keep them within the TTL).
func (s *Store) heartbeat() {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timeout)
	defer cancel()
	t := s.now().UnixNano()
	rev, err := s.kv.Put(ctx, nodeKey(s.nodeTok), s.heartbeatValue())
	if err != nil {
		s.stats.writeErrors.Add(1)
		s.enterDown()
		return
	}
	s.srvClock.sent(rev, t, s.now().UnixNano())
	s.stats.kvWrites.Add(1)
	if t-s.echoAt.Load() > 2*int64(s.cfg.HeartbeatInterval) {
		// The watch has not delivered this node's own heartbeats for two
		// intervals: it is stalled (its consumer went with a NATS server
		// of the cluster). Restart it. Its silence judges no node dead:
		// liveness moves only with the own heartbeats it delivers.
		s.echoAt.Store(t)
		s.stats.watchRestarts.Add(1)
		select {
		case s.rewatch <- struct{}{}:
		default:
		}
		return
	}
	s.countLive()
	s.reclaim(ctx)
	all := t-s.lastRefresh.Load() > int64(s.cfg.TTL/4)
	if all {
		s.lastRefresh.Store(t)
	}
	// Each write is bounded by Timeout on its own: many clients' counts
	// may take longer than one.
	s.flushSlots(context.Background(), all)
	s.sweepPending(t)
}

// reclaim deletes the heartbeats of dead nodes, at the revision judged
// dead, forgets nodes long gone, and purges the connection entries that no
// longer count.
func (s *Store) reclaim(ctx context.Context) {
	ref := s.echoPrev.Load()
	if ref == 0 {
		return
	}
	dead := s.deadSpan()
	type beat struct {
		tok string
		rev uint64
	}
	var beats []beat
	s.nodesMu.Lock()
	for tok, n := range s.liveness {
		switch {
		case (n.gone || !n.heard) && ref-n.stamp > int64(s.cfg.TTL):
			delete(s.liveness, tok) // its entries have been purged or expired
		case n.heard && !n.gone && ref-n.stamp > dead:
			beats = append(beats, beat{tok, n.rev})
		}
	}
	s.nodesMu.Unlock()
	for _, b := range beats {
		err := s.kv.Delete(ctx, nodeKey(b.tok), jetstream.LastRevision(b.rev))
		if err != nil && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) && !errors.Is(err, jetstream.ErrKeyExists) {
			s.stats.writeErrors.Add(1)
		}
	}
	s.purgeSlots(context.Background(), ref)
}

// NodeStatus is what a Store knows of one node of its cluster.
type NodeStatus struct {
	// ID is the node's ID, or its KV token when the ID is too long to be
	// recovered from it (over 48 bytes).
	ID string
	// Self reports whether it is this node.
	Self bool
	// Live reports whether the node counts as live: its connection counts
	// count, and it is in LiveNodes.
	Live bool
	// Closed reports whether its heartbeat was removed: it closed, or was
	// purged after it died.
	Closed bool
	// Silent is how much earlier than this node's latest heartbeat the
	// node's last one was stored, by the NATS server's clock: about one
	// HeartbeatInterval at most for a live node. Zero for this node.
	Silent time.Duration
}

// Nodes returns the nodes this node has heard from, itself first, then by
// ID: live nodes, nodes silent for less than DeadAfter heartbeats, and
// dead or closed nodes until they are forgotten (TTL after their last
// heartbeat).
func (s *Store) Nodes() []NodeStatus {
	out := []NodeStatus{{ID: s.cfg.NodeID, Self: true, Live: true}}
	ref, dead := s.echoCur.Load(), s.deadSpan()
	s.nodesMu.RLock()
	for tok, n := range s.liveness {
		if !n.heard {
			continue
		}
		st := NodeStatus{ID: nodeID(tok), Closed: n.gone}
		if ref > n.stamp {
			st.Silent = time.Duration(ref - n.stamp)
		}
		st.Live = !n.gone && (ref == 0 || ref-n.stamp <= dead)
		out = append(out, st)
	}
	s.nodesMu.RUnlock()
	slices.SortFunc(out[1:], func(a, b NodeStatus) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// nodeID recovers a node ID from its token (subject.Token).
func nodeID(tok string) string {
	if tok == "=" {
		return ""
	}
	if strings.HasPrefix(tok, "=") {
		return tok
	}
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return tok
	}
	return string(b)
}

// serverClock estimates how far this node's clock is ahead of the NATS
// server's, from this node's heartbeats: the server stamps a heartbeat
// between the moment its write leaves (t0) and the moment its
// acknowledgement returns (t1), so (t0+t1)/2 minus the stamp the watch
// later shows is the offset, within half the round trip. Of the last 16
// samples the one with the shortest round trip is used.
type serverClock struct {
	mu      sync.Mutex
	rev     uint64 // revision of the heartbeat whose stamp is awaited
	t0, t1  int64
	offs    [16]int64
	rtts    [16]int64
	n       int
	off     atomic.Int64
	set     atomic.Bool
	pending bool

	lastEcho atomic.Int64 // this node's clock when its own heartbeat was last delivered
}

// sent records a heartbeat write that left at t0 and was acknowledged at
// t1 with revision rev.
func (c *serverClock) sent(rev uint64, t0, t1 int64) {
	c.mu.Lock()
	c.rev, c.t0, c.t1, c.pending = rev, t0, t1, true
	c.mu.Unlock()
}

// stamped takes the server's stamp of heartbeat rev.
func (c *serverClock) stamped(rev uint64, stamp int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.pending || rev != c.rev {
		return
	}
	c.pending = false
	i := c.n % len(c.offs)
	c.offs[i], c.rtts[i] = (c.t0+c.t1)/2-stamp, c.t1-c.t0
	c.n++
	best := 0
	for k := 1; k < min(c.n, len(c.offs)); k++ {
		if c.rtts[k] < c.rtts[best] {
			best = k
		}
	}
	c.off.Store(c.offs[best])
	c.set.Store(true)
}

// serverTime converts a time of this node's clock to the NATS server's
// clock; before the first own heartbeat is seen, it returns t.
func (s *Store) serverTime(t time.Time) time.Time {
	if !s.srvClock.set.Load() {
		return t
	}
	return t.Add(-time.Duration(s.srvClock.off.Load()))
}
