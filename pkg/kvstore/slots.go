package kvstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/nats-io/nats.go/jetstream"
)

// Concurrent connections.
//
// Each client with connections has one KV entry, "c.<client>", holding the
// count of every node that has some, with the incarnation of the node's run
// that wrote it. A node changes only its own count, and only by a
// compare-and-swap on the entry's revision; an Acquire checks the cap
// against the cluster-wide count in the same swap, so acquires racing on
// any number of nodes are admitted one swap at a time and the cap holds
// exactly. A swap also drops the counts of dead nodes and of earlier runs,
// which never count. Connections are rare next to messages, so one KV
// round trip per connect and per disconnect is the price.
//
// The watch keeps each node's copy of every entry, so an uncontended
// Acquire costs one write; a lost swap re-reads the entry and tries again,
// and a refusal decided on the copy is confirmed on a fresh read.

// slotVersion is the first byte of a connection entry.
const slotVersion = 1

// maxSlotEntries bounds the node counts decoded from one entry.
const maxSlotEntries = 4096

// slotEntry is one node's count in a client's connection entry.
type slotEntry struct {
	node string // node token
	inc  uint64 // incarnation of the node's run that wrote it
	n    int64
}

// slotValue is a client's connection entry as last read or written. Its
// entries are never modified once stored: a change stores a new slice.
type slotValue struct {
	rev     uint64
	entries []slotEntry
}

// slotKey is the KV key of a client's connection entry: "c.<client>".
func slotKey(clientTok string) string { return join("c", clientTok) }

func encodeSlot(others []slotEntry, self string, inc uint64, n int64) []byte {
	b := []byte{slotVersion}
	put := func(node string, inc uint64, n int64) {
		b = binary.AppendUvarint(b, uint64(len(node)))
		b = append(b, node...)
		b = binary.AppendUvarint(b, inc)
		b = binary.AppendUvarint(b, uint64(n))
	}
	for _, e := range others {
		put(e.node, e.inc, e.n)
	}
	if n > 0 {
		put(self, inc, n)
	}
	return b
}

func decodeSlot(b []byte) ([]slotEntry, bool) {
	if len(b) == 0 || b[0] != slotVersion {
		return nil, false
	}
	b = b[1:]
	var out []slotEntry
	for len(b) > 0 {
		if len(out) == maxSlotEntries {
			return nil, false
		}
		l, k := binary.Uvarint(b)
		if k <= 0 || l == 0 || l > 64 || uint64(len(b)-k) < l {
			return nil, false
		}
		node := string(b[k : k+int(l)])
		b = b[k+int(l):]
		inc, k := binary.Uvarint(b)
		if k <= 0 {
			return nil, false
		}
		b = b[k:]
		n, k := binary.Uvarint(b)
		if k <= 0 || n == 0 || n > 1<<40 {
			return nil, false
		}
		b = b[k:]
		out = append(out, slotEntry{node: node, inc: inc, n: int64(n)})
	}
	return out, true
}

// ownCount returns the count of node's run inc in entries.
func ownCount(entries []slotEntry, node string, inc uint64) int64 {
	for _, e := range entries {
		if e.node == node && e.inc == inc {
			return e.n
		}
	}
	return 0
}

type slotShardData struct {
	mu    sync.Mutex            // guards the maps; never held across I/O
	wmu   sync.Mutex            // serialises this shard's swaps and changes of local
	local map[string]int64      // this node's count per client token
	seen  map[string]*slotValue // entries as last read, written or watched
	dirty map[string]struct{}   // local counts not yet in KV
}

// slotShard holds the connection entries of the clients whose tokens hash
// to it, padded to whole cache lines (see cacheLine).
type slotShard struct {
	// The padding comes first: Go lengthens a struct that ends in a
	// field of size zero.
	_ [(cacheLine - unsafe.Sizeof(slotShardData{})%cacheLine) % cacheLine]byte
	slotShardData
}

func (sh *slotShard) init() {
	sh.local = make(map[string]int64)
	sh.seen = make(map[string]*slotValue)
	sh.dirty = make(map[string]struct{})
}

func (s *Store) slotShardOf(tok string) *slotShard {
	return &s.ssh[maphash.String(s.seed, tok)%shards]
}

