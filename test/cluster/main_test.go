package cluster

import (
	"fmt"
	"os"
	"testing"

	"github.com/ratethrottle/ratethrottle/internal/wait"

	"github.com/ratethrottle/ratethrottle/internal/nodetest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	code := m.Run()
	nodetest.Cleanup()
	if code == 0 {
		// Every scenario checks its own goroutines; this catches what a
		// helper shared between them might leave.
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

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
