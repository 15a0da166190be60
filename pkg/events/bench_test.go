package events_test

import (
	"context"
	"testing"
	"time"

	"github.com/ratethrottle/ratethrottle/pkg/events"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

// BenchmarkViolationCost measures a denied CheckMessage, which reports a
// violation, on the deciding goroutine: without a sink (the baseline),
// with a Publisher on a real embedded NATS server, and with a Publisher and
// an AutoBan. Every iteration is a denial, so each one reports a violation;
// the Publisher's own goroutine encodes and publishes beside the loop, and
// a violation that finds its queue full is dropped (dropped/op).
func BenchmarkViolationCost(b *testing.B) {
	srv := startServer(b)
	run := func(b *testing.B, sink limiter.ViolationSink) {
		lim, err := limiter.New(limiter.Config{Limits: limiter.Limits{MessagesPerMinute: 1}, Sink: sink})
		if err != nil {
			b.Fatal(err)
		}
		defer lim.Close()
		ctx := context.Background()
		if _, err := lim.Connect(ctx, "conn", "client", map[string]string{"k": "v"}); err != nil {
			b.Fatal(err)
		}
		lim.CheckMessage(ctx, "conn", 64)
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			if lim.CheckMessage(ctx, "conn", 64).Allowed {
				b.Fatal("allowed")
			}
		}
	}
	newPub := func(b *testing.B) *events.Publisher {
		p, err := events.NewPublisher(events.PublisherConfig{Conn: connect(b, srv)})
		if err != nil {
			b.Fatal(err)
		}
		return p
	}
	report := func(b *testing.B, p *events.Publisher) {
		_ = p.Close()
		s := p.Stats()
		b.ReportMetric(float64(s.Dropped)/float64(b.N), "dropped/op")
	}
	b.Run("no_sink", func(b *testing.B) { run(b, nil) })
	b.Run("publisher", func(b *testing.B) {
		p := newPub(b)
		run(b, p)
		b.StopTimer()
		report(b, p)
	})
	b.Run("publisher_and_autoban", func(b *testing.B) {
		p := newPub(b)
		bans := newBans(b, events.BansConfig{Conn: connect(b, srv)})
		// A threshold no run reaches: the cost measured is counting.
		ab, err := events.NewAutoBan(events.AutoBanConfig{Bans: bans, Threshold: 1 << 40, Window: time.Minute})
		if err != nil {
			b.Fatal(err)
		}
		run(b, limiter.Sinks(p, ab))
		b.StopTimer()
		_ = ab.Close()
		report(b, p)
	})
}