func (s *Store) slotsLocal() bool { return s.Mode(KindSlots) == Local }

// tally sums the counts of other nodes that count at ref, and returns the
// entries a write keeps: those that still count at keepRef.
func (s *Store) tally(entries []slotEntry, ref, keepRef int64) (others int64, keep []slotEntry) {
	s.nodesMu.RLock()
	defer s.nodesMu.RUnlock()
	for _, e := range entries {
		if e.node == s.nodeTok {
			continue
		}
		if s.countsLocked(e.node, e.inc, ref) {
			others += e.n
		}
		if s.countsLocked(e.node, e.inc, keepRef) {
			keep = append(keep, e)
		}
	}
	return others, keep
}

// cached returns this node's count and its copy of tok's entry.
func (sh *slotShard) cached(tok string) (int64, *slotValue) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.local[tok], sh.seen[tok]
}

// setLocal sets this node's count of tok. Requires sh.wmu held.
func (sh *slotShard) setLocal(tok string, n int64, dirty bool) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if n > 0 {
		sh.local[tok] = n
	} else {
		delete(sh.local, tok)
	}
	if dirty {
		sh.dirty[tok] = struct{}{}
	} else {
		delete(sh.dirty, tok)
	}
}

var errSlotConflict = fmt.Errorf("%w: %w", errConflict, errors.New("kvstore: connection count"))

// swapSlot sets this node's count of tok to what f returns, by
// compare-and-swap on the client's entry, dropping the counts that no
// longer count. f gets this node's count and the other live nodes' total
// and returns the new count and whether to write; a decision not to write
// taken on the cached copy is confirmed on a fresh read. It returns the
// cluster-wide count after the write, or the one that stopped it.
// Requires sh.wmu held.
func (s *Store) swapSlot(ctx context.Context, sh *slotShard, tok string, f func(own, others int64) (int64, bool)) (int64, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	k := slotKey(tok)
	own, v := sh.cached(tok)
	fresh := v == nil
	var rev uint64
	var entries []slotEntry
	if v != nil {
		rev, entries = v.rev, v.entries
	}
	for attempt := 0; ; attempt++ {
		if fresh {
			var err error
			if rev, entries, err = s.readSlot(ctx, k); err != nil {
				return 0, false, err
			}
			s.noteNodes(entries)
		}
		others, keep := s.tally(entries, s.echoCur.Load(), s.echoPrev.Load())
		next, write := f(own, others)
		if !write {
			if !fresh {
				fresh = true
				continue
			}
			return own + others, false, nil
		}
		if attempt >= s.cfg.MaxRetries {
			return 0, false, errSlotConflict
		}
		val := encodeSlot(keep, s.nodeTok, s.inc, next)
		var nrev uint64
		var err error
		if rev == 0 {
			nrev, err = s.kv.Create(ctx, k, val)
		} else {
			nrev, err = s.kv.Update(ctx, k, val, rev)
		}
		switch {
		case err == nil:
			s.stats.kvWrites.Add(1)
			if dropped := len(entries) - len(keep); dropped > 0 {
				for _, e := range entries {
					if e.node == s.nodeTok && e.inc == s.inc {
						dropped--
					}
				}
				s.stats.reclaimed.Add(int64(dropped))
			}
			if next > 0 {
				keep = append(keep, slotEntry{node: s.nodeTok, inc: s.inc, n: next})
			}
			sh.mu.Lock()
			if next > 0 {
				sh.local[tok] = next
			} else {
				delete(sh.local, tok)
			}
			if cur := sh.seen[tok]; cur == nil || cur.rev <= nrev {
				sh.seen[tok] = &slotValue{rev: nrev, entries: keep}
				delete(sh.dirty, tok)
			} else if ownCount(cur.entries, s.nodeTok, s.inc) != next {
				sh.dirty[tok] = struct{}{} // a later write dropped this one
			}
			sh.mu.Unlock()
			return next + others, true, nil
		case errors.Is(err, jetstream.ErrKeyRevisionMismatch), errors.Is(err, jetstream.ErrKeyExists):
			// Check the mismatch first: ErrKeyExists matches it too.
			s.stats.conflicts.Add(1)
			s.stats.retries.Add(1)
			fresh = true
			if err := pause(ctx, time.Duration(rand.Int64N(int64(attempt+1)*int64(250*time.Microsecond)))); err != nil {
				return 0, false, fmt.Errorf("kvstore: write %s: %w", k, err)
			}
		default:
			s.stats.writeErrors.Add(1)
			return 0, false, fmt.Errorf("kvstore: write %s: %w", k, err)
		}
	}
}

