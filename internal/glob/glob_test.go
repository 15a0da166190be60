package glob

import "testing"

func TestMatch(t *testing.T) {
	t.Parallel()
	cases := []struct {
		p, s string
		want bool
	}{
		{"*", "", true}, {"*", "abc", true}, {"a*", "abc", true}, {"a*", "ba", false},
		{"*c", "abc", true}, {"a*c", "ac", true}, {"a*c", "abcbd", false}, {"a*b*c", "axxbyyc", true},
		{"abc", "abc", true}, {"abc", "abcd", false}, {"**", "x", true}, {"a?c", "abc", false},
		{"*aaaaab", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false},
		{"a*", "a", true}, {"a*c", "abbbc", true}, {"a*c", "abbb", false}, {"*b*", "abc", true},
		{"*b*", "ac", false}, {"abc", "abd", false}, {"a**", "a", true}, {"*a*a*a", "aaaa", true},
		{"*a*a*a", "aab", false}, {"", "", true}, {"", "a", false},
	}
	for _, tc := range cases {
		if got := Match(tc.p, tc.s); got != tc.want {
			t.Errorf("Match(%q, %q) = %v", tc.p, tc.s, got)
		}
	}
}
