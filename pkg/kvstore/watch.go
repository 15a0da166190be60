package kvstore

import (
	"context"
	"strings"
	"sync"
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
	for {
		select {
		case <-s.stop:
			return errStopped
		case <-s.rewatch:
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return nil
			}
			if e == nil {
				replaying = false
				markReady()
				continue
			}
			written := s.now().UnixNano()
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
		c.at = written
		s.applyCounter(head, nodeTok, &c)
	case strings.HasPrefix(key, "c."):
		head, nodeTok, ok := splitLast(key)
		if !ok || nodeTok == s.nodeTok {
			return
		}
		var n int64
		if !removed {
			if n, ok = unmarshalInt(e.Value()); !ok {
				return
			}
		}
		s.applyConn(strings.TrimPrefix(head, "c."), nodeTok, n)
	case strings.HasPrefix(key, "n."):
		var at int64
		if !removed {
			at, _ = unmarshalInt(e.Value())
		}
		s.applyNode(strings.TrimPrefix(key, "n."), at)
	}
}
