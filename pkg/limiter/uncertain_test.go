package limiter_test

import (
	"context"
	"testing"
	"time"

	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

// uncertainStore is a memory store whose denials say they came only from
// the cluster's uncertainty, as a cluster store's allowance denials do.
type uncertainStore struct{ *limiter.MemoryStore }

func (s uncertainStore) Take(ctx context.Context, key limiter.Key, spec limiter.Spec, now time.Time, n int64) (limiter.Result, error) {
	r, err := s.MemoryStore.Take(ctx, key, spec, now, n)
	r.Uncertain = !r.OK
	return r, err
}

// TestDecisionCarriesUncertain: a store's uncertain denial reaches the
// Decision; an exact store's never says uncertain.
func TestDecisionCarriesUncertain(t *testing.T) {
	ctx := context.Background()
	mem := func() *limiter.MemoryStore {
		s := limiter.NewMemoryStore(limiter.MemoryStoreConfig{})
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	for _, tc := range []struct {
		name  string
		store limiter.Store
		want  bool
	}{
		{"uncertain store", uncertainStore{mem()}, true},
		{"memory store", mem(), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := limiter.New(limiter.Config{Store: tc.store,
				Limits: limiter.Limits{MessagesPerMinute: 1, MessageScope: limiter.PerClient}})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			if d, err := l.Connect(ctx, "c1", "client", nil); err != nil || !d.Allowed {
				t.Fatalf("Connect: %+v, %v", d, err)
			}
			if d := l.CheckMessage(ctx, "c1", 10); !d.Allowed || d.Uncertain {
				t.Fatalf("first message: %+v", d)
			}
			d := l.CheckMessage(ctx, "c1", 10)
			if d.Allowed || d.Reason != limiter.ReasonRateLimitExceeded || d.Uncertain != tc.want {
				t.Errorf("second message: %+v, want rate_limit_exceeded with Uncertain %v", d, tc.want)
			}
		})
	}
}

// releasingStore denies the connection-rate check as uncertain its first
// `held` times, as a cluster store does while another node's allowance
// holds the tokens, then takes from its MemoryStore.
type releasingStore struct {
	*limiter.MemoryStore
	held  int
	takes int
}

func (s *releasingStore) Take(ctx context.Context, key limiter.Key, spec limiter.Spec, now time.Time, n int64) (limiter.Result, error) {
	s.takes++
	if key.Kind == limiter.KindConnectionRate && s.takes <= s.held {
		return limiter.Result{Uncertain: true, RetryAfter: time.Minute}, nil
	}
	return s.MemoryStore.Take(ctx, key, spec, now, n)
}

// TestConnectWaitsOutUncertainDenial: a connection whose rate check is
// denied only as uncertain is taken again every UncertainStep and admitted
// once the tokens are released, within UncertainWait; past it, or with a
// negative UncertainWait, it is refused as before, and only that final
// denial is a violation.
func TestConnectWaitsOutUncertainDenial(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		held    int
		wait    time.Duration
		allowed bool
		takes   int
	}{
		{"released after 3", 3, 0, true, 4},
		{"held past the wait", 1000, 100 * time.Millisecond, false, 5},
		{"never waits", 3, -1, false, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem := limiter.NewMemoryStore(limiter.MemoryStoreConfig{})
			t.Cleanup(func() { _ = mem.Close() })
			st := &releasingStore{MemoryStore: mem, held: tc.held}
			var viols []limiter.Violation
			l, err := limiter.New(limiter.Config{Store: st, UncertainWait: tc.wait,
				Limits: limiter.Limits{ConnectionsPerMinute: 10},
				Sink:   limiter.ViolationFunc(func(v limiter.Violation) { viols = append(viols, v) })})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			d, err := l.Connect(ctx, "c1", "client", nil)
			if err != nil || d.Allowed != tc.allowed || st.takes != tc.takes {
				t.Fatalf("Connect: %+v, %v after %d takes; want allowed %v after %d", d, err, st.takes, tc.allowed, tc.takes)
			}
			if want := btoi(!tc.allowed); len(viols) != want {
				t.Errorf("%d violations, want %d: %+v", len(viols), want, viols)
			}
			if !tc.allowed && (!d.Uncertain || d.Reason != limiter.ReasonConnectionRateExceeded) {
				t.Errorf("refusal %+v: want an uncertain connection_rate_exceeded", d)
			}
		})
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
