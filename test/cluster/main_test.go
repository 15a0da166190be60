package cluster

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// The node binary is built once, on first use, into a temporary directory
// that TestMain removes.
var (
	buildOnce  sync.Once
	buildDir   string
	nodeBinary string
	buildErr   error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
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

// binary returns the path of the node binary (cmd/node), building it on
// first use.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "ratethrottle-cluster-bin-")
		if buildErr != nil {
			return
		}
		nodeBinary = filepath.Join(buildDir, "node")
		cmd := exec.Command("go", "build", "-o", nodeBinary, "github.com/ratethrottle/ratethrottle/cmd/node")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/node: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return nodeBinary
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

// waitFor polls cond every 10 ms until it holds, and returns how long that
// took; after timeout it fails the test naming what it waited for.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

// checkGoroutines records the goroutines running now and, at cleanup
// (after every cleanup registered later), fails the test if others are
// still running. Call it first in a scenario.
func checkGoroutines(t *testing.T) {
	t.Helper()
	base := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, base) })
}
