package limiter

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

type step struct {
	now        time.Time
	n          int64
	wantOK     bool
	wantRemain int64
	wantRetry  time.Duration
}

func runSteps(t *testing.T, s Spec, b *Bucket, steps []step) {
	t.Helper()
	for i, st := range steps {
		r := b.TakeAt(s, st.now, st.n)
		if r.OK != st.wantOK || r.Remaining != st.wantRemain || r.RetryAfter != st.wantRetry {
			t.Fatalf("step %d (t0+%v, n=%d): got ok=%v remaining=%d retry=%v, want ok=%v remaining=%d retry=%v",
				i, st.now.Sub(t0), st.n, r.OK, r.Remaining, r.RetryAfter, st.wantOK, st.wantRemain, st.wantRetry)
		}
	}
}

func TestBucketSteps(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		spec  Spec
		steps []step
	}{
		{"ten a minute", PerMinute(10), []step{
			{at(0), 1, true, 9, 0},
			{at(0), 8, true, 1, 0},
			{at(0), 1, true, 0, 0},
			{at(0), 1, false, 0, 6 * time.Second},
			{at(3 * time.Second), 1, false, 0, 3 * time.Second},
			{at(6*time.Second - 1), 1, false, 0, 1},
			{at(6 * time.Second), 1, true, 0, 0},
			{at(6 * time.Second), 2, false, 0, 12 * time.Second},
			{at(time.Hour), 10, true, 0, 0},
		}},
		{"burst apart from rate", Spec{Limit: 60, Per: time.Minute, Burst: 3}, []step{
			{at(0), 3, true, 0, 0},
			{at(0), 1, false, 0, time.Second},
			{at(500 * time.Millisecond), 1, false, 0, 500 * time.Millisecond},
			{at(10 * time.Second), 3, true, 0, 0}, // refill capped at the burst
			{at(10 * time.Second), 1, false, 0, time.Second},
		}},
		{"more than the burst never passes", PerMinute(5), []step{
			{at(0), 6, false, 5, Never},
			{at(0), 5, true, 0, 0},
		}},
		{"denied takes nothing", PerMinute(2), []step{
			{at(0), 2, true, 0, 0},
			{at(0), 1, false, 0, 30 * time.Second},
			{at(0), 1, false, 0, 30 * time.Second},
			{at(30 * time.Second), 1, true, 0, 0},
		}},
		{"per second", Spec{Limit: 1000, Per: time.Second}, []step{
			{at(0), 1000, true, 0, 0},
			{at(0), 1, false, 0, time.Millisecond},
			{at(time.Millisecond), 1, true, 0, 0},
		}},
		{"unlimited", Spec{}, []step{
			{at(0), 1 << 40, true, math.MaxInt64, 0},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var b Bucket
			runSteps(t, tt.spec, &b, tt.steps)
		})
	}
}

// A clock that steps backwards must never credit the same interval twice
// (the counter-example is a limiter that moves its last time backwards and
// then refills from there again).
func TestBucketClockBackwards(t *testing.T) {
	t.Parallel()
	s := PerMinute(60) // one a second
	var b Bucket
	runSteps(t, s, &b, []step{
		{at(10 * time.Second), 60, true, 0, 0},
		{at(11 * time.Second), 1, true, 0, 0}, // one refilled
		{at(5 * time.Second), 1, false, 0, time.Second},
		{at(11 * time.Second), 1, false, 0, time.Second}, // the second 10→11 is not credited again
		{at(12 * time.Second), 1, true, 0, 0},
	})
}

func TestBucketRefundAndDebit(t *testing.T) {
	t.Parallel()
	s := PerMinute(10)
	var b Bucket
	b.TakeAt(s, at(0), 10)
	b.RefundAt(s, at(0), 4)
	if got := b.TokensAt(s, at(0)); got != 4 {
		t.Fatalf("tokens after refund = %v, want 4", got)
	}
	b.RefundAt(s, at(0), 100)
	if got := b.TokensAt(s, at(0)); got != 10 {
		t.Fatalf("refund overfilled: tokens = %v, want 10", got)
	}
	b.DebitAt(s, at(0), 25) // 15 in debt
	if got := b.TokensAt(s, at(0)); got != -15 {
		t.Fatalf("tokens after debit = %v, want -15", got)
	}
	r := b.TakeAt(s, at(0), 1)
	if r.OK || r.RetryAfter != 96*time.Second {
		t.Fatalf("take in debt = %+v, want denied with 96s", r)
	}
	if got := b.FullAt(s); !got.Equal(at(150 * time.Second)) {
		t.Fatalf("FullAt = %v, want t0+150s", got.Sub(t0))
	}
}

