// Package glob matches room names against the patterns of room rules, for
// the WebSocket handler and the policy document alike.
package glob

// Match reports whether name matches pattern, where '*' matches any run of
// bytes (including none) and every other byte matches itself. It runs in
// O(len(pattern)·len(name)) at worst.
func Match(pattern, name string) bool {
	p, n := 0, 0
	star, mark := -1, 0
	for n < len(name) {
		switch {
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, n
			p++
		case p < len(pattern) && pattern[p] == name[n]:
			p++
			n++
		case star >= 0:
			p = star + 1
			mark++
			n = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}