// readSlot reads a client's entry; a missing one has revision 0.
func (s *Store) readSlot(ctx context.Context, k string) (uint64, []slotEntry, error) {
	e, err := s.kv.Get(ctx, k)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return 0, nil, nil
	case err != nil:
		return 0, nil, fmt.Errorf("kvstore: get %s: %w", k, err)
	}
	entries, _ := decodeSlot(e.Value()) // an unreadable entry is replaced
	return e.Revision(), entries, nil
}

// Acquire implements limiter.Slots across the cluster: the count is this
// node's plus the live nodes' counts, checked and raised by one
// compare-and-swap on the client's entry, so the cap holds exactly however
// many acquires race on however many nodes. While NATS is unreachable the
// fail mode decides from what this node last saw.
func (s *Store) Acquire(ctx context.Context, client string, max int64) (int64, bool, error) {
	if s.slotsLocal() {
		return s.local.Acquire(ctx, client, max)
	}
	if s.down.Load() && s.cfg.FailMode == FailClosed {
		return 0, false, errDown
	}
	tok := token(client)
	sh := s.slotShardOf(tok)
	sh.wmu.Lock()
	defer sh.wmu.Unlock()
	if s.down.Load() {
		return s.acquireDown(sh, tok, max)
	}
	n, ok, err := s.swapSlot(ctx, sh, tok, func(own, others int64) (int64, bool) {
		return own + 1, max <= 0 || own+others < max
	})
	switch {
	case err == nil:
		return n, ok, nil
	case errors.Is(err, errConflict):
		return 0, false, err
	}
	s.enterDown()
	if s.cfg.FailMode == FailClosed {
		return 0, false, fmt.Errorf("%w: %w", errDown, err)
	}
	return s.acquireDown(sh, tok, max)
}

// acquireDown decides an Acquire by the fail mode from the counts this
// node last saw; the new count is written after the outage. Requires
// sh.wmu held.
func (s *Store) acquireDown(sh *slotShard, tok string, max int64) (int64, bool, error) {
	own, v := sh.cached(tok)
	var others int64
	if v != nil {
		others, _ = s.tally(v.entries, s.echoCur.Load(), s.echoPrev.Load())
	}
	total, limit := own+others, max
	if s.cfg.FailMode == FailLocalShare && max > 0 {
		live := s.live.Load()
		total, limit = own, (max+live-1)/live
	}
	if limit > 0 && total >= limit {
		return total, false, nil
	}
	sh.setLocal(tok, own+1, true)
	return total + 1, true, nil
}

// Release implements limiter.Slots. It always releases locally; a write
// that fails is made after the outage.
func (s *Store) Release(ctx context.Context, client string) error {
	if s.slotsLocal() {
		return s.local.Release(ctx, client)
	}
	tok := token(client)
	sh := s.slotShardOf(tok)
	sh.wmu.Lock()
	defer sh.wmu.Unlock()
	own, _ := sh.cached(tok)
	if own == 0 {
		return nil
	}
	if s.down.Load() {
		sh.setLocal(tok, own-1, true)
		return nil
	}
	if _, _, err := s.swapSlot(ctx, sh, tok, func(own, _ int64) (int64, bool) { return own - 1, true }); err != nil {
		sh.setLocal(tok, own-1, true)
		if !errors.Is(err, errConflict) {
			s.enterDown()
		}
	}
	return nil
}

// Count implements limiter.Slots: this node's count plus the live nodes'
// counts as this node last saw them.
func (s *Store) Count(ctx context.Context, client string) (int64, error) {
	if s.slotsLocal() {
		return s.local.Count(ctx, client)
	}
	if s.down.Load() && s.cfg.FailMode == FailClosed {
		return 0, errDown
	}
	own, v := s.slotShardOf(token(client)).cached(token(client))
	if v == nil {
		return own, nil
	}
	others, _ := s.tally(v.entries, s.echoCur.Load(), s.echoPrev.Load())
	return own + others, nil
}

