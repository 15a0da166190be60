package main

import (
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestAccuracyMatrix runs a reduced matrix (one server; 3 nodes, and 10
// without the race detector; 2 s steady rows; 1,000 sparse keys) and holds
// each row to a tolerance. The tolerances are the goals where the CI
// machine (2 shared cores, often under -race, which slows each decision
// several times and so stretches the time counters take to cross) meets
// them run after run, and wider where it does not, by the margin stated;
// `go run ./test/accuracy` prints the full matrix against the goals.
func TestAccuracyMatrix(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	o := withMatrix(options{sync: 50 * time.Millisecond, overload: 10, cold: 200 * time.Millisecond, limit: 200}, "ci")
	o.nodes = []int{3}
	if !raceEnabled {
		o.nodes = []int{3, 10}
	}
	o.duration, o.sparseKeys = 2*time.Second, 1000
	var log strings.Builder
	res, _, err := runMatrix(o, &log)
	if err != nil {
		t.Fatal(err)
	}
	printTable(os.Stderr, o, res)
	for _, r := range res {
		x := r.ratio()
		// Every row: a store that admits next to nothing, or more than
		// twice the bucket, fails.
		lo, hi := 0.5, 2.0
		switch {
		case r.row == "cold", r.row == "cold, clocks ±1s":
			lo, hi = 0.85, 1.15 // goal 0.95–1.10; a 200 ms row is ~240 tokens, a few tokens swing it
		case r.row == "cold-one":
			lo, hi = 0.95, 1.10
		case r.row == "even", r.row == "even, clocks ±1s":
			// Goal 1.02 over 3 s. A 2 s row starts on a fresh key, and
			// its cold start weighs more: 0.99–1.05 measured without
			// -race.
			lo, hi = 0.90, 1.08
		case r.row == "hot":
			lo, hi = 0.95, 1.08 // as even
		case r.row == "idle 65s, resume":
			lo, hi = 0.90, 1.10
			if r.goal == "not swept" {
				t.Errorf("%d nodes: the sweep did not drop the idle buckets", r.nodes)
			}
		case strings.HasPrefix(r.row, "sparse"):
			lo, hi = 0.90, 1.02
			if r.worst > 1.10 || r.writesPerDecision() > 0.1 {
				t.Errorf("%d nodes, %s: worst key %.3f (≤ 1.10), %.3f counter writes per decision (≤ 0.1)",
					r.nodes, r.row, r.worst, r.writesPerDecision())
			}
		}
		if x < lo || x > hi {
			t.Errorf("%d nodes, %s: admitted/ideal %.3f outside [%.2f, %.2f]", r.nodes, r.row, x, lo, hi)
		}
	}
}
