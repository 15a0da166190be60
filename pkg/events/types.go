package events

import "slices"

// Types returns every event type, in a stable order, in a new slice that
// the caller may change.
func Types() []Type { return slices.Clone(types[:]) }
