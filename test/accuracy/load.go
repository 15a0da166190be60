package main

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

var keySeq atomic.Int64

func freshKey() limiter.Key {
	return limiter.Key{Kind: limiter.KindMessages, ID: fmt.Sprintf("client-%d", keySeq.Add(1))}
}

// tally is what one run offered and admitted, with the arrivals (in the
// deciding node's clock) to replay through the ideal bucket.
type tally struct {
	mu       sync.Mutex
	arrivals []int64
	allowed  int64
}

// offer sends weights[i] of rate decisions per second on key to node i
// for d, each at the node's clock.
func offer(ns *nodeSet, key limiter.Key, spec limiter.Spec, rate float64, d time.Duration, weights []float64, t *tally) {
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(d)
	for i, s := range ns.stores {
		if weights[i] == 0 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			interval := time.Duration(float64(time.Second) / (rate * weights[i]))
			next := start
			ctx := context.Background()
			maxN := int(rate*weights[i]*d.Seconds()) + 1
			var local []int64
			var allowed int64
			for len(local) < maxN {
				now := time.Now()
				if !now.Before(end) {
					break
				}
				if now.Before(next) {
					time.Sleep(min(next.Sub(now), end.Sub(now)))
					continue
				}
				for !next.After(now) && len(local) < maxN {
					at := ns.clocks[i].Now()
					local = append(local, at.UnixNano()-ns.clocks[i].off.Load()+ns.common())
					if r, err := s.Take(ctx, key, spec, at, 1); err == nil && r.OK {
						allowed++
					}
					next = next.Add(interval)
				}
			}
			t.mu.Lock()
			t.arrivals = append(t.arrivals, local...)
			t.allowed += allowed
			t.mu.Unlock()
		}()
	}
	wg.Wait()
}

// common is the offset every node's clock shares (idle time), without
// the per-node skew: the ideal bucket's time.
func (ns *nodeSet) common() int64 {
	var sum int64
	for _, c := range ns.clocks {
		sum += c.off.Load()
	}
	return sum / int64(len(ns.clocks))
}

// ideal replays the arrivals, in time order, through one exact bucket.
func ideal(spec limiter.Spec, arrivals []int64) int64 {
	slices.Sort(arrivals)
	var b limiter.Bucket
	var n int64
	for _, t := range arrivals {
		if b.TakeAt(spec, time.Unix(0, t), 1).OK {
			n++
		}
	}
	return n
}

func evenWeights(n int) []float64 {
	w := make([]float64, n)
	for i := range w {
		w[i] = 1 / float64(n)
	}
	return w
}

func hotWeights(n int) []float64 {
	if n == 1 {
		return []float64{1}
	}
	w := make([]float64, n)
	w[0] = 0.9
	for i := 1; i < n; i++ {
		w[i] = 0.1 / float64(n-1)
	}
	return w
}

func oneWeights(n int) []float64 {
	w := make([]float64, n)
	w[0] = 1
	return w
}

// meter measures a row's cost: KV writes, watch deliveries per node and
// the process's CPU.
type meter struct {
	ns                                     *nodeSet
	start                                  time.Time
	writeCounts, cw, watch, down, restarts int64
	cpu                                    time.Duration
}

func startMeter(ns *nodeSet) *meter {
	m := &meter{ns: ns, start: time.Now(), cpu: cpuTime()}
	m.writeCounts, m.cw, m.watch, m.down, m.restarts = ns.totals()
	return m
}

type cost struct {
	elapsed       time.Duration
	writesPerSec  float64
	counterWrites int64
	watchPerNode  float64 // watch deliveries per node per second
	cpuPct        float64 // process CPU over wall time, percent of one core
	downs         int64   // times a node entered its fail mode
	restarts      int64   // watches restarted
}

func (m *meter) stop() cost {
	el := time.Since(m.start)
	w, cw, watch, down, restarts := m.ns.totals()
	n := float64(len(m.ns.stores))
	return cost{elapsed: el, writesPerSec: float64(w-m.writeCounts) / el.Seconds(), counterWrites: cw - m.cw, downs: down - m.down, restarts: restarts - m.restarts,
		watchPerNode: float64(watch-m.watch) / n / el.Seconds(),
		cpuPct:       100 * float64(cpuTime()-m.cpu) / float64(el)}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// sparseRun is what a sparse run offered and admitted, per key.
type sparseRun struct {
	arrivals [][]int64
	admitted []int64
}

// sparse offers keys keys (named from base) decisions at perKey per
// second each, key k through node k mod N, for d.
func sparse(ns *nodeSet, base int64, keys int, spec limiter.Spec, perKey float64, d time.Duration) sparseRun {
	n := len(ns.stores)
	perNode := make([][]int, n)
	for k := range keys {
		perNode[k%n] = append(perNode[k%n], k)
	}
	run := sparseRun{arrivals: make([][]int64, keys), admitted: make([]int64, keys)}
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(d)
	for i, s := range ns.stores {
		mine := perNode[i]
		if len(mine) == 0 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			interval := time.Duration(float64(time.Second) / (perKey * float64(len(mine))))
			next := start
			ctx := context.Background()
			maxN := int(perKey*float64(len(mine))*d.Seconds()) + 1
			for j := 0; j < maxN; {
				now := time.Now()
				if !now.Before(end) {
					break
				}
				if now.Before(next) {
					time.Sleep(min(next.Sub(now), end.Sub(now)))
					continue
				}
				for !next.After(now) && j < maxN {
					k := mine[j%len(mine)]
					key := limiter.Key{Kind: limiter.KindMessages, ID: fmt.Sprintf("sparse-%d", base+int64(k))}
					at := ns.clocks[i].Now()
					run.arrivals[k] = append(run.arrivals[k], at.UnixNano())
					if r, err := s.Take(ctx, key, spec, at, 1); err == nil && r.OK {
						run.admitted[k]++
					}
					next = next.Add(interval)
					j++
				}
			}
		}()
	}
	wg.Wait()
	return run
}
