package kvstore

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/ratethrottle/ratethrottle/pkg/embedded"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

// entry is a KV watch update as the watch delivers it.
type entry struct {
	key   string
	value []byte
	rev   uint64
}

func (e *entry) Bucket() string                  { return "ratethrottle" }
func (e *entry) Key() string                     { return e.key }
func (e *entry) Value() []byte                   { return e.value }
func (e *entry) Revision() uint64                { return e.rev }
func (e *entry) Created() time.Time              { return time.Now() }
func (e *entry) Delta() uint64                   { return 0 }
func (e *entry) Operation() jetstream.KeyValueOp { return jetstream.KeyValuePut }

// BenchmarkApplyCounter is the CPU a node spends on one other node's
// counter update from its watch, after the NATS client has decoded it: on
// a bucket it holds (held) and on one it does not (kept for later). The
// constants of the watch-traffic model in docs/ACCURACY.md.
func BenchmarkApplyCounter(b *testing.B) {
	srv, err := embedded.Start(embedded.Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Shutdown()
	nc := dialBench(b, srv.ClientURL())
	defer nc.Close()
	s, err := New(b.Context(), Config{Conn: nc, NodeID: "bench", Storage: jetstream.MemoryStorage})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	spec := limiter.Spec{Limit: 1 << 30, Per: time.Second}
	const keys = 1000
	for _, held := range []bool{true, false} {
		b.Run(fmt.Sprint("held=", held), func(b *testing.B) {
			updates := make([]*entry, keys)
			for k := range keys {
				key := limiter.Key{Kind: limiter.KindMessages, ID: fmt.Sprint("bench-", held, k)}
				if held {
					_, _ = s.Take(b.Context(), key, spec, time.Now(), 0)
				}
				updates[k] = &entry{key: counterKey(bucketKey(key), token("other"))}
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				u := updates[i%keys]
				c := counter{epoch: 7, inc: 1, cum: int64(i/keys + 1), at: time.Now().UnixNano(), demand: 10, reserved: 5, level: 100, spec: spec}
				u.value = c.marshal(u.value)
				u.rev = uint64(i + 1)
				s.apply(u, time.Now().UnixNano())
			}
		})
	}
}
