package kvstore

import (
	"context"
	"hash/maphash"
	"sync"
)

// slotShard holds connection counts by encoded client: this node's and,
// from the watch, every other node's.
type slotShard struct {
	mu     sync.Mutex // guards the maps; never held across I/O
	wmu    sync.Mutex // orders this shard's KV writes: the last carries the latest count
	local  map[string]int64
	remote map[string]map[string]int64 // client token → node token → count
	dirty  map[string]struct{}         // local counts not yet written
}

func (sh *slotShard) init() {
	sh.local = make(map[string]int64)
	sh.remote = make(map[string]map[string]int64)
	sh.dirty = make(map[string]struct{})
}

func (s *Store) slotShardOf(tok string) *slotShard {
	return &s.ssh[maphash.String(s.seed, tok)%shards]
}

// alive reports whether node counts at t: this node, a node whose last
// heartbeat is fresh, or an unknown node during our own start-up grace.
func (s *Store) alive(nodeTok string, t int64) bool {
	if nodeTok == s.nodeTok {
		return true
	}
	dead := int64(s.cfg.DeadAfter) * int64(s.cfg.HeartbeatInterval)
	s.nodesMu.RLock()
	seen, ok := s.lastSeen[nodeTok]
	s.nodesMu.RUnlock()
	if !ok {
		return t-s.started.UnixNano() < dead
	}
	return t-seen <= dead
}

// remoteCount sums the live remote counts of tok. Requires sh.mu held.
func (s *Store) remoteCount(sh *slotShard, tok string, t int64) int64 {
	var n int64
	for node, c := range sh.remote[tok] {
		if s.alive(node, t) {
			n += c
		}
	}
	return n
}

func (s *Store) slotsLocal() bool { return s.Mode(KindSlots) == Local }

// Acquire implements limiter.Slots across the cluster: the count is this
// node's plus the live nodes' counts, and this node's new count is written
// before Acquire returns. Acquires racing on different nodes may overshoot
// the cap by the connections admitted within one KV round trip.
func (s *Store) Acquire(ctx context.Context, client string, max int64) (int64, bool, error) {
	if s.slotsLocal() {
		return s.local.Acquire(ctx, client, max)
	}
	down := s.down.Load()
	if down && s.cfg.FailMode == FailClosed {
		return 0, false, errDown
	}
	tok := token(client)
	sh := s.slotShardOf(tok)
	sh.mu.Lock()
	total := sh.local[tok] + s.remoteCount(sh, tok, s.now().UnixNano())
	limit := max
	if down && s.cfg.FailMode == FailLocalShare && max > 0 {
		live := s.live.Load()
		total = sh.local[tok]
		limit = (max + live - 1) / live
	}
	if limit > 0 && total >= limit {
		sh.mu.Unlock()
		return total, false, nil
	}
	sh.local[tok]++
	sh.mu.Unlock()
	if err := s.writeConn(ctx, sh, tok); err != nil && s.cfg.FailMode == FailClosed {
		// The count stays dirty and is rewritten after the outage.
		sh.mu.Lock()
		s.dropLocal(sh, tok)
		sh.dirty[tok] = struct{}{}
		sh.mu.Unlock()
		return total, false, errDown
	}
	return total + 1, true, nil
}

// Release implements limiter.Slots. It always releases locally; the write
// is retried after an outage.
func (s *Store) Release(ctx context.Context, client string) error {
	if s.slotsLocal() {
		return s.local.Release(ctx, client)
	}
	tok := token(client)
	sh := s.slotShardOf(tok)
	sh.mu.Lock()
	if sh.local[tok] == 0 {
		sh.mu.Unlock()
		return nil
	}
	s.dropLocal(sh, tok)
	sh.mu.Unlock()
	_ = s.writeConn(ctx, sh, tok)
	return nil
}

// Count implements limiter.Slots.
func (s *Store) Count(ctx context.Context, client string) (int64, error) {
	if s.slotsLocal() {
		return s.local.Count(ctx, client)
	}
	if s.down.Load() && s.cfg.FailMode == FailClosed {
		return 0, errDown
	}
	tok := token(client)
	sh := s.slotShardOf(tok)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.local[tok] + s.remoteCount(sh, tok, s.now().UnixNano()), nil
}

func (s *Store) dropLocal(sh *slotShard, tok string) {
	if sh.local[tok] <= 1 {
		delete(sh.local, tok)
	} else {
		sh.local[tok]--
	}
}

