package kvstore

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/ratethrottle/ratethrottle/internal/natstest"
	"github.com/ratethrottle/ratethrottle/pkg/embedded"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
	"github.com/stretchr/testify/require"
)

// strictLoad is the outcome of one hot-key run.
type strictLoad struct {
	decisions, admitted, errs int64
	elapsed                   time.Duration
	writes, conflicts         int64
}

// runStrictLoad offers one hot key to nodes from workers goroutines for d:
// request i goes to node route(i). It returns what was decided.
func runStrictLoad(nodes []*Store, key limiter.Key, spec limiter.Spec, workers int, d time.Duration, route func(uint64) int) strictLoad {
	var before strictLoad
	for _, s := range nodes {
		st := s.Stats()
		before.writes += st.KVWrites
		before.conflicts += st.Conflicts
	}
	var out strictLoad
	var seq, decisions, admitted, errs atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	stop := start.Add(d)
	for range workers {
		wg.Go(func() {
			ctx := context.Background()
			for n := 0; n < 50_000_000; n++ {
				now := time.Now()
				if now.After(stop) {
					return
				}
				s := nodes[route(uint64(seq.Add(1)))]
				r, err := s.Take(ctx, key, spec, now, 1)
				decisions.Add(1)
				switch {
				case err != nil:
					errs.Add(1)
				case r.OK:
					admitted.Add(1)
				}
			}
		})
	}
	wg.Wait()
	out.elapsed = time.Since(start)
	out.decisions, out.admitted, out.errs = decisions.Load(), admitted.Load(), errs.Load()
	for _, s := range nodes {
		st := s.Stats()
		out.writes += st.KVWrites
		out.conflicts += st.Conflicts
	}
	out.writes -= before.writes
	out.conflicts -= before.conflicts
	return out
}

// TestStrictLeasesExactAndFast drives one hot Strict key from three nodes,
// each on its own server of a three-server cluster with an R3 bucket, far
// beyond its rate, with the load even and 90% on one node. The tokens
// admitted never exceed what an exact bucket admits over the run (its
// burst plus its refill from before the first decision to after the last),
// reach at least 0.95 of it, no decision fails for lost compare-and-swaps,
// and (without the race detector) the three nodes decide at least 50,000
// times a second.
func TestStrictLeasesExactAndFast(t *testing.T) {
	c := natstest.Cluster(t, 3)
	var nodes []*Store
	for i, u := range c.ClientURLs() {
		nodes = append(nodes, newNode(t, u, Config{NodeID: fmt.Sprintf("lease%d", i), DefaultMode: Strict,
			Replicas: 3, Storage: jetstream.MemoryStorage}))
	}
	for _, s := range nodes {
		waitFor(t, 10*time.Second, "three live nodes", func() bool { return s.LiveNodes() == 3 })
	}
	spec := limiter.Spec{Limit: 10_000, Per: time.Second}
	for _, load := range []struct {
		name  string
		route func(uint64) int
	}{
		{"even", func(i uint64) int { return int(i % 3) }},
		{"skewed-90", func(i uint64) int {
			switch i % 20 {
			case 18:
				return 1
			case 19:
				return 2
			}
			return 0
		}},
	} {
		t.Run(load.name, func(t *testing.T) {
			key := limiter.Key{Kind: limiter.KindMessages, ID: "hot-" + load.name}
			r := runStrictLoad(nodes, key, spec, 6, 2*time.Second, load.route)
			ideal := float64(spec.Capacity()) + float64(spec.Limit)*r.elapsed.Seconds()
			util := float64(r.admitted) / ideal
			perSec := float64(r.decisions) / r.elapsed.Seconds()
			t.Logf("%s: %d decisions in %v (%.0f/s), admitted %d of an exact bucket's %.0f (%.4f), %d KV writes (%.0f/s), %d lost swaps, %d errors",
				load.name, r.decisions, r.elapsed.Round(time.Millisecond), perSec, r.admitted, ideal, util,
				r.writes, float64(r.writes)/r.elapsed.Seconds(), r.conflicts, r.errs)
			require.LessOrEqual(t, float64(r.admitted), ideal, "above an exact bucket")
			require.Zero(t, r.errs, "decisions failed")
			// Utilisation and speed are the machine's as much as the
			// code's: under the race detector on this shared 2-core
			// machine, a renewal starved of CPU leaves tokens unspent at
			// the end of a 2 s run (0.98-0.99 when the machine is quiet,
			// down to 0.6 with every package's tests running at once).
			if !raceEnabled {
				require.GreaterOrEqual(t, util, 0.95, "utilisation")
				require.GreaterOrEqual(t, perSec, 50_000.0, "decisions per second")
			}
		})
	}
}