func TestBucketOverflow(t *testing.T) {
	t.Parallel()
	// A huge limit, a huge idle gap and a huge request must not overflow.
	s := Spec{Limit: math.MaxInt64, Per: time.Nanosecond}
	var b Bucket
	if r := b.TakeAt(s, at(0), math.MaxInt64); !r.OK {
		t.Fatalf("huge take denied: %+v", r)
	}
	tiny := Spec{Limit: 1, Per: 1<<63 - 1}
	var c Bucket
	c.TakeAt(tiny, at(0), 1)
	if r := c.TakeAt(tiny, at(0), 1); r.OK || r.RetryAfter <= 0 {
		t.Fatalf("tiny rate: %+v, want a positive capped wait", r)
	}
	if got := c.FullAt(tiny); got.Before(at(0)) {
		t.Fatalf("FullAt overflowed to %v", got)
	}
	var d Bucket
	d.TakeAt(PerMinute(1), time.Unix(0, 1), 1)
	if r := d.TakeAt(PerMinute(1), time.Unix(0, math.MaxInt64), 1); !r.OK {
		t.Fatalf("take after the longest gap denied: %+v", r)
	}
}

// RetryAfter is exact: waiting it allows the request, waiting one
// nanosecond less does not.
func TestBucketRetryAfterExact(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	specs := []Spec{PerMinute(7), PerMinute(1000), {Limit: 1048576, Per: time.Minute}, {Limit: 3, Per: time.Second, Burst: 5}}
	// Random specs, many of a few tokens over odd periods of up to an
	// hour, whose waits run to hours: there the unrounded wait can lie
	// within float64 noise of a half nanosecond.
	for k := range 300 {
		s := Spec{Limit: 1 + rng.Int64N(5_000_000), Per: time.Duration(1 + rng.Int64N(int64(time.Hour))), Burst: rng.Int64N(1000)}
		if k%3 == 0 {
			s.Limit = 1 + rng.Int64N(100)
		}
		specs = append(specs, s)
	}
	for _, s := range specs {
		var b Bucket
		now := t0
		for i := 0; i < 2000; i++ {
			n := 1 + rng.Int64N(s.Capacity())
			r := b.TakeAt(s, now, n)
			if r.OK {
				now = now.Add(time.Duration(rng.Int64N(int64(s.per()/time.Duration(1+rng.Int64N(10))) + 1)))
				continue
			}
			if r.RetryAfter <= 0 || r.RetryAfter == Never {
				t.Fatalf("%+v: denied take of %d has retry %v", s, n, r.RetryAfter)
			}
			early := b
			if r2 := early.TakeAt(s, now.Add(r.RetryAfter-1), n); r2.OK {
				t.Fatalf("%+v: take of %d allowed 1ns before RetryAfter %v", s, n, r.RetryAfter)
			}
			now = now.Add(r.RetryAfter)
			if r2 := b.TakeAt(s, now, n); !r2.OK {
				t.Fatalf("%+v: take of %d denied after waiting RetryAfter %v: %+v", s, n, r.RetryAfter, r2)
			}
		}
	}
}

func TestSpecValidate(t *testing.T) {
	t.Parallel()
	for _, s := range []Spec{{Limit: -1}, {Burst: -1}, {Limit: 1, Per: -1}, {Burst: 3}} {
		if err := s.Validate(); err == nil {
			t.Errorf("%+v: no error", s)
		}
	}
	if err := PerMinute(5).Validate(); err != nil {
		t.Fatal(err)
	}
}

// TestRoundPositiveIsRound checks roundPositive against math.Round on
// halves, values just below and above them, large values and the
// special ones.
func TestRoundPositiveIsRound(t *testing.T) {
	t.Parallel()
	xs := []float64{math.SmallestNonzeroFloat64, 0.5, 1.5, 2.5, 1 << 52, 1<<53 + 2, 1e300, math.MaxFloat64, math.Inf(1)}
	for _, x := range []float64{0.5, 1.5, 2.5, 1e6 + 0.5, 4503599627370495.5} {
		xs = append(xs, math.Nextafter(x, 0), math.Nextafter(x, math.Inf(1)))
	}
	r := rand.New(rand.NewPCG(3, 5))
	for range 100_000 {
		xs = append(xs, r.Float64()*1e12, r.ExpFloat64())
	}
	for _, x := range xs {
		if got, want := first(roundPositive(x)), math.Round(x); got != want {
			t.Fatalf("roundPositive(%v) = %v, want %v", x, got, want)
		}
	}
	if !math.IsNaN(first(roundPositive(math.NaN()))) {
		t.Fatal("roundPositive(NaN) is not NaN")
	}
}

func first(a, _ float64) float64 { return a }
