package main

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestDashboardHub checks the hub alone: no frame is built while nobody
// watches, a first viewer gets one at once, ten viewers share one build
// per interval, and run ends with its context.
func TestDashboardHub(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	const interval = 40 * time.Millisecond
	var builds atomic.Int64
	h := newDashboardHub(interval, func(context.Context) []byte {
		return []byte{byte(builds.Add(1))}
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.run(ctx)
	}()
	defer func() {
		cancel()
		<-done
	}()

	idle := time.NewTimer(5 * interval)
	<-idle.C
	if n := builds.Load(); n != 0 {
		t.Fatalf("%d frames built with no viewer", n)
	}

	var chans []<-chan []byte
	for range 10 {
		ch, unsubscribe := h.subscribe()
		defer unsubscribe()
		chans = append(chans, ch)
	}
	start := time.Now()
	// Each viewer takes five frames, each newer than the one before.
	for i, ch := range chans {
		last := byte(0)
		for range 5 {
			select {
			case f := <-ch:
				if f[0] <= last {
					t.Fatalf("viewer %d got frame %d after %d", i, f[0], last)
				}
				last = f[0]
			case <-time.After(5 * time.Second):
				t.Fatalf("viewer %d got no frame in 5 s", i)
			}
		}
	}
	elapsed, n := time.Since(start), builds.Load()
	if limit := int64(elapsed/interval) + 1; n > limit {
		t.Errorf("10 viewers: %d builds in %v, want at most %d (one per %v)", n, elapsed, limit, interval)
	}
}
