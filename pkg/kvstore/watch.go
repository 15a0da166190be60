package kvstore

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/ratethrottle/ratethrottle/internal/kvwatch"
)

// watchLoop runs the KV watch of counters, connection counts and
// heartbeats, and re-establishes it after an outage. ready is closed once
// the initial values are applied.
func (s *Store) watchLoop(ready chan struct{}) {
	defer s.wg.Done()
	var once sync.Once
	markReady := func() { once.Do(func() { close(ready) }) }
	for {
		ctx, cancel := context.WithCancel(context.Background())
		off, known := s.serverOffset(ctx)
		w, err := s.kv.WatchFiltered(ctx, []string{watchCounters, watchConns, watchNodes})
		if err == nil {
			err = s.consume(w, markReady, off, known)
			kvwatch.Stop(w, s.cfg.Timeout)
		}
		cancel()
		if err == errStopped {
			return
		}
		t := time.NewTimer(100 * time.Millisecond)
		select {
		case <-s.stop:
			t.Stop()
			return
		case <-s.rewatch:
			t.Stop()
		case <-t.C:
		}
	}
}

// watchdog tells a stalled watch from a quiet one. The watch's consumer
// lives on one NATS server (the stream leader when it was created); when
// that server goes, the node's connection to another server stays up and
// nothing tells the watch, which then delivers nothing. The writes this
// node's flushes get acknowledged are in the watch's filter, so each must
// come back through it: an acknowledged write followed by no delivery at
// all for stallAfter means the watch is stalled. (A watch that lags but
// delivers is not restarted: a restart replays every key.)
type watchdog struct {
	ackSeq  atomic.Uint64 // stream sequence of the latest acknowledged write
	ackAt   atomic.Int64  // UnixNano of the first acknowledgement the watch had not caught up with
	seenRev atomic.Uint64 // highest revision the current watch delivered
	seenAt  atomic.Int64  // UnixNano of the current watch's last delivery (its start before any)
}

func (w *watchdog) start(t int64) {
	w.seenRev.Store(0)
	w.seenAt.Store(t)
	w.ackSeq.Store(0) // acknowledgements before this watch do not count
}

func (w *watchdog) acked(seq uint64, t int64) {
	for {
		old := w.ackSeq.Load()
		if seq <= old {
			return
		}
		if w.ackSeq.CompareAndSwap(old, seq) {
			if old <= w.seenRev.Load() {
				w.ackAt.Store(t) // the watch had caught up: a new wait starts
			}
			return
		}
	}
}

func (w *watchdog) seen(rev uint64, t int64) {
	if rev > w.seenRev.Load() {
		w.seenRev.Store(rev) // only the watch goroutine stores
	}
	w.seenAt.Store(t)
}

// stalled reports whether a write acknowledged more than after ago has
// not come back and nothing at all was delivered since.
func (w *watchdog) stalled(t, after int64) bool {
	seq, at := w.ackSeq.Load(), w.ackAt.Load()
	return seq > w.seenRev.Load() && t-at > after && w.seenAt.Load() < at
}

// monoBase anchors monotonic.
var monoBase = time.Now()

// monotonic returns nanoseconds on the process's monotonic clock: the
// watchdog's times, which no wall-clock step (or injected clock) moves.
func monotonic() int64 { return int64(time.Since(monoBase)) }

// stallAfter is how long an acknowledged write may take to come back
// through the watch, with nothing else delivered, before the watch is
// restarted: 300 ms, or 6 sync intervals if longer.
func (s *Store) stallAfter() time.Duration {
	return max(300*time.Millisecond, 6*s.cfg.SyncInterval)
}

type stopErr struct{}

func (stopErr) Error() string { return "kvstore: stopped" }

var errStopped error = stopErr{}

// serverOffset returns how far this node's clock is ahead of the clock
// of the NATS server that stamps the bucket's messages (the stream
// leader), from one stream info request: the server's time is taken as
// that of the request's midpoint. ok is false if the request failed.
func (s *Store) serverOffset(ctx context.Context) (off int64, ok bool) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	t0 := s.now().UnixNano()
	st, err := s.kv.Status(ctx)
	if err != nil {
		return 0, false
	}
	t1 := s.now().UnixNano()
	bs, isStream := st.(*jetstream.KeyValueBucketStatus)
	if !isStream || bs.StreamInfo() == nil || bs.StreamInfo().TimeStamp.IsZero() {
		return 0, false
	}
	return t0 + (t1-t0)/2 - bs.StreamInfo().TimeStamp.UnixNano(), true
}

// consume applies updates until the store stops (errStopped), a rewatch
// is asked for, or the watch ends (nil).
//
// Each update is dated in this node's clock, never by a time its writer
// put in it: an update delivered live was written just now (its receipt
// time); one of the initial values may be old, and is dated by the time
// the server stored it (KeyValueEntry.Created) shifted by off, this
// node's offset from the server's clock, and never later than its
// receipt. Without a known offset an initial value counts as fresh, which
// errs towards counting its spending as not yet refilled.
func (s *Store) consume(w jetstream.KeyWatcher, markReady func(), off int64, known bool) error {
	replaying := true
	s.wd.start(monotonic())
	check := time.NewTicker(s.stallAfter() / 4)
	defer check.Stop()
	for {
		select {
		case <-s.stop:
			return errStopped
		case <-s.rewatch:
			return nil
		case <-check.C:
			// Updates already queued are not a stall: a starved goroutine
			// finds the tick and the queue ready together.
			if len(w.Updates()) == 0 && s.wd.stalled(monotonic(), int64(s.stallAfter())) {
				s.stats.watchRestarts.Add(1)
				return nil
			}
		case e, ok := <-w.Updates():
			if !ok {
				return nil
			}
			if e == nil {
				replaying = false
				markReady()
				continue
			}
			s.stats.watchMessages.Add(1)
			written := s.now().UnixNano()
			s.wd.seen(e.Revision(), monotonic())
			if replaying && known {
				written = min(written, e.Created().UnixNano()+off)
			}
			s.apply(e, written)
		}
	}
}

// apply routes one KV update, written at local UnixNano written, to the
// state it belongs to.
func (s *Store) apply(e jetstream.KeyValueEntry, written int64) {
	key := e.Key()
	removed := e.Operation() != jetstream.KeyValuePut
	switch {
	case strings.HasPrefix(key, "b."):
		head, nodeTok, ok := splitLast(key)
		var c counter
		if !ok || removed || !c.unmarshal(e.Value()) {
			return
		}
		if nodeTok == s.nodeTok {
			if c.epoch == s.epoch {
				return // this run's own writes
			}
			// A previous run of this node: what it consumed and has not
			// refilled still counts, like another node's consumption. It
			// spends nothing any more, so it holds no allowance or demand.
			nodeTok, c.reserved, c.demand = previousRun(nodeTok), 0, 0
		}
		wrote := c.at
		c.at = written
		s.applyCounter(head, nodeTok, &c, wrote)
	case strings.HasPrefix(key, "c."):
		s.applySlot(e)
	case strings.HasPrefix(key, "n."):
		s.applyNode(e)
	}
}
