// Package events publishes what the limiter sees and keeps the
// cluster-wide ban list.
//
// # Events
//
// Every violation becomes an Event: one versioned JSON form ("v":1) with
// id, time, node, type, reason, client, connection, room, limit, observed,
// retry_after_ms, until and metadata, never a message body. Events are
// published on subjects built by Subjects from a configurable prefix
// (DefaultPrefix, "ratethrottle"):
//
//	<prefix>.violations.<type>.<clientToken>
//	<prefix>.bans.<clientToken>
//
// Client IDs are client input, so subjects carry subject.Token(id), a
// base64url (or, for long IDs, hashed) token that no '.', '*', '>', space
// or unicode character can break; the raw ID is in the JSON. Wildcard
// subscriptions such as "ratethrottle.violations.>" or
// "ratethrottle.violations.message_rate.*" select by type and client.
//
// A Publisher is a limiter.ViolationSink: it queues events in a bounded
// buffer and publishes them on its own goroutine, so a decision never
// waits for NATS; drops are counted. Subscribe delivers decoded, filtered
// events to other Go services; EnsureStream keeps a bounded history in
// JetStream and SubscribeDurable replays it through a durable consumer.
//
// # Bans
//
// Bans keeps bans in a JetStream KV bucket with a TTL per key, and every
// node watches the bucket into a local cache, so BannedUntil costs no I/O.
// Bans implements limiter.Gate: a limiter configured with it denies a
// banned client's connections with reason banned, on every node. Notify
// tells the application, on every node, to close the client's open
// connections.
// AutoBan bans a client after Threshold violations within Window, counted
// in the limiter's own Store, and emits a ban event.
//
// # NATS connections
//
// Everything here takes a *nats.Conn, as kvstore and policy do: the
// Publisher and Subscribe publish and subscribe on it, and Bans,
// EnsureStream and SubscribeDurable open JetStream on it with
// jetstream.New, the account's own JetStream API. A JetStream domain or an
// API prefix imported from another account is not offered.
//
// The schema, subjects and examples are in docs/EVENTS.md.
package events
