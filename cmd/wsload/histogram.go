package main

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// subBuckets is the number of linear buckets in each power of two of a
// Histogram, which bounds a recorded value's relative error to 1/64.
const (
	subBits    = 6
	subBuckets = 1 << subBits
	histSize   = (64 - subBits + 1) * subBuckets
)

// Histogram counts durations in log-linear buckets: exact below 64 ns,
// then 64 buckets per power of two, so a quantile it reports is at most
// 1.6% above the true value and never below it. Its memory is fixed
// whatever the number of samples.
//
// A Histogram is safe for concurrent use; the zero value is empty and
// ready.
type Histogram struct {
	counts [histSize]atomic.Uint64
	n      atomic.Uint64
	max    atomic.Int64
}

// bucketOf returns the bucket index of v (v ≥ 0).
func bucketOf(v uint64) int {
	if v < subBuckets {
		return int(v)
	}
	e := bits.Len64(v) - subBits - 1 // v>>e is in [64, 128)
	return (e+1)*subBuckets + int(v>>e) - subBuckets
}

// upperOf returns the largest value that falls in bucket i.
func upperOf(i int) uint64 {
	if i < subBuckets {
		return uint64(i)
	}
	e := i/subBuckets - 1
	m := uint64(i%subBuckets + subBuckets)
	return (m+1)<<e - 1
}

// Record adds one duration; a negative one counts as zero.
func (h *Histogram) Record(d time.Duration) {
	if d < 0 {
		d = 0
	}
	h.counts[bucketOf(uint64(d))].Add(1)
	h.n.Add(1)
	for {
		m := h.max.Load()
		if int64(d) <= m || h.max.CompareAndSwap(m, int64(d)) {
			return
		}
	}
}

// Count returns the number of durations recorded.
func (h *Histogram) Count() uint64 { return h.n.Load() }

// Max returns the largest duration recorded.
func (h *Histogram) Max() time.Duration { return time.Duration(h.max.Load()) }

// Quantile returns the smallest bucket bound at or below which a fraction
// q of the recorded durations fall (0 < q ≤ 1), capped at Max; zero when
// nothing was recorded.
func (h *Histogram) Quantile(q float64) time.Duration {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	rank := uint64(q*float64(n) + 0.999999)
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= rank {
			return min(time.Duration(upperOf(i)), h.Max())
		}
	}
	return h.Max()
}
