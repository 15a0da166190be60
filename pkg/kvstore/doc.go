// Package kvstore keeps the limiter's cross-node buckets and connection
// counts in agreement across the nodes of a cluster through NATS JetStream
// KV, and provides an embedded NATS server helper for tests and for the
// node binary.
package kvstore
