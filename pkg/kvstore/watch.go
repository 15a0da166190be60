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
		w, err := s.kv.WatchFiltered(ctx, []string{watchCounters, watchConns, watchNodes})
		if err == nil {
			err = s.consume(w, markReady)
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

// consume applies updates until the store stops (errStopped), a rewatch
// is asked for, or the watch ends (nil).
func (s *Store) consume(w jetstream.KeyWatcher, markReady func()) error {
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
				markReady()
				continue
			}
			s.apply(e)
		}
	}
}

// apply routes one KV update to the state it belongs to.
func (s *Store) apply(e jetstream.KeyValueEntry) {
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
		s.applyCounter(head, nodeTok, &c)
	case strings.HasPrefix(key, "c."):
		s.applySlot(e)
	case strings.HasPrefix(key, "n."):
		s.applyNode(e)
	}
}
