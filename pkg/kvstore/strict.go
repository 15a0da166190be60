package kvstore

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

var errConflict = fmt.Errorf("%w: %w", limiter.ErrUnavailable, ErrConflict)

// strictCache remembers the last revision and state of Strict buckets, so a
// decision usually costs one write, and the consumption made while NATS was
// down, to be applied after reconnect.
type strictCache struct {
	mu   sync.Mutex
	m    map[string]*strictState
	debt map[string]*strictState
}

type strictState struct {
	rev  uint64
	full int64 // UnixNano at which the bucket is full
	spec limiter.Spec
	owed int64 // tokens consumed while down, not yet written
}

func (c *strictCache) get(k string) (rev uint64, full int64, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st := c.m[k]; st != nil {
		return st.rev, st.full, true
	}
	return 0, 0, false
}

func (c *strictCache) set(k string, rev uint64, full int64, spec limiter.Spec) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.m[k]
	if st == nil {
		st = &strictState{}
		c.m[k] = st
	}
	st.rev, st.full, st.spec = rev, full, spec
}

func (c *strictCache) forget(k string) {
	c.mu.Lock()
	delete(c.m, k)
	c.mu.Unlock()
}

func (c *strictCache) owe(k string, spec limiter.Spec, n int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.debt == nil {
		c.debt = make(map[string]*strictState)
	}
	st := c.debt[k]
	if st == nil {
		st = &strictState{}
		c.debt[k] = st
	}
	st.spec = spec
	st.owed = max(st.owed+n, 0)
}

func (c *strictCache) sweep(t int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, st := range c.m {
		if st.full <= t {
			delete(c.m, k)
		}
	}
}

// bucketAt rebuilds a bucket that is full at full, as seen at now.
func bucketAt(spec limiter.Spec, full int64, now time.Time) limiter.Bucket {
	var b limiter.Bucket
	if d := full - now.UnixNano(); d > 0 {
		b.DebitAt(spec, now, rate(spec)*float64(d))
	} else {
		b.DebitAt(spec, now, 0)
	}
	return b
}

// strictTake takes n tokens with a compare-and-swap on the bucket's entry.
func (s *Store) strictTake(ctx context.Context, key limiter.Key, spec limiter.Spec, now time.Time, n int64) (limiter.Result, error) {
	k := strictKey(key)
	if s.down.Load() {
		return s.strictFail(key, k, spec, now, n)
	}
	r, err := s.cas(ctx, k, spec, now, func(b *limiter.Bucket) (limiter.Result, bool) {
		r := b.TakeAt(spec, now, n)
		return r, r.OK
	})
	if err != nil && !errors.Is(err, ErrConflict) {
		s.enterDown()
		return s.strictFail(key, k, spec, now, n)
	}
	return r, err
}

// strictRefund gives n tokens back with a compare-and-swap.
func (s *Store) strictRefund(ctx context.Context, key limiter.Key, spec limiter.Spec, now time.Time, n int64) error {
	k := strictKey(key)
	if s.down.Load() {
		s.strict.owe(k, spec, -n)
		return s.local.Refund(ctx, key, spec, now, n)
	}
	_, err := s.cas(ctx, k, spec, now, func(b *limiter.Bucket) (limiter.Result, bool) {
		b.RefundAt(spec, now, n)
		return limiter.Result{OK: true}, true
	})
	return err
}

// strictFail decides a Strict take while NATS is unreachable, by the fail
// mode, and remembers the consumption for after reconnect.
func (s *Store) strictFail(key limiter.Key, k string, spec limiter.Spec, now time.Time, n int64) (limiter.Result, error) {
	switch s.cfg.FailMode {
	case FailClosed:
		return limiter.Result{}, errDown
	case FailLocalShare:
		spec = shareSpec(spec, s.live.Load())
	}
	r := s.local.TakeAt(key, spec, now, n)
	if r.OK {
		s.strict.owe(k, spec, n)
	}
	return r, nil
}

// cas applies f to the bucket stored under k until the write wins,
// starting from the cached revision. f reports whether to write; a
// decision not to write taken on cached state is confirmed on fresh state.
func (s *Store) cas(ctx context.Context, k string, spec limiter.Spec, now time.Time, f func(*limiter.Bucket) (limiter.Result, bool)) (limiter.Result, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	rev, full, cached := s.strict.get(k)
	for attempt := 0; attempt <= s.cfg.MaxRetries; attempt++ {
		if !cached {
			e, err := s.kv.Get(ctx, k)
			switch {
			case errors.Is(err, jetstream.ErrKeyNotFound):
				rev, full = 0, 0
			case err != nil:
				return limiter.Result{}, fmt.Errorf("kvstore: get %s: %w", k, err)
			default:
				rev = e.Revision()
				full, _ = unmarshalInt(e.Value())
			}
		}
		b := bucketAt(spec, full, now)
		r, write := f(&b)
		if !write {
			if cached {
				cached = false
				continue
			}
			return r, nil
		}
		newFull := b.FullAt(spec).UnixNano()
		val := marshalInt(newFull)
		var err error
		var nrev uint64
		if rev == 0 {
			nrev, err = s.kv.Create(ctx, k, val)
		} else {
			nrev, err = s.kv.Update(ctx, k, val, rev)
		}
		switch {
		case err == nil:
			s.stats.kvWrites.Add(1)
			s.strict.set(k, nrev, newFull, spec)
			return r, nil
		case errors.Is(err, jetstream.ErrKeyRevisionMismatch), errors.Is(err, jetstream.ErrKeyExists):
			s.stats.conflicts.Add(1)
			s.stats.retries.Add(1)
			cached = false
			// Spread the retries of racing writers: a random pause
			// growing with the attempt, at most a few milliseconds.
			if err := pause(ctx, time.Duration(rand.Int64N(int64(attempt+1)*int64(250*time.Microsecond)))); err != nil {
				return limiter.Result{}, fmt.Errorf("kvstore: write %s: %w", k, err)
			}
		default:
			s.stats.writeErrors.Add(1)
			s.strict.forget(k)
			return limiter.Result{}, fmt.Errorf("kvstore: write %s: %w", k, err)
		}
	}
	s.strict.forget(k)
	return limiter.Result{}, errConflict
}

// flushStrictDebt writes the Strict consumption made while NATS was down.
func (s *Store) flushStrictDebt(ctx context.Context) {
	s.strict.mu.Lock()
	debt := s.strict.debt
	s.strict.debt = nil
	s.strict.mu.Unlock()
	now := s.now()
	for k, st := range debt {
		if st.owed <= 0 {
			continue
		}
		_, err := s.cas(ctx, k, st.spec, now, func(b *limiter.Bucket) (limiter.Result, bool) {
			b.DebitAt(st.spec, now, float64(st.owed))
			return limiter.Result{OK: true}, true
		})
		if err != nil {
			s.strict.owe(k, st.spec, st.owed)
		}
	}
}

// pause waits d or until ctx ends.
func pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
