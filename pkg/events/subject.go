package events

import (
	"strings"

	"github.com/ratethrottle/ratethrottle/pkg/subject"
)

// DefaultPrefix is the subject prefix used when a Config leaves it empty.
const DefaultPrefix = "ratethrottle"

// typeToken returns the subject token of an event type: the type itself
// when it is made of [a-z0-9_-] (every type this package defines is), else
// "=" and subject.Token of it.
func typeToken(t Type) string {
	if t != "" && safeToken(string(t)) {
		return string(t)
	}
	return "=" + subject.Token(string(t)) // "=" keeps it apart from plain types
}

func safeToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Subjects builds every subject this package uses from one prefix. The
// zero Subjects uses DefaultPrefix.
//
//	<prefix>.violations.<type>.<clientToken>   violation events
//	<prefix>.bans.<clientToken>                ban and unban events
//
// where clientToken is subject.Token(client).
type Subjects struct {
	// Prefix is the first token or tokens of every subject, for example
	// "ratethrottle" or "prod.ratethrottle". Empty means DefaultPrefix.
	Prefix string
}

func (s Subjects) prefix() string {
	if s.Prefix == "" {
		return DefaultPrefix
	}
	return s.Prefix
}

// Violation returns the subject of a violation of type t by client.
func (s Subjects) Violation(t Type, client string) string {
	return s.prefix() + ".violations." + typeToken(t) + "." + subject.Token(client)
}

// Ban returns the subject of ban and unban events about client.
func (s Subjects) Ban(client string) string {
	return s.prefix() + ".bans." + subject.Token(client)
}

// Event returns the subject an event is published on: Ban for ban and
// unban events, Violation for the others.
func (s Subjects) Event(e *Event) string {
	if e.Type == TypeBan || e.Type == TypeUnban {
		return s.Ban(e.Client)
	}
	return s.Violation(e.Type, e.Client)
}

// AllViolations returns the wildcard subject of every violation event,
// "<prefix>.violations.>".
func (s Subjects) AllViolations() string { return s.prefix() + ".violations.>" }

// ViolationsOfType returns the wildcard subject of every violation of type
// t, "<prefix>.violations.<type>.*".
func (s Subjects) ViolationsOfType(t Type) string {
	return s.prefix() + ".violations." + typeToken(t) + ".*"
}

// ViolationsOfClient returns the wildcard subject of every violation by
// client, "<prefix>.violations.*.<clientToken>".
func (s Subjects) ViolationsOfClient(client string) string {
	return s.prefix() + ".violations.*." + subject.Token(client)
}

// AllBans returns the wildcard subject of every ban and unban event,
// "<prefix>.bans.*".
func (s Subjects) AllBans() string { return s.prefix() + ".bans.*" }

// ValidatePrefix reports whether prefix can start a subject: one or more
// non-empty dot-separated tokens with no whitespace and no wildcards. The
// empty prefix is valid and means DefaultPrefix.
func ValidatePrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	for _, tok := range strings.Split(prefix, ".") {
		if tok == "" || strings.ContainsAny(tok, "*> \t\r\n") {
			return invalidConfig("Prefix", prefix, "must be dot-separated tokens without spaces or wildcards")
		}
	}
	return nil
}
