package cluster

import (
	"os"
	"testing"

	"github.com/ratethrottle/ratethrottle/internal/wait"

	"github.com/ratethrottle/ratethrottle/internal/nodetest"
	"go.uber.org/goleak"
)

// TestMain checks, once every scenario has passed, that nothing a helper
// shared between them started is left running (each scenario checks its
// own goroutines).
func TestMain(m *testing.M) { nodetest.Main(m) }

// long reports whether the long versions of the scenarios run
// (RATETHROTTLE_LONG=1).
func long() bool { return os.Getenv("RATETHROTTLE_LONG") == "1" }

// pick returns short in the default run and long under RATETHROTTLE_LONG=1.
func pick[T any](short, longer T) T {
	if long() {
		return longer
	}
	return short
}

// waitFor polls a condition with a deadline (internal/wait).
var waitFor = wait.For

// checkGoroutines records the goroutines running now and, at cleanup
// (after every cleanup registered later), fails the test if others are
// still running. Call it first in a scenario.
func checkGoroutines(t *testing.T) {
	t.Helper()
	base := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, base) })
}
