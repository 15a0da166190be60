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
