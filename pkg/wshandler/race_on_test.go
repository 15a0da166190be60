//go:build race

package wshandler

// raceEnabled reports whether the race detector is on: under it sync.Pool
// drops items at random, so allocation counts are not asserted.
const raceEnabled = true
