package wshandler

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"github.com/ratethrottle/ratethrottle/pkg/limiter"
	"github.com/ratethrottle/ratethrottle/pkg/policy"
)

// msgPathConns is the number of connections the message-path benchmark
// spreads its messages over.
const msgPathConns = 10_000

// msgPathPolicy is the policy of the message-path benchmark: three classes
// and two tiers that override the connection limits and a class, every
// bucket large enough that no message is denied. With address, the
// message class also has an address bucket, in the Limiter's Store.
func msgPathPolicy(address bool) *policy.Document {
	big := policy.Rate{Rate: 1 << 40}
	msgClass := policy.Class{Connection: big}
	if address {
		msgClass.Address = &policy.Rate{Rate: 1 << 40}
	}
	lim := policy.Limits{MessagesPerMinute: 1 << 40, BytesPerMinute: 1 << 50, MaxMessageSize: 64 << 10}
	pro := lim
	pro.MaxMessageSize = 1 << 20
	return &policy.Document{
		DefaultClass: "message",
		Limits:       lim,
		Classes: map[string]policy.Class{
			"message": msgClass,
			"typing":  {Connection: big},
			"file":    {Cost: 10, Connection: big},
		},
		Tiers: map[string]policy.Tier{
			"free": {},
			"pro":  {Limits: &pro, Classes: map[string]policy.Class{"file": {Connection: big}}},
		},
	}
}

// classifyMessage is the benchmark's Classify: what a chat application
// might write, a look at the payload's first bytes.
func classifyMessage(_ *Conn, _ int, data []byte) string {
	if bytes.HasPrefix(data, []byte(`{"t":"typing"`)) {
		return "typing"
	}
	return "message"
}

// msgPathSetup returns connections of a Handler that is not serving, for
// calling checkMessage directly. With doc, the Handler has the policy and
// Classify, and its Limiter the policy's tiers; three connections in four
// are in a tier.
func msgPathSetup(b testing.TB, doc *policy.Document) []*Conn {
	lc := limiter.Config{Limits: benchLimits}
	cfg := Config{OnMessage: func(*Conn, int, []byte) {}}
	if doc != nil {
		tab, err := policy.Compile(doc)
		if err != nil {
			b.Fatal(err)
		}
		lc.Limits = tab.Tier("").Limits
		lc.Tiers = map[string]limiter.Limits{}
		for _, name := range tab.TierNames() {
			lc.Tiers[name] = tab.Tier(name).Limits
		}
		cfg.Policy = staticPolicy{&policy.Version{Revision: 1, Document: doc, Table: tab}}
		cfg.Classify = classifyMessage
	}
	l, err := limiter.New(lc)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = l.Close() })
	cfg.Limiter = l
	h, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = h.Shutdown(context.Background()) })
	tiers := []string{"", "free", "pro", "pro"}
	conns := make([]*Conn, msgPathConns)
	for i := range conns {
		id := fmt.Sprintf("n-%d", i)
		client := fmt.Sprintf("198.51.100.%d", i%250)
		meta := map[string]string{limiter.MetaTier: tiers[i%4], MetaUser: fmt.Sprintf("user-%d", i%2500)}
		if _, err := l.Connect(context.Background(), id, client, meta); err != nil {
			b.Fatal(err)
		}
		conns[i] = &Conn{h: h, id: id, client: client, meta: meta, user: meta[MetaUser]}
	}
	return conns
}

// msgPathRun checks n messages on conns chosen at random from seed.
func msgPathRun(b testing.TB, conns []*Conn, n int, seed *uint64) {
	for range n {
		*seed = *seed*6364136223846793005 + 1442695040888963407
		c := conns[(*seed>>33)%uint64(len(conns))]
		if e, ok := c.checkMessage(1, echoPayload); !ok {
			b.Fatalf("denied: %+v", e)
		}
	}
}

// BenchmarkMessagePath compares the per-message decision of an OnMessage
// connection with a policy (Classify, three classes, two tiers in the
// Limiter and the policy) against the same decision without one (the
// Limiter's CheckMessage alone), in turns of 4,096 messages in the same
// run, on 10,000 connections of one goroutine (the read goroutine is the
// only caller). "classes" has per-connection class buckets only (they
// live on the connection); "classes+address" adds an address bucket in
// the Limiter's Store (a MemoryStore here; a cluster store in a cluster).
// It reports each path's ns/op and their ratio; allocs/op covers all.
func BenchmarkMessagePath(b *testing.B) {
	for _, tc := range []struct {
		name    string
		address bool
	}{{"classes", false}, {"classes+address", true}} {
		b.Run(tc.name, func(b *testing.B) {
			paths := [2][]*Conn{msgPathSetup(b, nil), msgPathSetup(b, msgPathPolicy(tc.address))}
			seeds := [2]uint64{rand.Uint64(), rand.Uint64()}
			for j := range paths { // every bucket made before timing
				msgPathRun(b, paths[j], 4*msgPathConns, &seeds[j])
			}
			var elapsed [2]time.Duration
			runtime.GC()
			b.ReportAllocs()
			b.ResetTimer()
			const turn = 4096
			for t, done := 0, 0; done < b.N; t++ {
				n := min(turn, b.N-done)
				for k := range paths {
					j := (t + k) % 2
					start := time.Now()
					msgPathRun(b, paths[j], n, &seeds[j])
					elapsed[j] += time.Since(start)
				}
				done += n
			}
			b.StopTimer()
			b.ReportMetric(float64(elapsed[0])/float64(b.N), "ns/op-plain")
			b.ReportMetric(float64(elapsed[1])/float64(b.N), "ns/op-policy")
			b.ReportMetric(float64(elapsed[1])/float64(elapsed[0]), "x-policy/plain")
		})
	}
}

// The message path with a policy (classes, tiers, Classify) allocates
// nothing once a connection has its class buckets.
func TestMessagePathAllocatesNothing(t *testing.T) {
	for _, address := range []bool{false, true} {
		conns := msgPathSetup(t, msgPathPolicy(address))[:100]
		seed := uint64(1)
		msgPathRun(t, conns, 1000, &seed)
		if a := testing.AllocsPerRun(1000, func() { msgPathRun(t, conns, 1, &seed) }); a != 0 {
			t.Errorf("address layer %v: %v allocations per message", address, a)
		}
	}
}

// BenchmarkClassStoreTake times the address layer's take alone, a
// MemoryStore.Take of a class bucket, as BenchmarkMessagePath's
// classes+address path makes it: "one" takes from one address's bucket
// over and over (every line in cache), "250" from the buckets of the
// path's 250 addresses drawn at random (the store's lines in cache, not
// all in the nearest).
func BenchmarkClassStoreTake(b *testing.B) {
	conns := msgPathSetup(b, msgPathPolicy(true))
	msgPathRun(b, conns, 4*msgPathConns, new(uint64))
	st := conns[0].h.lim.Store()
	spec := limiter.Spec{Limit: 1 << 40, Per: time.Minute}
	addrs := make([]string, 250)
	for i := range addrs {
		addrs[i] = conns[i].client
	}
	now := time.Now()
	for _, n := range []int{1, len(addrs)} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			seed := uint64(1)
			b.ReportAllocs()
			for range b.N {
				seed = seed*6364136223846793005 + 1442695040888963407
				key := limiter.Key{Kind: policy.LayerAddress.Kind(), Scope: "message", ID: addrs[(seed>>33)%uint64(n)]}
				if r, _ := st.Take(context.Background(), key, spec, now, 1); !r.OK {
					b.Fatal("denied")
				}
			}
		})
	}
}
