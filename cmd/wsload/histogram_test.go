package main

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestBucketBounds(t *testing.T) {
	t.Parallel()
	// Every value lies in its bucket, whose upper bound is within 1/64 of
	// it, and buckets are ordered.
	r := rand.New(rand.NewPCG(1, 2))
	for n := 0; n < 100_000; n++ {
		v := r.Uint64() >> r.IntN(64)
		i := bucketOf(v)
		up := upperOf(i)
		if up < v {
			t.Fatalf("value %d: bucket %d upper bound %d is below it", v, i, up)
		}
		if i > 0 && upperOf(i-1) >= v {
			t.Fatalf("value %d: lower bucket %d already covers it", v, i-1)
		}
		if float64(up-v) > float64(v)/64+1 {
			t.Fatalf("value %d: bound %d is more than 1/64 above", v, up)
		}
		if i >= histSize {
			t.Fatalf("value %d: bucket %d out of range", v, i)
		}
	}
	if got := bucketOf(1<<64 - 1); got != histSize-1 {
		t.Fatalf("largest value in bucket %d, want %d", got, histSize-1)
	}
}

func TestHistogramQuantiles(t *testing.T) {
	t.Parallel()
	var h Histogram
	if h.Quantile(0.5) != 0 || h.Count() != 0 {
		t.Fatal("empty histogram is not zero")
	}
	// 1..10000 µs, shuffled: the q-quantile is q*10000 µs.
	vals := make([]time.Duration, 10_000)
	for i := range vals {
		vals[i] = time.Duration(i+1) * time.Microsecond
	}
	rand.New(rand.NewPCG(3, 4)).Shuffle(len(vals), func(i, j int) { vals[i], vals[j] = vals[j], vals[i] })
	for _, v := range vals {
		h.Record(v)
	}
	h.Record(-time.Second) // counts as zero
	slices.Sort(vals)
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{
		{0.5, 5000 * time.Microsecond},
		{0.99, 9900 * time.Microsecond},
		{0.999, 9990 * time.Microsecond},
		{1, 10 * time.Millisecond},
	} {
		got := h.Quantile(tc.q)
		if got < tc.want || float64(got-tc.want) > float64(tc.want)/64 {
			t.Errorf("Quantile(%v) = %v, want %v within +1/64", tc.q, got, tc.want)
		}
	}
	if h.Max() != 10*time.Millisecond {
		t.Errorf("Max = %v", h.Max())
	}
	if h.Count() != 10_001 {
		t.Errorf("Count = %d", h.Count())
	}
}

func TestStamp(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		frame string
		want  int64
		ok    bool
	}{
		{`{"type":"message","room":"wsload-1","from":"n-1","data":{"t":1700000000123456789,"p":"xx"}}`, 1700000000123456789, true},
		{`{"type":"message","room":"r","from":"n-1","data":{"x":1}}`, 0, false},
		{`{"type":"message","room":"r","from":"n-1","data":{"t":}}`, 0, false},
	} {
		got, ok := stamp([]byte(tc.frame))
		if got != tc.want || ok != tc.ok {
			t.Errorf("stamp(%s) = %d, %v; want %d, %v", tc.frame, got, ok, tc.want, tc.ok)
		}
	}
}
