package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ratethrottle/ratethrottle/pkg/limiter"
	"github.com/ratethrottle/ratethrottle/pkg/wshandler"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func sample(v map[string]float64) Sample { return Sample{At: time.Now(), Values: v} }

// startNode serves a wshandler.Handler speaking the room protocol at /ws
// and this process's memory statistics at /metrics, with lim.
func startNode(t *testing.T, lim limiter.Limits, cfg wshandler.Config) *httptest.Server {
	t.Helper()
	l, err := limiter.New(limiter.Config{Limits: lim})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Limiter = l
	cfg.PingInterval = -1
	h, err := wshandler.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/ws", h)
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		fmt.Fprintf(w, "go_memstats_heap_inuse_bytes %d\ngo_memstats_stack_inuse_bytes %d\ngo_goroutines %d\n",
			ms.HeapInuse, ms.StackInuse, runtime.NumGoroutine())
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := h.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		srv.Close()
		_ = l.Close()
	})
	return srv
}

var openLimits = limiter.Limits{MessagesPerMinute: 1 << 30, BytesPerMinute: 1 << 40, MaxMessageSize: 64 << 10}

// TestRunAgainstHandler loads an in-process handler: 40 connections from 4
// source addresses in 4 rooms, 200 messages a second for one second.
func TestRunAgainstHandler(t *testing.T) {
	srv := startNode(t, openLimits, wshandler.Config{MaxDenials: -1})
	target, err := ParseTarget(srv.URL+"/ws", false, "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	res, err := Run(context.Background(), Config{
		Targets:     []Target{target},
		Conns:       40,
		Sources:     4,
		Rooms:       4,
		Rate:        200,
		Size:        256,
		Duration:    time.Second,
		Settle:      50 * time.Millisecond,
		Drain:       500 * time.Millisecond,
		SampleEvery: 400 * time.Millisecond,
		Log:         &log,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Established != 40 || res.Joined != 40 {
		t.Fatalf("established %d, joined %d, dial errors %v; want 40, 40", res.Established, res.Joined, res.DialErrors)
	}
	// 200/s for 1 s, within the pacing's rounding and a slow machine.
	if res.Sent < 150 || res.Sent > 210 {
		t.Errorf("sent %d, want about 200", res.Sent)
	}
	// Every message reaches its 10 members, the sender included.
	if res.Expected != res.Sent*10 || res.Delivered != res.Expected {
		t.Errorf("delivered %d, expected %d for %d sent", res.Delivered, res.Expected, res.Sent)
	}
	if res.Latency.Count() != uint64(res.Delivered) || res.Latency.Quantile(0.5) <= 0 {
		t.Errorf("latency samples %d, p50 %v", res.Latency.Count(), res.Latency.Quantile(0.5))
	}
	if len(res.Closes) != 0 || len(res.ErrorFrames) != 0 || res.WriteErrors != 0 {
		t.Errorf("closes %v, error frames %v, write errors %d", res.Closes, res.ErrorFrames, res.WriteErrors)
	}
	tr := res.Targets[0]
	if tr.ScrapeErr != nil || tr.Established != 40 {
		t.Fatalf("target %+v", tr)
	}
	if _, _, ok := tr.MemPerConn(); !ok || tr.After.At.IsZero() {
		t.Errorf("memory readings missing: %+v", tr)
	}
	if len(res.Rows) == 0 {
		t.Errorf("no periodic samples")
	}
	var out bytes.Buffer
	WriteReport(&out, res)
	for _, want := range []string{"40 established of 40", "p99", "per connection heap+stack", "closed by server  none"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
}

// TestRunCountsRefusalsAndCloses checks that refused handshakes are counted
// by status and server closes by code: each source address is one client
// allowed 2 connections, and a room message over the room's size cap is
// denied (the handler closes after the first denial).
func TestRunCountsRefusalsAndCloses(t *testing.T) {
	lim := openLimits
	lim.MaxConcurrentConnections = 2
	srv := startNode(t, lim, wshandler.Config{
		MaxDenials:  1,
		DefaultRoom: wshandler.RoomLimits{MaxMessageSize: 100},
	})
	target, err := ParseTarget(srv.URL, false, "")
	if err != nil {
		t.Fatal(err)
	}
	res, err := Run(context.Background(), Config{
		Targets:  []Target{target},
		Conns:    10,
		Sources:  3,
		Rooms:    1,
		Rate:     50,
		Size:     200,
		Duration: 300 * time.Millisecond,
		Settle:   time.Millisecond,
		Drain:    300 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Established != 6 || res.DialErrors["http 429"] != 4 {
		t.Errorf("established %d, dial errors %v; want 6 and 4 refused with 429", res.Established, res.DialErrors)
	}
	if res.ErrorFrames["message_too_large"] == 0 || res.Closes[1008] != 1 {
		t.Errorf("error frames %v, closes %v; want message_too_large and one 1008", res.ErrorFrames, res.Closes)
	}
}

func TestRealMainRefusesRemote(t *testing.T) {
	t.Parallel()
	var out, log bytes.Buffer
	err := realMain([]string{"-url", "ws://192.0.2.1:8080/ws", "-conns", "1"}, &out, &log)
	if err == nil || !strings.Contains(err.Error(), "not a loopback") {
		t.Fatalf("err = %v, want a refusal", err)
	}
}

// TestRunHoldsIdleConnections opens connections that join no room and
// sends nothing, as the connection-count measurement does.
func TestRunHoldsIdleConnections(t *testing.T) {
	srv := startNode(t, openLimits, wshandler.Config{})
	target, err := ParseTarget(srv.URL, false, "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	res, err := Run(context.Background(), Config{
		Targets: []Target{target}, Conns: 20, Sources: 2, Rate: 100,
		Duration: 100 * time.Millisecond, Settle: time.Millisecond, Drain: time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Established != 20 || res.Sent != 0 || res.Targets[0].Established != 20 {
		t.Fatalf("established %d, sent %d", res.Established, res.Sent)
	}
	var out bytes.Buffer
	WriteReport(&out, res)
	if !strings.Contains(out.String(), "held idle") {
		t.Errorf("report:\n%s", out.String())
	}
}

// TestRunSpreadsOverTargets checks that connections go to every target in
// turn and that each target's memory is read on its own.
func TestRunSpreadsOverTargets(t *testing.T) {
	var targets []Target
	for i := 0; i < 2; i++ {
		srv := startNode(t, openLimits, wshandler.Config{})
		tg, err := ParseTarget(srv.URL, false, "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		targets = append(targets, tg)
	}
	res, err := Run(context.Background(), Config{
		Targets: targets, Conns: 11, Sources: 3,
		Duration: 50 * time.Millisecond, Settle: time.Millisecond, Drain: time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Established != 11 || res.Targets[0].Established != 6 || res.Targets[1].Established != 5 {
		t.Fatalf("established %d: %d and %d per target", res.Established, res.Targets[0].Established, res.Targets[1].Established)
	}
	for i, tr := range res.Targets {
		if tr.ScrapeErr != nil || tr.Connected.At.IsZero() {
			t.Errorf("target %d: metrics %v", i, tr.ScrapeErr)
		}
	}
}
