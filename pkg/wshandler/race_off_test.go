//go:build !race

package wshandler

// raceEnabled reports whether the race detector is on.
const raceEnabled = false
