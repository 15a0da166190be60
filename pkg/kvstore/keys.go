package kvstore

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strings"

	"github.com/ratethrottle/ratethrottle/pkg/limiter"
	"github.com/ratethrottle/ratethrottle/pkg/subject"
)

// token encodes any string as one KV key and subject token.
func token(s string) string { return subject.Token(s) }

// randomToken returns 12 random hex digits, for a default node ID.
func randomToken() string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(errors.New("kvstore: crypto/rand failed: " + err.Error()))
	}
	return hex.EncodeToString(b[:])
}

func join(parts ...string) string { return strings.Join(parts, ".") }

// bucketKey is the KV key prefix shared by every node's counter of one
// Global bucket: "b.<kind>.<scope>.<id>".
func bucketKey(k limiter.Key) string {
	return join("b", token(string(k.Kind)), token(k.Scope), token(k.ID))
}

// counterKey is the KV key of one node's counter of a Global bucket.
func counterKey(base, nodeTok string) string { return join(base, nodeTok) }

// strictKey is the KV key of a Strict bucket: "s.<kind>.<scope>.<id>".
func strictKey(k limiter.Key) string {
	return join("s", token(string(k.Kind)), token(k.Scope), token(k.ID))
}

// connKey is the KV key of one node's connection count for a client:
// "c.<client>.<node>".
func connKey(clientTok, nodeTok string) string { return join("c", clientTok, nodeTok) }

// nodeKey is the KV key of a node's heartbeat: "n.<node>".
func nodeKey(nodeTok string) string { return join("n", nodeTok) }

// kvSubject is the subject a KV key is stored under.
func kvSubject(bucket, key string) string { return "$KV." + bucket + "." + key }

// Filters of the watch every node runs.
const (
	watchCounters = "b.>"
	watchConns    = "c.>"
	watchNodes    = "n.>"
)

// splitLast splits key at its last dot.
func splitLast(key string) (head, last string, ok bool) {
	i := strings.LastIndexByte(key, '.')
	if i < 0 {
		return "", "", false
	}
	return key[:i], key[i+1:], true
}

// previousRun is the name under which a node's counters written by an
// earlier run of the same node ID are applied. "~" is outside the token
// alphabet, so it names no real node.
func previousRun(nodeTok string) string { return nodeTok + "~" }
