package wait

import (
	"testing"
	"time"
)

func TestForReturnsOnceTheConditionHolds(t *testing.T) {
	n := 0
	took := For(t, 5*time.Second, "three polls", func() bool { n++; return n == 3 })
	if n != 3 || took < 2*Interval {
		t.Fatalf("polled %d times in %v, want 3 polls and at least %v", n, took, 2*Interval)
	}
}

// fatalRecorder is a testing.TB whose Fatalf records instead of stopping.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (r *fatalRecorder) Helper() {}

func (r *fatalRecorder) Fatalf(format string, args ...any) { r.msg = format }

func TestForFailsAfterTheTimeout(t *testing.T) {
	r := &fatalRecorder{TB: t}
	polls := 0
	// After Fatalf the condition holds, so For returns instead of looping.
	For(r, 30*time.Millisecond, "never", func() bool { polls++; return r.msg != "" })
	if r.msg == "" || polls < 2 {
		t.Fatalf("no failure after the timeout (polls %d)", polls)
	}
}
