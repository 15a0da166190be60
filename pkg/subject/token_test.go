package subject_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/ratethrottle/ratethrottle/pkg/subject"
)

func TestTokenIsSafeAndDistinct(t *testing.T) {
	t.Parallel()
	inputs := []string{
		"", " ", "a", "1.2.3.4", "::1", "[2001:db8::1]:443", "a.b", "*", ">", "a b\tc\n", "user.*.>",
		"日本語", "émoji-🙂", strings.Repeat("x", 48), strings.Repeat("x", 49), strings.Repeat("long.id*>", 1200),
		"=", "\x00", "$KV.x", "MjAzLjAuMTEzLjU",
	}
	seen := map[string]string{}
	for _, in := range inputs {
		tok := subject.Token(in)
		if tok == "" || len(tok) > 64 || strings.Trim(tok, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_=") != "" {
			t.Errorf("Token(%.20q) = %q: not one safe token", in, tok)
		}
		if again := subject.Token(in); again != tok {
			t.Errorf("Token(%.20q) = %q, then %q", in, tok, again)
		}
		if prev, dup := seen[tok]; dup {
			t.Errorf("Token(%.20q) = Token(%.20q) = %q", in, prev, tok)
		}
		seen[tok] = in
	}
	if got := subject.Token("203.0.113.5"); got != "MjAzLjAuMTEzLjU" {
		t.Errorf("Token(203.0.113.5) = %q", got)
	}
}

func ExampleToken() {
	fmt.Println(subject.Token("203.0.113.5"))
	fmt.Println(subject.Token("user.*.>"))
	fmt.Println(subject.Token(""))
	fmt.Println(len(subject.Token(strings.Repeat("x", 49))))
	// Output:
	// MjAzLjAuMTEzLjU
	// dXNlci4qLj4
	// =
	// 44
}
