package limiter

import (
	"context"
	"errors"
	"fmt"
	"time"
)

var (
	// ErrWaitExceedsBurst is returned by Wait and WaitSpec when n exceeds
	// the bucket's capacity: no wait can ever admit it.
	ErrWaitExceedsBurst = errors.New("limiter: wait: n exceeds the bucket's burst")

	// ErrWaitExceedsDeadline is returned by Wait and WaitSpec, without
	// waiting, when the tokens would arrive after the context's deadline.
	ErrWaitExceedsDeadline = errors.New("limiter: wait: tokens would arrive after the context deadline")

	// ErrUnknownKind is returned by Wait for a Kind whose Spec the Limiter
	// does not know; use WaitSpec for the kinds of other layers.
	ErrUnknownKind = errors.New("limiter: wait: no limit of this kind")
)

// minPause bounds Wait's retry loop from below, for a Store that denies
// without saying how long to wait.
const minPause = time.Millisecond

// Wait blocks until n tokens can be taken from the bucket key, takes them,
// and returns nil; or returns an error once ctx ends. It is for producers
// on the server side (a bot, a bridge) that should be slowed down rather
// than refused, and works like x/time/rate's WaitN:
//
//   - n larger than the bucket's burst returns ErrWaitExceedsBurst at once;
//   - if the tokens would arrive only after ctx's deadline, Wait returns
//     ErrWaitExceedsDeadline at once and takes nothing;
//   - if ctx ends while waiting, Wait returns ctx.Err() and takes nothing.
//
// The Spec comes from the Limiter's Limits and key.Kind: KindConnectionRate,
// KindMessages and KindBytes (the per-client buckets of PerClient scope,
// shared with every connection of key.ID through the Store). Any other kind
// returns ErrUnknownKind. An unlimited Spec returns nil at once.
//
// Wait takes from the Store, so with a cluster store the wait is shared by
// every node. It reserves nothing: it takes what is there, and while
// others keep taking from the same bucket, it waits again. A Store error
// is returned wrapped; a closed Limiter returns ErrClosed. Wait never
// reports a violation: waiting is not misbehaving.
func (l *Limiter) Wait(ctx context.Context, key Key, n int64) error {
	var spec Spec
	lv := l.live.Load()
	switch key.Kind {
	case KindConnectionRate:
		spec = lv.connSpec
	case KindMessages:
		spec = lv.msgSpec
	case KindBytes:
		spec = lv.byteSpec
	default:
		return fmt.Errorf("%w: %q", ErrUnknownKind, key.Kind)
	}
	return l.WaitSpec(ctx, key, spec, n)
}

// WaitSpec is Wait for a bucket of any kind shaped by spec, such as a room
// or a message-class bucket kept in the same Store by another layer.
func (l *Limiter) WaitSpec(ctx context.Context, key Key, spec Spec, n int64) error {
	if err := spec.Validate(); err != nil {
		return err
	}
	if spec.Unlimited() || n <= 0 {
		return nil
	}
	if n > spec.Capacity() {
		return fmt.Errorf("%w: %d > %d", ErrWaitExceedsBurst, n, spec.Capacity())
	}
	for {
		if l.closed.Load() {
			return ErrClosed
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		now := l.now()
		r, err := l.store.Take(ctx, key, spec, now, n)
		if err != nil {
			return fmt.Errorf("limiter: wait: %w", err)
		}
		if r.OK {
			return nil
		}
		d := r.RetryAfter
		if d == Never {
			return fmt.Errorf("%w: the store says no wait helps", ErrWaitExceedsBurst)
		}
		d = max(d, minPause)
		if dl, ok := ctx.Deadline(); ok && now.Add(d).After(dl) {
			return fmt.Errorf("%w: %v needed", ErrWaitExceedsDeadline, d)
		}
		if err := l.pause(ctx, d); err != nil {
			return err
		}
	}
}

// pause waits d or until ctx ends.
func (l *Limiter) pause(ctx context.Context, d time.Duration) error {
	if l.sleep != nil {
		return l.sleep(ctx, d)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
