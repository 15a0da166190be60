// Package kvstore keeps the limiter's cross-node buckets and connection
// counts in agreement across the nodes of a cluster through NATS JetStream
// KV. It needs only a client connection (nats.go); package embedded runs a
// NATS server in the process for tests and for the node binary.
//
// # Global mode
//
// Global mode decides every Take on the node, with no I/O, and agrees with
// the other nodes in the background. This is the algorithm.
//
// Counters. Each node owns one KV entry per bucket it spends from,
// "b.<kind>.<scope>.<id>.<node>", holding its counter: the tokens it has
// spent (cum) and refunded (refunded) in this incarnation, both only
// growing; its own spending not yet refilled (unrefilled); its view of the
// bucket's level; its demand (tokens asked for per second, smoothed); the
// allowance it holds (reserved) and for how long the others should set it
// aside (hold); and the bucket's spec. Only its owner writes an entry, so
// writes never conflict. Every node watches every counter.
//
// Views. A node's view of a bucket is a token bucket it spends from and
// debits with what the others spent: from a counter it applies the growth
// of cum (and refunds the growth of refunded) beyond what it has applied.
// Duplicates and reordering lose or double nothing.
//
// Epochs and incarnations. A counter's totals restart at zero in a new
// process run (a random epoch) and when a node makes a new entry for a
// bucket whose entry it had swept (the next incarnation of the run). A
// reader seeing a new epoch or a higher incarnation treats it as first
// sight: it debits the writer's unrefilled, less the refill since the
// write. A lower incarnation of the same epoch is stale and ignored. The
// time of a write is this node's own dating, never the writer's clock:
// updates delivered live are dated by their receipt; the watch's initial
// values by the time the server stored them, shifted by this node's
// offset from the server's clock (measured at each watch start).
//
// Allowances. A node spends only its allowance. At every flush generation
// (one per SyncInterval) it renews it: its share of the tokens its view
// holds once the allowances the others hold (their counters' reserved,
// whole tokens, while it stands) are set aside. An allowance its writer
// took having heard of no other demand (the counter says alone) counts,
// in this node's first sync interval on the bucket, only up to the
// writer's demand share (or what it spends in 2 intervals, if more): the
// writer renews as soon as it hears of this node's demand, and a
// client's second connection, on another node, is not denied until the
// first node next writes. Its share is its demand
// over the fresh demand of every node, or all of it while no other node has
// shown demand. Between renewals the allowance grows by its share of the
// refill. The tokens the shares leave over in whole-token rounding go one
// each to the nodes of highest demand, so a nearly empty bucket stays
// spendable. A Take the allowance does not cover is denied with the wait
// until the allowance and the view both hold the tokens (RetryAfter);
// Take reports it Uncertain (limiter.Result.Uncertain) when the view holds them (only the
// allowances stand in the way), and asks for an early flush when tokens
// no node holds are left.
//
// Cold keys. A node that has heard of no other node's demand for a bucket
// may spend all of it at once (a client's traffic usually arrives through
// one node), and its first spending flushes at once. Cost: when every node
// receives a full burst within the time a counter takes to reach the
// others, each admits up to the burst (N × the burst at worst, once). A
// node hearing a first counter with demand renews at its next Take.
//
// Flushes and holds. Every SyncInterval a node renews each bucket it spent
// from and writes its counter in one asynchronous batch. A bucket another
// node has shown demand for (contested) is written every interval, with a
// hold of 3 intervals. An uncontested bucket's counter holds 400 intervals
// (20 s at 50 ms), and is written only when no counter of it stands, when
// that hold is within 4 intervals of running out, or when
// its renewed allowance exceeds what the standing counter covers (the
// published allowance, less the spending since, plus its share of the
// refill since): its spending in between stays within the allowance the
// others set aside for it. When another node starts spending on a bucket
// a node holds, that node renews and writes at its next flush, releasing
// what it no longer needs. Flush, Close and the first flush after an
// outage write every counter with unpublished spending.
//
// Adopting what others spent. A node creating an entry for a bucket others
// have written starts from the counters the watch kept for it: it applies
// each as first sight and starts from the lowest level any of them wrote,
// refilled since, if that is lower. Counters written by a previous run
// under the same node ID count like another node's, with no allowance or
// demand.
//
// Sweeping. A bucket that is full, clean, untouched for 10 intervals and
// whose published allowance no longer stands is dropped; its next Take
// makes a new incarnation. Kept counters of buckets this node does not hold
// are dropped once their spending has refilled, their demand is stale and
// their allowance no longer stands.
//
// Watch health. The writes a node's flushes get acknowledged come back
// through its watch; if none has after 300 ms (or 6 intervals) and the
// watch delivered nothing at all since, the watch is restarted (its
// consumer went with a NATS server).
//
// Fail modes. While NATS is unreachable a node keeps deciding from its
// view: FailOpenLocal spends the whole bucket as it last saw it,
// FailLocalShare spends the bucket divided by the live nodes, FailClosed
// denies with limiter.ErrUnavailable. What it spent meanwhile goes out with
// its first flush after the reconnect.
//
// Bounds. Overshoot of one bucket comes from spending the others have not
// heard of yet: in steady state at most what the nodes admit within one
// sync interval plus the propagation delay beyond their shares of what
// is left (one interval's refill and load at most, which the bucket's debt
// then pays back), and, on a cold bucket, the N × burst above. The
// deferred writes of uncontested buckets add to it only when another node
// joins the bucket: it counts the holder's allowance (taken alone) up to
// the holder's demand share, so what the holder spends before it hears of
// the joiner can exceed the bucket, by at most its allowance, once.
// docs/ACCURACY.md has the measurements.
//
// # Live limit changes
//
// Store implements limiter.Rescaler and limiter.KeyRescaler, so that
// Limiter.SetLimits and SetTierLimits, applied on every node, keep each
// cluster bucket's level as a fraction of the new burst and never refill
// it. Each node rescales only its own state, so the change is applied to
// a bucket once, however many nodes apply it.
//
// In Global mode a node rescales its view of the bucket, its own
// spending and its fail-mode bucket with limiter.RescaleBucket, scales its
// allowance, the allowance it last published and the allowances it sets
// aside for the others by the ratio of the bursts, renews at its next Take
// and writes its counter at its next flush. A counter carries the Spec it
// was written under, and a reader counts what it applies of it (the
// growth, or on first sight the writer's unrefilled spending, also for a
// counter kept until the node first uses the bucket) as the same fraction
// of its own Spec's burst; the writer's spending not yet published when it
// rescales is converted to tokens of the new Spec (rounded up). So
// spending in flight across the change, whichever node applied the change
// first, counts as the same fraction on every node.
//
// In Strict mode the KV entry records the Spec it was written under. The
// first write under another Spec rescales the bucket and the leases in it
// (rounded up); the writes after it find the new Spec recorded. Each node
// converts its own lease once (tokens granted rounded down, spent rounded
// up), so that what it settles is in the entry's tokens.
//
// A bucket held under a Spec other than the one a Take brings (a change
// this node was not told of for that bucket, such as another tier's) is
// rescaled from its own Spec at that Take. During a rollout a node still
// on the previous Spec rescales back, keeping the fraction. What is left
// is rounding, towards less: a node's unpublished spending in Global mode
// and leases in Strict mode round up at each change, by less than one
// token per node. Tests: TestLiveChangeRescalesGlobal,
// TestLiveChangeRescalesStrict, TestLiveTierChangeRescalesGlobal and
// TestLiveChangeRacesTakes (ten changes racing Takes on three nodes: the
// fractions admitted add up to one bucket within 0.02 in Strict mode and
// measured 1.006 at most in Global mode).
package kvstore