// TestStrictDeadNodeLeaseCharged: a node that dies holding a lease with
// unused tokens leaves it to expire. Until then the other nodes cannot
// spend its tokens; at expiry the first renewal charges the lease in full
// (what the dead node spent of it is unknown) and drops it from the entry.
func TestStrictDeadNodeLeaseCharged(t *testing.T) {
	srv := startServer(t, embedded.Config{})
	a := newNode(t, srv.ClientURL(), Config{NodeID: "holder", DefaultMode: Strict})
	b := newNode(t, srv.ClientURL(), Config{NodeID: "survivor", DefaultMode: Strict})
	ctx := context.Background()
	// 1,000 an hour: under 1 token refills over the test.
	spec := limiter.Spec{Limit: 1000, Per: time.Hour}
	key := limiter.Key{Kind: limiter.KindConnectionRate, ID: "leased"}
	r, err := a.Take(ctx, key, spec, time.Now(), 500)
	require.NoError(t, err)
	require.True(t, r.OK)
	// 400 back into a's lease, then a dies before returning it.
	require.NoError(t, a.Refund(ctx, key, spec, time.Now(), 400))
	a.nc.Close()
	a.Close()
	died := time.Now()

	took := takeRounds(t, []*Store{b}, key, spec, 600)[0]
	require.Equal(t, int64(500), took, "the survivor spends what no lease holds")
	waitFor(t, leaseTTL+time.Second, "the dead node's lease to be charged and dropped", func() bool {
		if _, err := b.Take(ctx, key, spec, time.Now(), 1); err != nil {
			return false
		}
		e, err := b.kv.Get(ctx, strictKey(key))
		require.NoError(t, err)
		var v strictVal
		require.True(t, v.unmarshal(e.Value()))
		for _, l := range v.leases {
			if l.node == token("holder") {
				return false
			}
		}
		return true
	})
	require.GreaterOrEqual(t, time.Since(died), leaseTTL-leaseMargin, "charged before the lease expired")
	// Charged in full: nothing of the 400 came back.
	for range 10 {
		r, err := b.Take(ctx, key, spec, time.Now(), 1)
		require.NoError(t, err)
		require.False(t, r.OK)
	}
}

// TestStrictExactUnderClockSkew: the Strict entry is kept on the NATS
// server's clock, so a node whose clock runs 5 s ahead does not see a
// bucket another node emptied as refilled. 100 a second, burst 100: the
// node on time spends the burst, and the node ahead may take only what
// refilled in the real time between.
func TestStrictExactUnderClockSkew(t *testing.T) {
	srv := startServer(t, embedded.Config{})
	onTime := newNode(t, srv.ClientURL(), Config{NodeID: "on-time", DefaultMode: Strict})
	ahead := newNode(t, srv.ClientURL(), Config{NodeID: "ahead", DefaultMode: Strict, Now: skewed(5 * time.Second)})
	for _, s := range []*Store{onTime, ahead} {
		waitFor(t, 5*time.Second, "the server's clock", func() bool { return s.srvClock.set.Load() })
	}
	ctx := context.Background()
	spec := limiter.Spec{Limit: 100, Per: time.Second}
	key := limiter.Key{Kind: limiter.KindMessages, ID: "skewed"}
	start := time.Now()
	r, err := onTime.Take(ctx, key, spec, onTime.now(), 100)
	require.NoError(t, err)
	require.True(t, r.OK)
	// A denied take renews the lease: it settles the spent one, so the
	// entry holds the emptied bucket and no lease.
	r, err = onTime.Take(ctx, key, spec, onTime.now(), 1)
	require.NoError(t, err)
	require.False(t, r.OK)
	got := 0
	for range 200 {
		r, err := ahead.Take(ctx, key, spec, ahead.now(), 1)
		require.NoError(t, err)
		if r.OK {
			got++
		}
	}
	refilled := spec.Limit * int64(time.Since(start)+time.Millisecond) / int64(time.Second)
	t.Logf("the node 5 s ahead took %d after the burst was spent (%d refilled meanwhile)", got, refilled)
	require.LessOrEqual(t, int64(got), refilled+1, "took tokens that never refilled")
}

// TestStrictThroughOutage: while NATS is down a Strict node decides by its
// fail mode, and what it admitted is debited from the cluster's bucket
// after the outage.
func TestStrictThroughOutage(t *testing.T) {
	srv := startServer(t, embedded.Config{StoreDir: t.TempDir()})
	open := newNode(t, srv.ClientURL(), Config{NodeID: "open", DefaultMode: Strict})
	closed := newNode(t, srv.ClientURL(), Config{NodeID: "closed", DefaultMode: Strict, FailMode: FailClosed})
	ctx := context.Background()
	spec := limiter.Spec{Limit: 100, Per: time.Hour}
	key := limiter.Key{Kind: limiter.KindConnectionRate, ID: "outage"}

	srv.Stop()
	for _, s := range []*Store{open, closed} {
		waitFor(t, 5*time.Second, "fail mode", s.Down)
	}
	for range 5 {
		r, err := open.Take(ctx, key, spec, time.Now(), 1)
		require.NoError(t, err)
		require.True(t, r.OK)
	}
	_, err := closed.Take(ctx, key, spec, time.Now(), 1)
	require.ErrorIs(t, err, limiter.ErrUnavailable)

	require.NoError(t, srv.Restart())
	for _, s := range []*Store{open, closed} {
		waitFor(t, 10*time.Second, "recovery", func() bool { return !s.Down() })
	}
	waitFor(t, 5*time.Second, "the outage's consumption to be written", func() bool {
		e, err := open.kv.Get(ctx, strictKey(key))
		if err != nil {
			return false
		}
		var v strictVal
		require.True(t, v.unmarshal(e.Value()))
		b := bucketAt(spec, v.full, open.serverTime(time.Now()))
		return b.TokensAt(spec, open.serverTime(time.Now())) < 96
	})
	took := takeRounds(t, []*Store{closed}, key, spec, 120)[0]
	require.Equal(t, int64(95), took, "the outage's 5 debited from the cluster's bucket")
}
