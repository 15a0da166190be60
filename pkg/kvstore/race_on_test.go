//go:build race

package kvstore

// raceEnabled reports whether the race detector is on: throughput figures
// are not asserted under it.
const raceEnabled = true
