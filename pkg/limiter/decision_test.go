package limiter

import (
	"slices"
	"testing"
)

// TestListsAreFreshCopies checks that Reasons and ViolationTypes hand out
// a new slice each time, so that a caller who sorts or overwrites one
// changes neither the next caller's list nor the order Statistics counts
// denials in, and that each lists its values once.
func TestListsAreFreshCopies(t *testing.T) {
	t.Parallel()
	r := Reasons()
	if len(r) != numReasons || r[0] != ReasonOK || !slices.Contains(r, ReasonClassRateExceeded) {
		t.Fatalf("Reasons() = %v", r)
	}
	r[0] = "changed"
	if got := Reasons()[0]; got != ReasonOK {
		t.Fatalf("a caller's write reached the next Reasons(): %q", got)
	}
	if i := reasonIndex(ReasonOK); i != 0 {
		t.Fatalf("a caller's write moved ReasonOK in the counters: index %d", i)
	}
	v := ViolationTypes()
	if !slices.Contains(v, ViolationConnectionRate) || !slices.Contains(v, ViolationClassRate) {
		t.Fatalf("ViolationTypes() = %v", v)
	}
	v[0] = "changed"
	if got := ViolationTypes()[0]; got != ViolationConnectionRate {
		t.Fatalf("a caller's write reached the next ViolationTypes(): %q", got)
	}
	if n := len(slices.Compact(slices.Sorted(slices.Values(Reasons())))); n != numReasons {
		t.Errorf("Reasons lists %d distinct values in %d", n, numReasons)
	}
	if n := len(slices.Compact(slices.Sorted(slices.Values(ViolationTypes())))); n != len(violationTypes) {
		t.Errorf("ViolationTypes lists %d distinct values in %d", n, len(violationTypes))
	}
}
