package kvstore

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ratethrottle/ratethrottle/pkg/embedded"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

// benchLimits are generous enough that the benchmark measures the check,
// not denials: a million messages a minute per client.
var benchLimits = limiter.Limits{MessagesPerMinute: 1_000_000, BytesPerMinute: 1 << 40, MessageScope: limiter.PerClient}

const benchClients = 1024

// benchCheckMessage runs CheckMessage in parallel over benchClients
// clients, one connection each.
func benchCheckMessage(b *testing.B, store limiter.Store) {
	l, err := limiter.New(limiter.Config{Limits: benchLimits, Store: store})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	ctx := context.Background()
	conns := make([]string, benchClients)
	for i := range conns {
		conns[i] = fmt.Sprintf("conn-%d", i)
		if d, err := l.Connect(ctx, conns[i], fmt.Sprintf("client-%d", i), nil); err != nil || !d.Allowed {
			b.Fatal(d, err)
		}
	}
	var next atomic.Int64
	var denied atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := int(next.Add(7919)) // a different starting client per goroutine
		for pb.Next() {
			if !l.CheckMessage(ctx, conns[i%benchClients], 64).Allowed {
				denied.Add(1)
			}
			i++
		}
	})
	if d := denied.Load(); d > int64(b.N)/100 {
		b.Fatalf("%d of %d messages denied: the benchmark measures denials", d, b.N)
	}
}

// BenchmarkCheckMessage compares CheckMessage through a Limiter with a
// PerClient message scope on the in-memory store (the baseline) and on a
// KV store in Global mode connected to an embedded NATS server, with three
// live nodes so that allowances and flushes are real.
func BenchmarkCheckMessage(b *testing.B) {
	b.Run("store=memory", func(b *testing.B) {
		m := limiter.NewMemoryStore(limiter.MemoryStoreConfig{})
		defer m.Close()
		benchCheckMessage(b, m)
	})
	b.Run("store=kv-global", func(b *testing.B) {
		srv, err := embedded.Start(embedded.Config{})
		if err != nil {
			b.Fatal(err)
		}
		defer srv.Shutdown()
		var stores []*Store
		for i := range 3 {
			nc := dialBench(b, srv.ClientURL())
			defer nc.Close()
			s, err := New(context.Background(), Config{Conn: nc, NodeID: fmt.Sprintf("bench-%d", i)})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			stores = append(stores, s)
		}
		deadline := time.Now().Add(5 * time.Second)
		for stores[0].LiveNodes() < 3 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		benchCheckMessage(b, stores[0])
	})
}
