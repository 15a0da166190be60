// Package wait polls a condition with a deadline, for tests that wait on
// servers, processes and clusters instead of sleeping and hoping.
package wait

import (
	"testing"
	"time"
)

// Interval is how often For polls.
const Interval = 10 * time.Millisecond

// For polls cond every Interval until it holds and returns how long that
// took; once timeout has passed it fails t, naming what it waited for.
func For(t testing.TB, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(Interval)
	}
	return time.Since(start)
}
