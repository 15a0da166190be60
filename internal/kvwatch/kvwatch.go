// Package kvwatch stops JetStream KV watchers without leaking goroutines.
package kvwatch

import (
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Stop stops w and drains its updates until the watcher closes them, for
// at most timeout. The watcher's delivery goroutine blocks on a full
// updates channel, so a watcher stopped while updates are still arriving
// (a busy bucket) would otherwise leave that goroutine blocked forever.
func Stop(w jetstream.KeyWatcher, timeout time.Duration) {
	_ = w.Stop()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		select {
		case _, ok := <-w.Updates():
			if !ok {
				return
			}
		case <-deadline.C:
			return
		}
	}
}
