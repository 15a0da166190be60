package kvstore

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/ratethrottle/ratethrottle/pkg/embedded"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

// casTake is the baseline a user would otherwise write for an exact
// cluster-wide bucket, and what Strict mode did before leases: every
// decision reads the bucket's entry and writes the new state back with a
// compare-and-swap, retrying a lost one.
func casTake(ctx context.Context, kv jetstream.KeyValue, k string, spec limiter.Spec, now time.Time) (bool, error) {
	for range 16 {
		var rev uint64
		var full int64
		e, err := kv.Get(ctx, k)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return false, err
		default:
			rev = e.Revision()
			full, _ = unmarshalInt(e.Value())
		}
		b := bucketAt(spec, full, now)
		if !b.TakeAt(spec, now, 1).OK {
			return false, nil
		}
		val := marshalInt(b.FullAt(spec).UnixNano())
		if rev == 0 {
			_, err = kv.Create(ctx, k, val)
		} else {
			_, err = kv.Update(ctx, k, val, rev)
		}
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, jetstream.ErrKeyRevisionMismatch), errors.Is(err, jetstream.ErrKeyExists):
			continue
		default:
			return false, err
		}
	}
	return false, errConflict
}

// BenchmarkStrictHotKey decides on one hot key of 10,000 tokens a second
// from three nodes, each on its own server of a three-server cluster with
// an R3 bucket, from parallel goroutines spread evenly over the nodes: a
// Store in Strict mode (leases) against a compare-and-swap per decision
// (the baseline). ns/op is per decision; admitted/op is the share of
// decisions admitted.
func BenchmarkStrictHotKey(b *testing.B) {
	c, err := embedded.StartCluster(3, embedded.Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Shutdown()
	var stores []*Store
	for i, u := range c.ClientURLs() {
		nc := dialBench(b, u)
		defer nc.Close()
		s, err := New(context.Background(), Config{Conn: nc, NodeID: fmt.Sprintf("bench-%d", i), DefaultMode: Strict,
			Replicas: 3, Storage: jetstream.MemoryStorage})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		stores = append(stores, s)
	}
	spec := limiter.Spec{Limit: 10_000, Per: time.Second}
	var round atomic.Int64
	run := func(b *testing.B, take func(ctx context.Context, node int, k string, now time.Time) (bool, error)) {
		k := fmt.Sprintf("hot-%d", round.Add(1)) // a fresh, full bucket per run
		var next, admitted, errs atomic.Int64
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			ctx := context.Background()
			node := int(next.Add(1)) % len(stores)
			for pb.Next() {
				ok, err := take(ctx, node, k, time.Now())
				switch {
				case err != nil:
					errs.Add(1)
				case ok:
					admitted.Add(1)
				}
			}
		})
		b.ReportMetric(float64(admitted.Load())/float64(b.N), "admitted/op")
		if e := errs.Load(); e > 0 {
			b.Logf("%d of %d decisions failed", e, b.N)
		}
	}
	b.Run("strict=leases", func(b *testing.B) {
		run(b, func(ctx context.Context, node int, k string, now time.Time) (bool, error) {
			r, err := stores[node].Take(ctx, limiter.Key{Kind: limiter.KindMessages, ID: k}, spec, now, 1)
			return r.OK, err
		})
	})
	b.Run("strict=cas-per-decision", func(b *testing.B) {
		run(b, func(ctx context.Context, node int, k string, now time.Time) (bool, error) {
			return casTake(ctx, stores[node].kv, "bench."+k, spec, now)
		})
	})
}