// writeConn writes this node's current count of tok (deleting it at
// zero), or marks it dirty while NATS is down or on failure. It takes
// sh.wmu, so that racing writes of one shard land in order, and holds
// sh.mu only around the maps, never across the write: the watch and other
// clients' checks do not wait for the network. Requires neither held.
func (s *Store) writeConn(ctx context.Context, sh *slotShard, tok string) error {
	sh.wmu.Lock()
	defer sh.wmu.Unlock()
	sh.mu.Lock()
	c := sh.local[tok]
	if s.down.Load() {
		sh.dirty[tok] = struct{}{}
		sh.mu.Unlock()
		return errDown
	}
	sh.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	k := connKey(tok, s.nodeTok)
	var err error
	if c > 0 {
		_, err = s.kv.Put(ctx, k, marshalInt(c))
	} else {
		err = s.kv.Delete(ctx, k)
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if err != nil {
		s.stats.writeErrors.Add(1)
		sh.dirty[tok] = struct{}{}
		s.enterDown()
		return err
	}
	s.stats.kvWrites.Add(1)
	if sh.local[tok] == c {
		// A count changed since it was read is written by its changer.
		delete(sh.dirty, tok)
	}
	return nil
}

// flushSlots rewrites this node's dirty counts, or all of them when all is
// set (after an outage, or to keep live entries within the TTL).
func (s *Store) flushSlots(ctx context.Context, all bool) {
	var toks []string
	for i := range s.ssh {
		sh := &s.ssh[i]
		toks = toks[:0]
		sh.mu.Lock()
		if all {
			for tok := range sh.local {
				sh.dirty[tok] = struct{}{}
			}
		}
		for tok := range sh.dirty {
			toks = append(toks, tok)
		}
		sh.mu.Unlock()
		for _, tok := range toks {
			if s.writeConn(ctx, sh, tok) != nil {
				break
			}
		}
	}
}

// applyConn records another node's count from the watch.
func (s *Store) applyConn(tok, nodeTok string, c int64) {
	sh := s.slotShardOf(tok)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	m := sh.remote[tok]
	if c <= 0 {
		delete(m, nodeTok)
		if len(m) == 0 {
			delete(sh.remote, tok)
		}
		return
	}
	if m == nil {
		m = make(map[string]int64)
		sh.remote[tok] = m
	}
	m[nodeTok] = c
}

// applyNode records a heartbeat (at == 0: the node's key was removed).
func (s *Store) applyNode(nodeTok string, at int64) {
	if nodeTok == s.nodeTok {
		if at != 0 {
			s.echoAt.Store(s.now().UnixNano())
		}
		return
	}
	s.nodesMu.Lock()
	if at == 0 {
		delete(s.lastSeen, nodeTok)
	} else {
		s.lastSeen[nodeTok] = min(at, s.now().UnixNano())
	}
	s.nodesMu.Unlock()
	s.countLive(s.now().UnixNano())
}

func (s *Store) countLive(t int64) {
	dead := int64(s.cfg.DeadAfter) * int64(s.cfg.HeartbeatInterval)
	n := int64(1)
	s.nodesMu.RLock()
	for _, seen := range s.lastSeen {
		if t-seen <= dead {
			n++
		}
	}
	s.nodesMu.RUnlock()
	s.live.Store(n)
}

// heartbeat writes this node's heartbeat, recounts the live nodes, purges
// the counts of dead nodes and keeps live counts within the TTL.
func (s *Store) heartbeat() {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timeout)
	defer cancel()
	now := s.now()
	t := now.UnixNano()
	if _, err := s.kv.Put(ctx, nodeKey(s.nodeTok), marshalInt(t)); err != nil {
		s.stats.writeErrors.Add(1)
		s.enterDown()
		return
	}
	s.stats.kvWrites.Add(1)
	if t-s.echoAt.Load() > 2*int64(s.cfg.HeartbeatInterval) {
		// The watch has not delivered this node's own heartbeats for two
		// intervals: it is stalled (its consumer went with a NATS server
		// of the cluster), so what it says of the other nodes is stale.
		// Restart it, and neither count nodes dead nor purge their
		// entries on its word meanwhile.
		s.echoAt.Store(t)
		s.stats.watchRestarts.Add(1)
		select {
		case s.rewatch <- struct{}{}:
		default:
		}
		return
	}
	s.countLive(t)
	s.reclaim(ctx, t)
	if t-s.lastRefresh.Load() > int64(s.cfg.TTL/4) {
		s.lastRefresh.Store(t)
		s.flushSlots(ctx, true)
	}
	s.sweepPending(t)
}

// reclaim purges the connection counts of nodes that are not alive, and
// the heartbeats of dead nodes.
func (s *Store) reclaim(ctx context.Context, t int64) {
	var keys []string
	for i := range s.ssh {
		sh := &s.ssh[i]
		sh.mu.Lock()
		for tok, m := range sh.remote {
			for node := range m {
				if !s.alive(node, t) {
					delete(m, node)
					keys = append(keys, connKey(tok, node))
				}
			}
			if len(m) == 0 {
				delete(sh.remote, tok)
			}
		}
		sh.mu.Unlock()
	}
	dead := int64(s.cfg.DeadAfter) * int64(s.cfg.HeartbeatInterval)
	s.nodesMu.Lock()
	for node, seen := range s.lastSeen {
		if t-seen > dead {
			delete(s.lastSeen, node)
			keys = append(keys, nodeKey(node))
		}
	}
	s.nodesMu.Unlock()
	for _, k := range keys {
		if err := s.kv.Delete(ctx, k); err == nil && k[0] == 'c' {
			s.stats.reclaimed.Add(1)
		}
	}
}

// removeOwn deletes this node's counts and heartbeat, on Close.
func (s *Store) removeOwn(ctx context.Context) {
	var keys []string
	for i := range s.ssh {
		sh := &s.ssh[i]
		sh.mu.Lock()
		for tok := range sh.local {
			keys = append(keys, connKey(tok, s.nodeTok))
		}
		sh.mu.Unlock()
	}
	for _, k := range keys {
		_ = s.kv.Delete(ctx, k)
	}
	_ = s.kv.Delete(ctx, nodeKey(s.nodeTok))
}
