package cluster

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ratethrottle/ratethrottle/pkg/kvstore"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

const (
	// partitionSync is the SyncInterval of the partition scenario.
	partitionSync = 50 * time.Millisecond
	// agreeBound is how soon after a cut-off node's NATS connection is
	// re-established every node must agree again: two sync intervals
	// (one for the node to notice it is back and flush what it took, one
	// for the others to apply it and for it to rewatch theirs), as
	// DESIGN.md promises.
	agreeBound = 2 * partitionSync
	// agreeSlack is the scheduling tolerance on top of agreeBound on this
	// shared 2-core machine under -race.
	agreeSlack = 150 * time.Millisecond
	// agreeTokens is how far apart two nodes' views of a bucket may be
	// and still agree: one token (the buckets here refill one token in
	// six seconds, so refill during the check is well under it).
	agreeTokens = 1.0
)

// partitionNode is an in-process node of the partition scenario: a
// kvstore.Store on its own NATS connection.
type partitionNode struct {
	name        string
	store       *kvstore.Store
	nc          *nats.Conn
	reconnected atomic.Int64 // UnixNano of the last reconnect
}

// newPartitionNode starts a Store named name on its own connection to url.
func newPartitionNode(t *testing.T, name, url string, mode kvstore.FailMode) *partitionNode {
	t.Helper()
	n := &partitionNode{name: name}
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond),
		nats.RetryOnFailedConnect(true), nats.Timeout(500*time.Millisecond),
		// A dropping network is noticed by missed pings.
		nats.PingInterval(100*time.Millisecond), nats.MaxPingsOutstanding(2),
		nats.ReconnectHandler(func(*nats.Conn) { n.reconnected.Store(time.Now().UnixNano()) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	n.nc = nc
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := kvstore.New(ctx, kvstore.Config{
		Conn: nc, NodeID: name, Storage: jetstream.MemoryStorage, FailMode: mode,
		SyncInterval: partitionSync, HeartbeatInterval: 200 * time.Millisecond, Timeout: 500 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	n.store = s
	return n
}

// takeN offers n single-token takes on key and returns how many were
// admitted and how many failed with an error.
func takeN(t *testing.T, s *kvstore.Store, key limiter.Key, spec limiter.Spec, n int) (admitted, errs int) {
	t.Helper()
	for range n {
		r, err := s.Take(context.Background(), key, spec, time.Now(), 1)
		switch {
		case err != nil:
			if !errors.Is(err, limiter.ErrUnavailable) {
				t.Fatalf("take: %v", err)
			}
			errs++
		case r.OK:
			admitted++
		}
	}
	return admitted, errs
}

// spend takes n single tokens from key as a well-behaved client would:
// a take denied with a short RetryAfter (a node's allowance ran out
// before the bucket did; the next flush renews it) is retried after that
// wait. It returns how many were admitted, stopping early at a denial
// with a long wait (the bucket is empty) or after 10 seconds.
func spend(t *testing.T, s *kvstore.Store, key limiter.Key, spec limiter.Spec, n int) int {
	t.Helper()
	admitted := 0
	deadline := time.Now().Add(10 * time.Second)
	for admitted < n && time.Now().Before(deadline) {
		r, err := s.Take(context.Background(), key, spec, time.Now(), 1)
		switch {
		case err != nil:
			t.Fatalf("take: %v", err)
		case r.OK:
			admitted++
		case r.Uncertain:
			// Another node's allowance holds the tokens (it spent
			// alone until now); it releases them at its next flush
			// after it hears of this node's demand, sooner than
			// RetryAfter, which counts on the refill alone.
			time.Sleep(partitionSync)
		case r.RetryAfter > 2*partitionSync:
			return admitted
		default:
			time.Sleep(r.RetryAfter)
		}
	}
	return admitted
}

// TestPartitionedNodeHeals cuts one of three nodes off from NATS with the
// fault proxy (severing, or dropping every byte), checks that it honours
// its fail mode while the other two keep consuming, heals the network and
// measures how long after the reconnect all three agree on both buckets
// again: the one the others used during the cut and the one the cut-off
// node used.
func TestPartitionedNodeHeals(t *testing.T) {
	cases := []struct {
		mode  kvstore.FailMode
		fault string // "sever" or "drop"
		// want is what the cut-off node admits of 700 takes on a fresh
		// bucket of 600 (-1: it refuses with store_unavailable).
		want int
	}{
		{kvstore.FailClosed, "sever", -1},
		{kvstore.FailLocalShare, "drop", 200}, // 600 / 3 live nodes
		{kvstore.FailOpenLocal, "sever", 600},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%v/%s", tc.mode, tc.fault), func(t *testing.T) {
			checkGoroutines(t)
			ns := startNATS(t)
			proxy, err := NewProxy(strings.TrimPrefix(ns.ClientURL(), "nats://"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { proxy.Close() })
			a := newPartitionNode(t, "a", ns.ClientURL(), tc.mode)
			b := newPartitionNode(t, "b", ns.ClientURL(), tc.mode)
			c := newPartitionNode(t, "c", "nats://"+proxy.Addr(), tc.mode)
			nodes := []*partitionNode{a, b, c}
			for _, n := range nodes {
				waitFor(t, 5*time.Second, n.name+" to see three live nodes", func() bool { return n.store.LiveNodes() == 3 })
			}
			spec := limiter.Spec{Limit: 600, Per: time.Hour}
			shared := limiter.Key{Kind: limiter.KindMessages, ID: "spent-by-a-and-b"}
			outage := limiter.Key{Kind: limiter.KindMessages, ID: "spent-by-c"}
			for _, n := range nodes { // every node holds both buckets
				for _, k := range []limiter.Key{shared, outage} {
					if _, err := n.store.Take(context.Background(), k, spec, time.Now(), 0); err != nil {
						t.Fatal(err)
					}
				}
			}

			switch tc.fault {
			case "sever":
				proxy.Sever()
			case "drop":
				proxy.Drop(true)
			}
			cut := time.Now()
			waitFor(t, 5*time.Second, "c to enter its fail mode", c.store.Down)
			t.Logf("%s: c in fail mode %v after the fault", tc.fault, time.Since(cut).Round(time.Millisecond))

			// While c is cut off, a and b spend 300 of the shared bucket
			// and c spends what its fail mode lets it of its own.
			for _, n := range []*partitionNode{a, b} {
				if got := spend(t, n.store, shared, spec, 150); got != 150 {
					t.Fatalf("%s admitted %d of 150 while c was cut off", n.name, got)
				}
			}
			got, errs := takeN(t, c.store, outage, spec, 700)
			switch {
			case tc.want < 0 && (got != 0 || errs != 700):
				t.Fatalf("closed: c admitted %d and refused %d of 700, want every take refused", got, errs)
			case tc.want >= 0 && (got != tc.want || errs != 0):
				t.Fatalf("%v: c admitted %d of 700 (%d errors), want %d", tc.mode, got, errs, tc.want)
			}
			if tc.want < 0 {
				if _, _, err := c.store.Acquire(context.Background(), "x", 1); !errors.Is(err, limiter.ErrUnavailable) {
					t.Fatalf("closed: Acquire while cut off: %v, want ErrUnavailable", err)
				}
			}
			if !c.store.Down() {
				t.Fatal("c left its fail mode while still cut off")
			}

			healed := time.Now()
			proxy.Heal()
			waitFor(t, 5*time.Second, "c to reconnect", func() bool { return c.reconnected.Load() > healed.UnixNano() })
			reconnected := time.Unix(0, c.reconnected.Load())
			want := map[limiter.Key]float64{shared: 300, outage: 600 - float64(max(tc.want, 0))}
			// Agreement: c decides again (it has left its fail mode) and
			// every node's view of both buckets is within agreeTokens of
			// what was spent.
			agree := func() bool {
				if c.store.Down() {
					return false
				}
				now := time.Now()
				for k, w := range want {
					for _, n := range nodes {
						if math.Abs(n.store.Tokens(k, spec, now)-w) > agreeTokens {
							return false
						}
					}
				}
				return true
			}
			waitFor(t, 5*time.Second, "the three nodes to agree", agree)
			took := time.Since(reconnected)
			t.Logf("%v/%s: agreement %v after the reconnect (%v after Heal); bound %v + %v slack",
				tc.mode, tc.fault, took.Round(time.Millisecond), time.Since(healed).Round(time.Millisecond), agreeBound, agreeSlack)
			if took > agreeBound+agreeSlack {
				t.Errorf("agreement restored %v after the reconnect, bound %v + %v", took, agreeBound, agreeSlack)
			}

			// A slow network delays but does not break agreement: with
			// 20 ms added each way, what c spends reaches a and b within
			// the bound plus the delay.
			const delay = 20 * time.Millisecond
			proxy.SetDelay(delay)
			slow := limiter.Key{Kind: limiter.KindMessages, ID: "spent-over-a-slow-link"}
			for _, n := range nodes {
				if _, err := n.store.Take(context.Background(), slow, spec, time.Now(), 0); err != nil {
					t.Fatal(err)
				}
			}
			start := time.Now()
			if got := spend(t, c.store, slow, spec, 100); got != 100 {
				t.Fatalf("c admitted %d of 100 over the slow link", got)
			}
			// The bucket is uncontested (a and b spent nothing of it), so
			// c may defer writing part of its spending within the
			// allowance its first counter published (see the kvstore
			// package doc); a flush writes it, and what is measured is
			// how long the write takes to reach a and b over the link.
			if err := c.store.Flush(context.Background()); err != nil {
				t.Fatalf("c's flush over the slow link: %v", err)
			}
			waitFor(t, 5*time.Second, "a and b to see c's takes over the slow link", func() bool {
				return math.Abs(a.store.Tokens(slow, spec, time.Now())-500) <= agreeTokens &&
					math.Abs(b.store.Tokens(slow, spec, time.Now())-500) <= agreeTokens
			})
			took = time.Since(start)
			t.Logf("slow link: a and b agree %v after c's takes; bound %v + %v + %v slack", took.Round(time.Millisecond), agreeBound, delay, agreeSlack)
			if took > agreeBound+delay+agreeSlack {
				t.Errorf("agreement over a %v link took %v, bound %v", delay, took, agreeBound+delay+agreeSlack)
			}
			if c.store.Down() {
				t.Error("a 20 ms delay put c in its fail mode")
			}
		})
	}
}
