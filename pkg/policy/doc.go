// Package policy is the one document that says how a cluster limits its
// clients: the connection limits, the message classes with their cost and
// their rates per connection, per user, per address and per room, the
// tiers (named limit sets such as "free" and "pro" chosen by a client's
// identity) and the room rules.
//
// A Document is a Go struct for programs that embed the limiter and a YAML
// document for the node. Parse refuses unknown keys and Validate names the
// path of every bad value ("tiers.pro.classes.typing.rate"). Compile turns
// a valid Document into a Table, the read-only structure the message path
// consults: looking up a class by name and its limits for a tier allocates
// nothing.
//
// Store keeps the document in a JetStream KV key so that every node of a
// cluster applies the same version: Put validates before it writes and
// compares the revision, History lists the key's revisions, and Watcher
// hands each new valid version to a callback, starting from a fallback
// document while NATS cannot be reached. A new version that changes a
// bucket's burst keeps the bucket at its level (limiter.RescaleBucket,
// which Limiter.SetLimits and the stores apply).
//
// See docs/POLICY.md for the document with a full example.
package policy
