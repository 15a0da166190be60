// Package subject encodes client input as one NATS subject token and one
// JetStream KV key fragment.
//
// Client IDs, room names and node IDs come from outside: an IP address, a
// user name, whatever a token issuer or a browser sent. NATS gives some of
// their characters a meaning. A subject is split into tokens at '.', so
// "203.0.113.5" would be four tokens where one was meant; '*' and '>' are
// wildcards, so a client named ">" would subscribe to, or be matched by,
// everything under a prefix; whitespace ends a subject in the protocol, and
// an empty token makes the subject invalid. KV keys allow fewer characters
// still: letters, digits, '-', '_', '/', '=' and '.', where '.' again splits
// the key into subject tokens. Unicode, IPv6 colons and brackets, and
// control bytes are refused or, worse, accepted as a different key.
//
// Token turns any string into a token made only of [A-Za-z0-9_=-]: the
// unpadded base64url encoding of the input when the input is short, so a
// service in any language can compute a client's subject in one line
// (base64.urlsafe_b64encode(id).rstrip("=") in Python), and a SHA-256 hash
// of the input when it is long, so that no input makes a subject or key
// longer than 64 characters. The same token is a valid subject token and a
// valid KV key, so a ban on a client, its events and its cluster counters
// are all found under one name. Every subject and key this module builds
// from client input is built from Token.
package subject

import (
	"crypto/sha256"
	"encoding/base64"
)

// maxRaw is the longest input, in bytes, that Token encodes whole; its
// encoding is 64 characters.
const maxRaw = 48

// mark starts the tokens that are not the plain encoding of their input.
// It is outside the base64url alphabet, so the forms never collide.
const mark = "="

// Token encodes s (a client ID, a room name, a node ID) as one NATS subject
// token and one JetStream KV key fragment:
//
//   - input of 1 to 48 bytes is its base64url encoding without padding
//     ("203.0.113.5" → "MjAzLjAuMTEzLjU");
//   - longer input is "=" followed by the base64url SHA-256 of the input;
//   - the empty input is "=".
//
// Tokens are deterministic, at most 64 characters of [A-Za-z0-9_=-], and
// distinct inputs get distinct tokens (up to SHA-256 collisions).
func Token(s string) string {
	if s == "" {
		return mark
	}
	if len(s) <= maxRaw {
		return base64.RawURLEncoding.EncodeToString([]byte(s))
	}
	sum := sha256.Sum256([]byte(s))
	return mark + base64.RawURLEncoding.EncodeToString(sum[:])
}
