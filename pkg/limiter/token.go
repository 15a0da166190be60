package limiter

import (
	"crypto/sha256"
	"encoding/base64"
)

// maxRawToken is the longest input, in bytes, that Token encodes whole; its
// encoding is 64 characters.
const maxRawToken = 48

// tokenMark starts the tokens that are not the plain encoding of their
// input. It is outside the base64url alphabet, so the forms never collide.
const tokenMark = "="

// Token encodes client input (a client ID, a room name, a node ID) as one
// NATS subject token and one JetStream KV key fragment. Client input may
// hold '.', '*', '>', spaces, IPv6 colons or any unicode, so it never
// reaches a subject or key raw:
//
//   - input of 1 to 48 bytes is its base64url encoding without padding
//     ("203.0.113.5" → "MjAzLjAuMTEzLjU");
//   - longer input is "=" followed by the base64url SHA-256 of the input;
//   - the empty input is "=".
//
// Tokens are deterministic, at most 64 characters of [A-Za-z0-9_=-], and
// distinct inputs get distinct tokens (up to SHA-256 collisions). Every
// subject and key in this project is built from them.
func Token(s string) string {
	if s == "" {
		return tokenMark
	}
	if len(s) <= maxRawToken {
		return base64.RawURLEncoding.EncodeToString([]byte(s))
	}
	sum := sha256.Sum256([]byte(s))
	return tokenMark + base64.RawURLEncoding.EncodeToString(sum[:])
}
