package kvstore

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
	"github.com/stretchr/testify/require"
)

// clock is a node's wall clock: the real time plus an offset that a test
// sets (clock skew) or advances (idle time without waiting for it).
type clock struct{ off atomic.Int64 }

func (c *clock) Now() time.Time                { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *clock) Advance(d time.Duration)       { c.off.Add(int64(d)) }
func (c *clock) Skewed(d time.Duration) *clock { c.off.Store(int64(d)); return c }

// holds reports whether s has a Global entry for key.
func (s *Store) holds(key limiter.Key) bool {
	sh := s.shardOf(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.m[key] != nil
}

// take takes n tokens at the node's clock and fails the test on error.
func take(t *testing.T, s *Store, key limiter.Key, spec limiter.Spec, n int64) limiter.Result {
	t.Helper()
	r, err := s.Take(context.Background(), key, spec, s.now(), n)
	require.NoError(t, err)
	return r
}

// TestSpendingSeenAfterSweep: node a's entry for a key is swept once the
// bucket is full and quiet; its next spending on the key, in the same
// process run, must reach node b, whether b kept its own entry (b's sweep
// does not run) or b's entry went too and b first hears of the spending
// after a's earlier, higher total.
func TestSpendingSeenAfterSweep(t *testing.T) {
	for _, bSweeps := range []bool{false, true} {
		name := map[bool]string{false: "b keeps its entry", true: "b swept too"}[bSweeps]
		t.Run(name, func(t *testing.T) {
			srv := startServer(t, ServerConfig{})
			var ca, cb clock
			bSweep := time.Hour
			if bSweeps {
				bSweep = 50 * time.Millisecond
			}
			a := newNode(t, srv.ClientURL(), Config{NodeID: "a", Storage: jetstream.MemoryStorage, Now: ca.Now,
				sweepInterval: 50 * time.Millisecond})
			b := newNode(t, srv.ClientURL(), Config{NodeID: "b", Storage: jetstream.MemoryStorage, Now: cb.Now,
				sweepInterval: bSweep})
			for _, s := range []*Store{a, b} {
				waitFor(t, 5*time.Second, "two live nodes", func() bool { return s.LiveNodes() == 2 })
			}
			spec := limiter.Spec{Limit: 100, Per: time.Minute}
			key := limiter.Key{Kind: limiter.KindMessages, ID: "idle-then-resume"}
			ctx := context.Background()
			take(t, b, key, spec, 0)
			require.NoError(t, b.Flush(ctx)) // b's first counter goes out before the idle time
			for range 20 {
				require.True(t, take(t, a, key, spec, 1).OK)
			}
			require.NoError(t, a.Flush(ctx))
			waitFor(t, 3*time.Second, "b to see a's 20", func() bool { return b.Tokens(key, spec, cb.Now()) < 81 })

			// 65 s of idleness on both clocks: the bucket refills and a's
			// sweep drops its entry (and b's, when b sweeps).
			ca.Advance(65 * time.Second)
			cb.Advance(65 * time.Second)
			waitFor(t, 3*time.Second, "a's sweep to drop the idle entry", func() bool { return !a.holds(key) })
			if bSweeps {
				waitFor(t, 3*time.Second, "b's sweep to drop the idle entry", func() bool { return !b.holds(key) })
			} else {
				require.True(t, b.holds(key))
			}
			for i := range 15 {
				r := take(t, a, key, spec, 1)
				require.True(t, r.OK, "take %d after the sweep: %+v, a sees %.1f", i, r, a.Tokens(key, spec, ca.Now()))
			}
			require.NoError(t, a.Flush(ctx))
			require.InDelta(t, 85, a.Tokens(key, spec, ca.Now()), 1)
			take(t, b, key, spec, 0)
			waitFor(t, 3*time.Second, "b to see a's 15 after the sweep", func() bool {
				return b.Tokens(key, spec, cb.Now()) < 86
			})
			require.Greater(t, b.Tokens(key, spec, cb.Now()), 84.0, "b counted more than a spent")
		})
	}
}

// TestFirstSightIgnoresWritersClock: a node's first view of another's
// spending must not depend on the writer's wall clock. Node a's clock is
// 6 s ahead of b's, or 6 s behind; a spends 20 of a bucket that refills
// 10 tokens a second, and b, on first sight of a's counter, must see about
// 80 left (not 20 or 100, which is what reading a's timestamp against b's
// clock gives), whether b already held the bucket or creates it after a's
// counter arrived.
func TestFirstSightIgnoresWritersClock(t *testing.T) {
	for _, skew := range []time.Duration{6 * time.Second, -6 * time.Second} {
		for _, bHolds := range []bool{true, false} {
			t.Run(fmt.Sprintf("a at %v, b holds the bucket %v", skew, bHolds), func(t *testing.T) {
				srv := startServer(t, ServerConfig{})
				ca, cb := new(clock).Skewed(skew), new(clock)
				a := newNode(t, srv.ClientURL(), Config{NodeID: "a", Storage: jetstream.MemoryStorage, Now: ca.Now})
				b := newNode(t, srv.ClientURL(), Config{NodeID: "b", Storage: jetstream.MemoryStorage, Now: cb.Now})
				spec := limiter.Spec{Limit: 100, Per: 10 * time.Second}
				key := limiter.Key{Kind: limiter.KindMessages, ID: "skewed"}
				ctx := context.Background()
				if bHolds {
					take(t, b, key, spec, 0)
					require.NoError(t, b.Flush(ctx))
					// b's counter reserves b's allowance for 3 sync
					// intervals (all of the bucket if b has not yet
					// counted a live); a spends after that.
					flushed := time.Now()
					waitFor(t, time.Second, "b's reservation to lapse", func() bool {
						return time.Since(flushed) > 4*a.cfg.SyncInterval
					})
				}
				for i := range 20 {
					r := take(t, a, key, spec, 1); require.True(t, r.OK, "take %d: %+v, a sees %.2f", i, r, a.Tokens(key, spec, ca.Now()))
				}
				require.NoError(t, a.Flush(ctx))
				if bHolds {
					waitFor(t, 3*time.Second, "b to see a's spending", func() bool { return b.Tokens(key, spec, cb.Now()) < 99 })
				} else {
					waitFor(t, 3*time.Second, "b to receive a's counter", func() bool {
						b.index.mu.Lock()
						defer b.index.mu.Unlock()
						return len(b.index.pending[bucketKey(key)]) > 0
					})
					take(t, b, key, spec, 0)
				}
				// a spent 20 a few ms ago: 80 left, plus what refilled since.
				require.InDelta(t, 81, b.Tokens(key, spec, cb.Now()), 1.5)
			})
		}
	}
}

// TestInitialValuesDatedByServer: a node that starts after another's
// counter was written dates it by the NATS server's timestamp, not by the
// writer's clock (6 s off here), so it credits exactly the refill since
// the write.
func TestInitialValuesDatedByServer(t *testing.T) {
	for _, skew := range []time.Duration{6 * time.Second, -6 * time.Second} {
		t.Run(fmt.Sprint("a at ", skew), func(t *testing.T) {
			srv := startServer(t, ServerConfig{})
			ca := new(clock).Skewed(skew)
			a := newNode(t, srv.ClientURL(), Config{NodeID: "a", Storage: jetstream.MemoryStorage, Now: ca.Now})
			spec := limiter.Spec{Limit: 100, Per: 10 * time.Second}
			key := limiter.Key{Kind: limiter.KindMessages, ID: "replayed"}
			for i := range 20 {
				require.True(t, take(t, a, key, spec, 1).OK, "take %d", i)
			}
			require.NoError(t, a.Flush(context.Background()))
			flushed := time.Now()
			waitFor(t, 2*time.Second, "half a second to pass", func() bool { return time.Since(flushed) > 500*time.Millisecond })
			b := newNode(t, srv.ClientURL(), Config{NodeID: "b", Storage: jetstream.MemoryStorage})
			take(t, b, key, spec, 0)
			want := 80 + 10*time.Since(flushed).Seconds()
			require.InDelta(t, want, b.Tokens(key, spec, time.Now()), 1.5)
		})
	}
}
