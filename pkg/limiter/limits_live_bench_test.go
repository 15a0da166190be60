package limiter

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
)

// tieredLimiter returns a Limiter with three tiers and conns connections,
// each of one of the tiers (every fourth of none), for the tier variants
// of BenchmarkCheckMessage and the allocation test.
func tieredLimiter(tb testing.TB, cfg Config, conns int) (*Limiter, []string) {
	tb.Helper()
	lim := Generous()
	lim.MessagesPerMinute = 1 << 40
	lim.BytesPerMinute = 1 << 50
	cfg.Limits = lim
	cfg.Tiers = map[string]Limits{"free": lim, "pro": lim, "team": lim}
	l, err := New(cfg)
	require.NoError(tb, err)
	tiers := []string{"", "free", "pro", "team"}
	ids := make([]string, conns)
	for i := range ids {
		ids[i] = fmt.Sprintf("conn-%d", i)
		_, err := l.Connect(ctx, ids[i], fmt.Sprintf("client-%d", i), map[string]string{MetaTier: tiers[i%4]})
		require.NoError(tb, err)
	}
	return l, ids
}

// TestCheckMessageTieredAllocatesNothing: a connection of a tier costs no
// allocation either.
func TestCheckMessageTieredAllocatesNothing(t *testing.T) {
	clk := newClock()
	l, ids := tieredLimiter(t, Config{Now: clk.Now}, 100)
	defer l.Close()
	i := 0
	a := testing.AllocsPerRun(1000, func() {
		if d := l.CheckMessage(ctx, ids[i%len(ids)], 512); !d.Allowed {
			t.Fatalf("denied: %+v", d)
		}
		i++
		clk.Advance(1)
	})
	require.Zero(t, a, "CheckMessage allocates")
}

// BenchmarkCheckMessageTiered is BenchmarkCheckMessage/connection with
// every connection but one in four in a tier, so that the tier lookup is
// on the path.
func BenchmarkCheckMessageTiered(b *testing.B) {
	l, ids := tieredLimiter(b, Config{}, 10_000)
	defer l.Close()
	runtime.GC()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := seq.Add(rand.Uint64())
		for pb.Next() {
			if d := l.CheckMessage(ctx, ids[nextIndex(&i, len(ids))], 512); !d.Allowed {
				b.Errorf("denied: %+v", d)
				return
			}
		}
	})
}
