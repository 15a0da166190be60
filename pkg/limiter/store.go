package limiter

import (
	"context"
	"time"
)

// Kind names a family of buckets in a Store. The Limiter uses the kinds
// below; other packages define their own (rooms, for example). A Kind is a
// short constant, never client input.
type Kind string

// The kinds of bucket the Limiter keeps in its Store.
const (
	KindConnectionRate Kind = "conn" // new connections per client
	KindMessages       Kind = "msg"  // messages per client (PerClient scope)
	KindBytes          Kind = "byte" // bytes per client (PerClient scope)
)

// Key names one bucket in a Store. Scope and ID may hold any client input
// (client IDs, room names); a Store that maps keys to a network namespace
// must encode them. Scope is empty for buckets that belong to one ID alone,
// and holds, for example, the room of a per-member room bucket.
type Key struct {
	Kind  Kind
	Scope string
	ID    string
}

// Store holds the buckets whose scope spans connections: per-client rates,
// room totals, per-member room rates. The Limiter calls it only for those;
// per-connection buckets live with the connection and never reach a Store.
//
// Implementations must be safe for concurrent use. Take and Refund are on
// the hot path of every message: an implementation that synchronises
// nodes should decide locally and synchronise in the background.
//
// An error means the store cannot decide (for example it fails closed while
// its backend is unreachable); the Limiter denies with
// ReasonStoreUnavailable. Implementations return or wrap ErrUnavailable.
type Store interface {
	// Take takes n tokens from the bucket key, shaped by spec, at now, if
	// the bucket holds them. A denied Take takes nothing.
	Take(ctx context.Context, key Key, spec Spec, now time.Time, n int64) (Result, error)
	// Refund gives back n tokens that an earlier successful Take took,
	// when a later check denies the request they were taken for.
	Refund(ctx context.Context, key Key, spec Spec, now time.Time, n int64) error
}

// Slots counts a client's open connections, across every node that shares
// the implementation. Acquire must be atomic: N racing calls with max M
// grant exactly min(N, M) slots.
type Slots interface {
	// Acquire takes one slot for client if fewer than max are taken (max
	// of zero or less means no cap) and returns the count after the call,
	// or the count that stopped it.
	Acquire(ctx context.Context, client string, max int64) (count int64, ok bool, err error)
	// Release returns a slot taken by Acquire. Releasing a client with no
	// slots is a no-op.
	Release(ctx context.Context, client string) error
	// Count returns the slots client holds.
	Count(ctx context.Context, client string) (int64, error)
}

// Gate decides whether a client may connect at all. A cluster-wide ban list
// implements it; the answer must come from local state, with no I/O, since
// Connect consults it on every connection.
type Gate interface {
	// BannedUntil reports whether client is barred at now and, if so, until
	// when. A zero time with banned true means until lifted.
	BannedUntil(client string, now time.Time) (until time.Time, banned bool)
}

// Compile-time checks that the in-memory store implements both interfaces.
var (
	_ Store = (*MemoryStore)(nil)
	_ Slots = (*MemoryStore)(nil)
)
