package limiter

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// newWaitLimiter returns a Limiter on a manual clock whose Wait pauses by
// advancing the clock and recording the pause.
func newWaitLimiter(t *testing.T, lim Limits) (*Limiter, *clock, *[]time.Duration) {
	t.Helper()
	l, clk := newTestLimiter(t, lim, nil)
	var pauses []time.Duration
	l.sleep = func(ctx context.Context, d time.Duration) error {
		pauses = append(pauses, d)
		clk.Advance(d)
		return ctx.Err()
	}
	return l, clk, &pauses
}

func TestWaitSteps(t *testing.T) {
	// 60 messages a minute (one a second), burst 2, shared per client.
	l, clk, pauses := newWaitLimiter(t, Limits{MessagesPerMinute: 60, MessageBurst: 2, MessageScope: PerClient})
	key := Key{Kind: KindMessages, ID: "bot"}
	steps := []struct {
		advance time.Duration
		n       int64
		want    []time.Duration // pauses taken by this call
	}{
		{0, 1, nil},
		{0, 1, nil},
		{0, 1, []time.Duration{time.Second}},
		{0, 2, []time.Duration{2 * time.Second}},
		{500 * time.Millisecond, 1, []time.Duration{500 * time.Millisecond}},
		{10 * time.Second, 2, nil}, // refilled to the burst, not beyond
		{0, 1, []time.Duration{time.Second}},
	}
	for i, st := range steps {
		clk.Advance(st.advance)
		*pauses = nil
		require.NoError(t, l.Wait(ctx, key, st.n), "step %d", i)
		require.Equal(t, st.want, *pauses, "step %d", i)
	}
	// The waits took exactly what they asked: the bucket is empty now.
	r, err := l.Store().Take(ctx, key, l.Limits().MessageSpec(), clk.Now(), 1)
	require.NoError(t, err)
	require.False(t, r.OK)
	require.Equal(t, time.Second, r.RetryAfter)
}

func TestWaitKindsAndSpecs(t *testing.T) {
	l, _, pauses := newWaitLimiter(t, Limits{ConnectionsPerMinute: 6, BytesPerMinute: 600, MaxMessageSize: 100})
	require.NoError(t, l.Wait(ctx, Key{Kind: KindConnectionRate, ID: "c"}, 6))
	require.NoError(t, l.Wait(ctx, Key{Kind: KindConnectionRate, ID: "c"}, 1))
	require.Equal(t, []time.Duration{10 * time.Second}, *pauses)

	*pauses = nil
	require.NoError(t, l.Wait(ctx, Key{Kind: KindBytes, ID: "c"}, 600))
	require.NoError(t, l.Wait(ctx, Key{Kind: KindBytes, ID: "c"}, 60))
	require.Equal(t, []time.Duration{6 * time.Second}, *pauses)

	// Messages are unlimited here: no pause, nothing to take.
	*pauses = nil
	require.NoError(t, l.Wait(ctx, Key{Kind: KindMessages, ID: "c"}, 1000))
	require.Empty(t, *pauses)

	require.ErrorIs(t, l.Wait(ctx, Key{Kind: "room", ID: "c"}, 1), ErrUnknownKind)
	room := Spec{Limit: 2, Per: time.Second}
	require.NoError(t, l.WaitSpec(ctx, Key{Kind: "room", Scope: "lobby", ID: "c"}, room, 2))
	require.NoError(t, l.WaitSpec(ctx, Key{Kind: "room", Scope: "lobby", ID: "c"}, room, 1))
	require.Equal(t, []time.Duration{500 * time.Millisecond}, *pauses)
	require.ErrorIs(t, l.WaitSpec(ctx, Key{Kind: "room"}, Spec{Limit: -1}, 1), ErrInvalidLimits)
}

func TestWaitExceedsBurst(t *testing.T) {
	l, _, pauses := newWaitLimiter(t, Limits{MessagesPerMinute: 60, MessageBurst: 2})
	err := l.Wait(ctx, Key{Kind: KindMessages, ID: "bot"}, 3)
	require.ErrorIs(t, err, ErrWaitExceedsBurst)
	require.Empty(t, *pauses)
	// Nothing was taken.
	require.NoError(t, l.Wait(ctx, Key{Kind: KindMessages, ID: "bot"}, 2))
	require.Empty(t, *pauses)
}

func TestWaitExceedsDeadlineReturnsAtOnce(t *testing.T) {
	l, err := New(Config{Limits: Limits{MessagesPerMinute: 60, MessageBurst: 1}})
	require.NoError(t, err)
	defer l.Close()
	key := Key{Kind: KindMessages, ID: "bot"}
	require.NoError(t, l.Wait(ctx, key, 1))

	c, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = l.Wait(c, key, 1) // the token arrives in one second
	require.ErrorIs(t, err, ErrWaitExceedsDeadline)
	require.Less(t, time.Since(start), 150*time.Millisecond, "must not wait for a deadline it cannot meet")
	require.NoError(t, c.Err())
}

func TestWaitContextCanceledWhileWaiting(t *testing.T) {
	l, err := New(Config{Limits: Limits{MessagesPerMinute: 1, MessageBurst: 1}})
	require.NoError(t, err)
	defer l.Close()
	key := Key{Kind: KindMessages, ID: "bot"}
	require.NoError(t, l.Wait(ctx, key, 1))

	c, cancel := context.WithCancel(ctx)
	stop := time.AfterFunc(50*time.Millisecond, cancel)
	defer stop.Stop()
	start := time.Now()
	err = l.Wait(c, key, 1) // a minute away, no deadline
	require.ErrorIs(t, err, context.Canceled)
	require.Less(t, time.Since(start), 10*time.Second)
}

func TestWaitRealClockPaces(t *testing.T) {
	// 6000 a minute is one every 10 ms; burst 1. Five waits need at least
	// four refills, 40 ms; the upper bound only catches a hang.
	l, err := New(Config{Limits: Limits{MessagesPerMinute: 6000, MessageBurst: 1}})
	require.NoError(t, err)
	defer l.Close()
	key := Key{Kind: KindMessages, ID: "bot"}
	start := time.Now()
	for range 5 {
		require.NoError(t, l.Wait(ctx, key, 1))
	}
	el := time.Since(start)
	require.GreaterOrEqual(t, el, 40*time.Millisecond)
	require.Less(t, el, 5*time.Second)
}

func TestWaitStoreErrorAndClosed(t *testing.T) {
	l, _, _ := newWaitLimiter(t, Limits{MessagesPerMinute: 60})
	l.store = &failingStore{}
	err := l.Wait(ctx, Key{Kind: KindMessages, ID: "bot"}, 1)
	require.ErrorIs(t, err, ErrUnavailable)

	l2, err := New(Config{Limits: Limits{MessagesPerMinute: 60}})
	require.NoError(t, err)
	require.NoError(t, l2.Close())
	require.True(t, errors.Is(l2.Wait(ctx, Key{Kind: KindMessages, ID: "bot"}, 1), ErrClosed))
}
