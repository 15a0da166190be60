package policy

import (
	"time"

	"github.com/ratethrottle/ratethrottle/pkg/events"
)

// EventType is the "type" of a ChangedEvent.
const EventType = "policy_changed"

// ChangedEvent is published on ChangedSubject after every successful
// Store.Put, as JSON. It names who changed the policy and where; it never
// carries the document itself (read it with Store.Get at Revision).
type ChangedEvent struct {
	// V is the schema version, 1.
	V int `json:"v"`
	// Type is EventType.
	Type string `json:"type"`
	// Time is when the change was written, in UTC.
	Time time.Time `json:"time"`
	// Node is the node that wrote it.
	Node string `json:"node"`
	// Who is the author the writer gave (an operator, a tool).
	Who string `json:"who"`
	// Revision is the new revision; PreviousRevision the one replaced (0
	// for the first document).
	Revision         uint64 `json:"revision"`
	PreviousRevision uint64 `json:"previous_revision"`
	// Changed are the paths that differ from the previous revision (Diff).
	Changed []string `json:"changed"`
}

// ChangedSubject returns the subject of policy_changed events under an
// events prefix: "<prefix>.policy.changed", with events.DefaultPrefix for
// an empty prefix. It sits beside the violation and ban subjects of
// package events, so one subscription to "<prefix>.>" sees them all.
func ChangedSubject(prefix string) string {
	if prefix == "" {
		prefix = events.DefaultPrefix
	}
	return prefix + ".policy.changed"
}