// flushSlots writes this node's dirty counts, or all of them when all is
// set (to keep live entries within the TTL).
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
		if !s.rewriteSlots(ctx, sh, toks) {
			return
		}
	}
}

// rewriteSlots writes this node's counts of toks as they are, and reports
// whether NATS answered.
func (s *Store) rewriteSlots(ctx context.Context, sh *slotShard, toks []string) bool {
	for _, tok := range toks {
		sh.wmu.Lock()
		if s.down.Load() {
			sh.wmu.Unlock()
			return false
		}
		_, _, err := s.swapSlot(ctx, sh, tok, func(own, _ int64) (int64, bool) { return own, true })
		sh.wmu.Unlock()
		switch {
		case err == nil, errors.Is(err, errConflict):
		case ctx.Err() != nil:
			return false // the caller's time is up; the rest stays dirty
		default:
			s.enterDown()
			return false
		}
	}
	return true
}

// purgeSlots rewrites the entries holding counts that no longer count at
// ref (dead nodes, earlier runs), and forgets empty ones.
func (s *Store) purgeSlots(ctx context.Context, ref int64) {
	type snap struct {
		tok     string
		entries []slotEntry
	}
	var snaps []snap
	var toks []string
	for i := range s.ssh {
		sh := &s.ssh[i]
		snaps = snaps[:0]
		sh.mu.Lock()
		for tok, v := range sh.seen {
			if len(v.entries) == 0 {
				if _, d := sh.dirty[tok]; !d && sh.local[tok] == 0 {
					delete(sh.seen, tok)
				}
				continue
			}
			snaps = append(snaps, snap{tok, v.entries})
		}
		sh.mu.Unlock()
		toks = toks[:0]
		s.nodesMu.RLock()
		for _, sn := range snaps {
			for _, e := range sn.entries {
				if !s.countsLocked(e.node, e.inc, ref) {
					toks = append(toks, sn.tok)
					break
				}
			}
		}
		s.nodesMu.RUnlock()
		if !s.rewriteSlots(ctx, sh, toks) {
			return
		}
	}
}

// applySlot records a client's connection entry from the watch. If it
// shows this node's count other than this node holds it (another node
// judged this one dead and dropped it), the count is written again at the
// next heartbeat.
func (s *Store) applySlot(e jetstream.KeyValueEntry) {
	tok := strings.TrimPrefix(e.Key(), "c.")
	if strings.IndexByte(tok, '.') >= 0 {
		return // a per-node count of an earlier version
	}
	var entries []slotEntry
	if e.Operation() == jetstream.KeyValuePut {
		entries, _ = decodeSlot(e.Value())
	}
	s.noteNodes(entries)
	mine := ownCount(entries, s.nodeTok, s.inc)
	sh := s.slotShardOf(tok)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if v := sh.seen[tok]; v != nil && v.rev >= e.Revision() {
		return
	}
	sh.seen[tok] = &slotValue{rev: e.Revision(), entries: entries}
	if mine != sh.local[tok] {
		sh.dirty[tok] = struct{}{}
	}
}

// removeOwn returns this node's Strict leases, takes its counts out of the
// cluster and deletes its heartbeat, on Close.
func (s *Store) removeOwn(ctx context.Context) {
	s.returnLeases(ctx)
	for i := range s.ssh {
		sh := &s.ssh[i]
		var toks []string
		sh.mu.Lock()
		for tok := range sh.local {
			toks = append(toks, tok)
		}
		sh.mu.Unlock()
		for _, tok := range toks {
			sh.wmu.Lock()
			_, _, err := s.swapSlot(ctx, sh, tok, func(int64, int64) (int64, bool) { return 0, true })
			sh.wmu.Unlock()
			if err != nil && !errors.Is(err, errConflict) {
				return
			}
		}
	}
	_ = s.kv.Delete(ctx, nodeKey(s.nodeTok))
}
