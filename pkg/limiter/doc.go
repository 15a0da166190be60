// Package limiter is the core of RateThrottle: token buckets, a sharded
// in-memory store of keyed buckets, the five WebSocket limits and the
// Limiter that applies them to connections and messages.
//
// The package imports only the standard library. Everything that talks to
// the network plugs in through the small interfaces defined here:
//
//   - Store takes and refunds tokens on named buckets whose scope spans
//     connections (per client, per room). MemoryStore is the default; a
//     store that keeps nodes in agreement through NATS implements the same
//     interface without any change to Limiter.
//   - Slots acquires and releases concurrent-connection slots per client.
//   - Gate answers whether a client is barred from connecting (bans).
//   - ViolationSink receives every violation the Limiter sees.
//
// # Semantics
//
// Every bucket refills lazily: no goroutine runs per bucket, and the bucket
// math takes the current time as a parameter, so it is deterministic under
// test. A clock that steps backwards never credits tokens twice. A denied
// request consumes nothing in any bucket, and RetryAfter is the exact wait
// after which the same request would be allowed if nothing else happened.
// A denial carries no hidden penalty: a client is never blocked longer than
// its bucket says.
//
// Idle state costs nothing: a bucket that has refilled to full is dropped by
// the store's sweeper, and a client with no open connections is forgotten as
// its last connection unregisters.
package limiter
