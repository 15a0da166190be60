package limiter

import (
	"encoding/binary"
	"time"
)

// Rescale implements Rescaler: every bucket of kind, whatever its ID and
// scope, is rescaled from old to new at now with RescaleBucket, so that it
// keeps its level as a fraction of the burst. A bucket full after the
// change is dropped (a missing bucket is full), as is every bucket of a
// kind that becomes unlimited, and any other bucket full at now, as the
// sweeper would. It returns the buckets of kind it still
// holds. Each shard is locked in turn: takes on other shards go on.
func (s *MemoryStore) Rescale(kind Kind, old, new Spec, now time.Time) int {
	t := now.UnixNano()
	sp := new.shape()
	kept := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		// Rescale in place first, then drop what is full: removing while
		// walking could shift an entry already rescaled past the walk.
		for j := range sh.t.slots {
			e := &sh.t.slots[j]
			if sh.t.tags[j] == 0 || !restHasKind(e.rest, sh.t.tags[j]&0x40 != 0, kind) {
				continue
			}
			if new.Unlimited() {
				e.b = Bucket{}
				continue
			}
			e.b = RescaleBucket(e.b, old, new, now)
			if e.nsPer = sp.nsPer; e.fullAt() > t {
				kept++
			}
		}
		sh.t.removeFull(t)
		sh.mu.Unlock()
	}
	return kept
}

// restHasKind reports whether rest, kept by keyRest for a key with or
// without a scope, names kind.
func restHasKind(rest string, scoped bool, kind Kind) bool {
	if !scoped {
		return rest == string(kind)
	}
	n, m := binary.Uvarint([]byte(rest))
	return m > 0 && n == uint64(len(kind)) && len(rest) >= m+len(kind) && rest[m:m+len(kind)] == string(kind)
}

// RescaleKey implements KeyRescaler: the bucket key, if the store holds
// it, is rescaled from old to new at now with RescaleBucket, and dropped
// if that leaves it full. It reports whether the store held it. Called
// twice it rescales twice: the store does not record a bucket's Spec.
func (s *MemoryStore) RescaleKey(key Key, old, new Spec, now time.Time) bool {
	if old == new || old.Unlimited() {
		return false
	}
	sh, h := s.hash(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	i, found := sh.t.find(h, key)
	if !found {
		return false
	}
	if new.Unlimited() {
		sh.t.remove(i)
		return true
	}
	e := &sh.t.slots[i]
	e.b = RescaleBucket(e.b, old, new, now)
	if e.nsPer = new.shape().nsPer; e.fullAt() <= now.UnixNano() {
		sh.t.remove(i)
	}
	return true
}
