package events_test

import (
	"slices"
	"testing"

	"github.com/ratethrottle/ratethrottle/pkg/events"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

// TestTypes checks that every violation type of the limiter is an event
// type of the same name, that the ban types follow, and that Types hands
// out a new slice each time, so that a caller's write reaches no one else.
func TestTypes(t *testing.T) {
	t.Parallel()
	types := events.Types()
	vts := limiter.ViolationTypes()
	if len(types) != len(vts)+2 {
		t.Fatalf("Types() = %v: want the %d violation types, ban and unban", types, len(vts))
	}
	for i, vt := range vts {
		if types[i] != events.Type(vt) || !types[i].IsViolation() {
			t.Errorf("Types()[%d] = %q, want violation type %q", i, types[i], vt)
		}
	}
	if tail := types[len(vts):]; !slices.Equal(tail, []events.Type{events.TypeBan, events.TypeUnban}) {
		t.Errorf("Types() ends in %v, want ban and unban", tail)
	}
	types[0] = "changed"
	if got := events.Types()[0]; got != events.TypeConnectionRate {
		t.Errorf("a caller's write reached the next Types(): %q", got)
	}
}
