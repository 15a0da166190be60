package limiter

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// clock is a manual clock for tests.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: t0} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// newTestLimiter returns a Limiter on a manual clock, closed at cleanup.
func newTestLimiter(t *testing.T, lim Limits, mod func(*Config)) (*Limiter, *clock) {
	t.Helper()
	clk := newClock()
	cfg := Config{Limits: lim, Now: clk.Now}
	if mod != nil {
		mod(&cfg)
	}
	l, err := New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, l.Close()) })
	return l, clk
}

var ctx = context.Background()

func TestConnectionRateSixthDenied(t *testing.T) {
	t.Parallel()
	l, clk := newTestLimiter(t, Limits{ConnectionsPerMinute: 5}, nil)
	for i := 0; i < 5; i++ {
		d := l.CheckConnection(ctx, "alice")
		require.True(t, d.Allowed, "connection %d", i+1)
		require.Equal(t, int64(4-i), d.Remaining)
	}
	d := l.CheckConnection(ctx, "alice")
	require.False(t, d.Allowed)
	require.Equal(t, ReasonConnectionRateExceeded, d.Reason)
	require.Equal(t, 12*time.Second, d.RetryAfter)
	require.Equal(t, int64(5), d.Limit)
	clk.Advance(12 * time.Second)
	require.True(t, l.CheckConnection(ctx, "alice").Allowed)
}

func TestConcurrentFourthDeniedUntilUnregister(t *testing.T) {
	t.Parallel()
	l, _ := newTestLimiter(t, Limits{MaxConcurrentConnections: 3}, nil)
	for i := 0; i < 3; i++ {
		require.True(t, l.CheckConnection(ctx, "bob").Allowed)
		require.NoError(t, l.RegisterConnection(ctx, fmt.Sprint("c", i), "bob", nil))
	}
	d := l.CheckConnection(ctx, "bob")
	require.False(t, d.Allowed)
	require.Equal(t, ReasonTooManyConnections, d.Reason)
	require.Equal(t, int64(3), d.Limit)
	require.Equal(t, 3, l.ClientConnections("bob"))

	require.NoError(t, l.UnregisterConnection(ctx, "c1"))
	require.True(t, l.CheckConnection(ctx, "bob").Allowed)
	require.Equal(t, 2, l.ClientConnections("bob"))
}

func TestUnregisterRemovesEmptyClientAndUnknownIsHarmless(t *testing.T) {
	t.Parallel()
	l, _ := newTestLimiter(t, DefaultLimits(), nil)
	d, err := l.Connect(ctx, "c1", "carol", nil)
	require.NoError(t, err)
	require.True(t, d.Allowed)
	require.NoError(t, l.UnregisterConnection(ctx, "c1"))
	require.Equal(t, 0, l.ClientConnections("carol"))
	require.Equal(t, 0, l.Statistics().UniqueClients)
	_, clients := l.own.Len()
	require.Zero(t, clients, "slot entry left behind")
	require.NoError(t, l.UnregisterConnection(ctx, "c1"))
	require.NoError(t, l.UnregisterConnection(ctx, "never"))
}

func TestMessageRateEleventhDenied(t *testing.T) {
	t.Parallel()
	l, clk := newTestLimiter(t, Limits{MessagesPerMinute: 10}, nil)
	_, err := l.Connect(ctx, "c1", "dave", nil)
	require.NoError(t, err)
	for i := 0; i < 10; i++ {
		d := l.CheckMessage(ctx, "c1", 10)
		require.True(t, d.Allowed, "message %d", i+1)
		require.Equal(t, ReasonOK, d.Reason)
	}
	d := l.CheckMessage(ctx, "c1", 10)
	require.False(t, d.Allowed)
	require.Equal(t, ReasonRateLimitExceeded, d.Reason)
	require.Equal(t, 6*time.Second, d.RetryAfter)
	require.Equal(t, int64(10), d.Limit)

	// No hidden block: exactly RetryAfter later one message passes.
	clk.Advance(d.RetryAfter)
	require.True(t, l.CheckMessage(ctx, "c1", 10).Allowed)
}

func TestMessageTooLarge(t *testing.T) {
	t.Parallel()
	var got []Violation
	l, _ := newTestLimiter(t, Limits{MaxMessageSize: 100, MessagesPerMinute: 1}, func(c *Config) {
		c.Sink = ViolationFunc(func(v Violation) { got = append(got, v) })
	})
	_, err := l.Connect(ctx, "c1", "erin", map[string]string{"user": "erin"})
	require.NoError(t, err)
	d := l.CheckMessage(ctx, "c1", 200)
	require.False(t, d.Allowed)
	require.Equal(t, ReasonMessageTooLarge, d.Reason)
	require.Equal(t, int64(100), d.MaxSize)
	require.Equal(t, Never, d.RetryAfter, "no wait lets an oversized message pass")
	require.Len(t, got, 1)
	require.Equal(t, Violation{Type: ViolationMessageSize, Reason: ReasonMessageTooLarge, Time: t0, ClientID: "erin",
		ConnectionID: "c1", Size: 200, Limit: 100, Current: 200, RetryAfter: Never,
		Metadata: map[string]string{"user": "erin"}}, got[0])
	// The oversized message consumed nothing: the one allowed message passes.
	require.True(t, l.CheckMessage(ctx, "c1", 100).Allowed)
}

func TestUnknownConnection(t *testing.T) {
	t.Parallel()
	l, _ := newTestLimiter(t, DefaultLimits(), nil)
	d := l.CheckMessage(ctx, "nope", 1)
	require.Equal(t, Decision{Reason: ReasonConnectionNotFound}, d)
	_, ok := l.ConnectionInfo("nope")
	require.False(t, ok)
	require.Equal(t, int64(1), l.Statistics().Denied[ReasonConnectionNotFound])
}

func TestStatisticsAndConnectionInfo(t *testing.T) {
	t.Parallel()
	l, clk := newTestLimiter(t, Moderate(), nil)
	for i, c := range []string{"a", "a", "b"} {
		_, err := l.Connect(ctx, fmt.Sprint("c", i), c, map[string]string{"i": fmt.Sprint(i)})
		require.NoError(t, err)
	}
	clk.Advance(time.Second)
	require.True(t, l.CheckMessage(ctx, "c0", 5).Allowed)
	require.True(t, l.CheckMessage(ctx, "c0", len("héllo")).Allowed) // 6 bytes, not 5 characters
	require.True(t, l.CheckMessage(ctx, "c2", 100).Allowed)

	info, ok := l.ConnectionInfo("c0")
	require.True(t, ok)
	require.Equal(t, ConnectionInfo{ConnectionID: "c0", ClientID: "a", ConnectedAt: t0, MessageCount: 2,
		BytesReceived: 11, LastMessageAt: t0.Add(time.Second), Metadata: map[string]string{"i": "0"}}, info)

	s := l.Statistics()
	require.Equal(t, 3, s.ActiveConnections)
	require.Equal(t, 2, s.UniqueClients)
	require.Equal(t, int64(3), s.TotalMessages)
	require.Equal(t, int64(111), s.TotalBytes)
	require.Equal(t, Moderate(), s.Limits)

	// Totals survive the connection that made them.
	require.NoError(t, l.UnregisterConnection(ctx, "c0"))
	s = l.Statistics()
	require.Equal(t, 2, s.ActiveConnections)
	require.Equal(t, int64(3), s.TotalMessages)
	require.Equal(t, int64(111), s.TotalBytes)
}

func TestViolationCallbackGetsConnectionRate(t *testing.T) {
	t.Parallel()
	sink := &recordSink{}
	l, _ := newTestLimiter(t, Limits{ConnectionsPerMinute: 1}, func(c *Config) {
		c.Sink = sink
	})
	require.True(t, l.CheckConnection(ctx, "frank").Allowed)
	require.False(t, l.CheckConnection(ctx, "frank").Allowed)
	got := sink.all()
	require.Len(t, got, 1)
	require.Equal(t, ViolationConnectionRate, got[0].Type)
	require.Equal(t, "frank", got[0].ClientID)
	require.Equal(t, time.Minute, got[0].RetryAfter)
}

type recordSink struct {
	mu sync.Mutex
	vs []Violation
}

func (s *recordSink) HandleViolation(v Violation) {
	s.mu.Lock()
	s.vs = append(s.vs, v)
	s.mu.Unlock()
}

func (s *recordSink) all() []Violation {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Violation(nil), s.vs...)
}

// A panicking callback is recovered and counted and never changes a
// decision (the seed turned such a decision into internal_error).
func TestPanickingCallbackIsRecovered(t *testing.T) {
	t.Parallel()
	l, _ := newTestLimiter(t, Limits{MessagesPerMinute: 1}, func(c *Config) {
		c.Sink = ViolationFunc(func(Violation) { panic("bang") })
	})
	_, err := l.Connect(ctx, "c1", "gina", nil)
	require.NoError(t, err)
	require.True(t, l.CheckMessage(ctx, "c1", 1).Allowed)
	d := l.CheckMessage(ctx, "c1", 1)
	require.Equal(t, ReasonRateLimitExceeded, d.Reason)
	require.Equal(t, int64(1), l.Statistics().ViolationPanics)
	// A layer above the Limiter reports through it: same sink, same count.
	l.Report(Violation{Type: ViolationRoomRate, Reason: ReasonRoomRateExceeded, ClientID: "gina"})
	require.Equal(t, int64(2), l.Statistics().ViolationPanics)
}

// Report delivers a layer's violation to the Limiter's Sink and counts its
// reason; Gate returns the Config's gate, so a layer above needs neither.
func TestReportAndGate(t *testing.T) {
	t.Parallel()
	sink := &recordSink{}
	g := banGate{}
	l, _ := newTestLimiter(t, Limits{}, func(c *Config) {
		c.Sink = sink
		c.Gate = g
	})
	require.NotNil(t, l.Gate())
	v := Violation{Type: ViolationClassRate, Reason: ReasonClassRateExceeded, ClientID: "hal", Class: "typing", Layer: "user"}
	l.Report(v)
	require.Equal(t, []Violation{v}, sink.all())
	require.Equal(t, int64(1), l.Statistics().Denied[ReasonClassRateExceeded])
	l2, _ := newTestLimiter(t, Limits{}, nil)
	require.Nil(t, l2.Gate())
	l2.Report(v) // no sink: counted only
	require.Equal(t, int64(1), l2.Statistics().Denied[ReasonClassRateExceeded])
}

func TestClientsAreIndependent(t *testing.T) {
	t.Parallel()
	l, _ := newTestLimiter(t, Limits{ConnectionsPerMinute: 2, MessagesPerMinute: 1, MessageScope: PerClient}, nil)
	for _, c := range []string{"h", "i"} {
		for j := 0; j < 2; j++ {
			require.True(t, l.CheckConnection(ctx, c).Allowed)
		}
		require.False(t, l.CheckConnection(ctx, c).Allowed)
		require.NoError(t, l.RegisterConnection(ctx, "conn-"+c, c, nil))
		require.True(t, l.CheckMessage(ctx, "conn-"+c, 1).Allowed)
		require.False(t, l.CheckMessage(ctx, "conn-"+c, 1).Allowed)
	}
}

func TestLifecycle(t *testing.T) {
	t.Parallel()
	l, clk := newTestLimiter(t, Strict(), nil)
	d, err := l.Connect(ctx, "c1", "jo", map[string]string{"room": "lobby"})
	require.NoError(t, err)
	require.True(t, d.Allowed)
	require.Equal(t, int64(2), d.Limit)
	require.Equal(t, int64(1), d.Remaining)
	for i := 0; i < 50; i++ {
		require.True(t, l.CheckMessage(ctx, "c1", 10).Allowed)
		clk.Advance(10 * time.Millisecond)
	}
	require.Equal(t, ReasonRateLimitExceeded, l.CheckMessage(ctx, "c1", 10).Reason)
	info, _ := l.ConnectionInfo("c1")
	require.Equal(t, int64(50), info.MessageCount)
	require.NoError(t, l.UnregisterConnection(ctx, "c1"))
	require.Equal(t, ReasonConnectionNotFound, l.CheckMessage(ctx, "c1", 10).Reason)
	require.Equal(t, 0, l.Statistics().ActiveConnections)
	require.NoError(t, l.Close())
	require.NoError(t, l.Close(), "Close is idempotent")
	_, err = l.Connect(ctx, "c2", "jo", nil)
	require.ErrorIs(t, err, ErrClosed)
}

// The seed counted one unit per message against the byte limit, so twenty
// 100-byte messages passed a 1000 B/min limit.
func TestDefectBandwidthCountsBytes(t *testing.T) {
	t.Parallel()
	l, _ := newTestLimiter(t, Limits{BytesPerMinute: 1000, MaxMessageSize: 1000}, nil)
	_, err := l.Connect(ctx, "c1", "kim", nil)
	require.NoError(t, err)
	allowed := 0
	var last Decision
	for i := 0; i < 20; i++ {
		if last = l.CheckMessage(ctx, "c1", 100); last.Allowed {
			allowed++
		}
	}
	require.Equal(t, 10, allowed)
	require.Equal(t, ReasonBandwidthExceeded, last.Reason)
	require.Equal(t, int64(0), last.Remaining)
	require.Equal(t, 6*time.Second, last.RetryAfter) // 100 bytes at 1000 B/min
}

// The seed keyed message buckets by client although they were documented
// per connection.
func TestDefectPerConnectionScopeIsPerConnection(t *testing.T) {
	t.Parallel()
	l, _ := newTestLimiter(t, Limits{MessagesPerMinute: 2}, nil)
	for _, id := range []string{"c1", "c2"} {
		_, err := l.Connect(ctx, id, "lee", nil)
		require.NoError(t, err)
	}
	for _, id := range []string{"c1", "c2"} {
		require.True(t, l.CheckMessage(ctx, id, 1).Allowed)
		require.True(t, l.CheckMessage(ctx, id, 1).Allowed)
		require.False(t, l.CheckMessage(ctx, id, 1).Allowed)
	}
	buckets, _ := l.own.Len()
	require.Zero(t, buckets, "per-connection buckets must not reach the store")
}

// The seed left an entry behind for every client it checked, connected or
// not.
func TestDefectCheckLeavesNoState(t *testing.T) {
	t.Parallel()
	l, clk := newTestLimiter(t, DefaultLimits(), nil)
	for i := 0; i < 100; i++ {
		require.True(t, l.CheckConnection(ctx, fmt.Sprint("ghost-", i)).Allowed)
	}
	clk.Advance(time.Second) // one token of 60/min has refilled
	require.Equal(t, 100, l.own.Sweep(clk.Now()))
	buckets, clients := l.own.Len()
	require.Zero(t, buckets)
	require.Zero(t, clients)
	require.Zero(t, l.Statistics().UniqueClients)
}

// The seed blocked any denied client for 300 s. Here a denial waits only
// what the bucket says, and a denied request consumes nothing.
func TestDefectNoHiddenBlock(t *testing.T) {
	t.Parallel()
	l, clk := newTestLimiter(t, Limits{MessagesPerMinute: 60, ConnectionsPerMinute: 60}, nil)
	_, err := l.Connect(ctx, "c1", "max", nil)
	require.NoError(t, err)
	for i := 0; i < 60; i++ {
		require.True(t, l.CheckMessage(ctx, "c1", 1).Allowed)
	}
	for i := 0; i < 5; i++ { // repeated denials add nothing
		d := l.CheckMessage(ctx, "c1", 1)
		require.Equal(t, time.Second, d.RetryAfter)
	}
	clk.Advance(time.Second)
	require.True(t, l.CheckMessage(ctx, "c1", 1).Allowed)
	clk.Advance(time.Minute)
	for i := 0; i < 60; i++ {
		require.True(t, l.CheckMessage(ctx, "c1", 1).Allowed, "message %d after a minute", i)
	}
}

// The seed checked, accepted and registered in separate steps, so 8
// concurrent connects with a maximum of 2 all succeeded.
func TestDefectConnectRace(t *testing.T) {
	t.Parallel()
	l, _ := newTestLimiter(t, Limits{MaxConcurrentConnections: 2}, nil)
	var admitted atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			d, err := l.Connect(ctx, fmt.Sprint("race-", i), "racer", nil)
			if err == nil && d.Allowed {
				admitted.Add(1)
			}
		}()
	}
	close(start)
	wg.Wait()
	require.Equal(t, int64(2), admitted.Load())
	require.Equal(t, 2, l.ClientConnections("racer"))
	n, err := l.ClusterConnections(ctx, "racer")
	require.NoError(t, err)
	require.Equal(t, int64(2), n)
	require.Equal(t, int64(62), l.Statistics().Denied[ReasonTooManyConnections])
}

func TestConnectDeniedConsumesNothing(t *testing.T) {
	t.Parallel()
	l, _ := newTestLimiter(t, Limits{ConnectionsPerMinute: 3, MaxConcurrentConnections: 1}, nil)
	_, err := l.Connect(ctx, "c1", "ned", nil)
	require.NoError(t, err)
	for i := 0; i < 5; i++ {
		d, err := l.Connect(ctx, fmt.Sprint("x", i), "ned", nil)
		require.NoError(t, err)
		require.Equal(t, ReasonTooManyConnections, d.Reason)
	}
	require.NoError(t, l.UnregisterConnection(ctx, "c1"))
	// Two connection-rate tokens remain: the five denials took none.
	for i := 0; i < 2; i++ {
		d, err := l.Connect(ctx, fmt.Sprint("y", i), "ned", nil)
		require.NoError(t, err)
		require.True(t, d.Allowed)
		require.NoError(t, l.UnregisterConnection(ctx, fmt.Sprint("y", i)))
	}
	d, _ := l.Connect(ctx, "z", "ned", nil)
	require.Equal(t, ReasonConnectionRateExceeded, d.Reason)
}

func TestDuplicateConnectionID(t *testing.T) {
	t.Parallel()
	l, _ := newTestLimiter(t, Limits{ConnectionsPerMinute: 2, MaxConcurrentConnections: 5}, nil)
	_, err := l.Connect(ctx, "c1", "oz", nil)
	require.NoError(t, err)
	_, err = l.Connect(ctx, "c1", "oz", nil)
	require.ErrorIs(t, err, ErrDuplicateConnection)
	require.ErrorIs(t, l.RegisterConnection(ctx, "c1", "oz", nil), ErrDuplicateConnection)
	n, _ := l.ClusterConnections(ctx, "oz")
	require.Equal(t, int64(1), n, "a refused duplicate must give back its slot")
	d, _ := l.Connect(ctx, "c2", "oz", nil)
	require.True(t, d.Allowed, "a refused duplicate must give back its rate token")
}

func TestPerClientScopeBandwidthRefundsMessage(t *testing.T) {
	t.Parallel()
	l, _ := newTestLimiter(t, Limits{MessagesPerMinute: 3, BytesPerMinute: 100, MaxMessageSize: 100, MessageScope: PerClient}, nil)
	_, err := l.Connect(ctx, "c1", "pat", nil)
	require.NoError(t, err)
	require.True(t, l.CheckMessage(ctx, "c1", 90).Allowed)
	for i := 0; i < 3; i++ {
		require.Equal(t, ReasonBandwidthExceeded, l.CheckMessage(ctx, "c1", 20).Reason)
	}
	// The bandwidth denials took no message tokens: two remain.
	require.True(t, l.CheckMessage(ctx, "c1", 5).Allowed)
	require.True(t, l.CheckMessage(ctx, "c1", 5).Allowed)
	require.Equal(t, ReasonRateLimitExceeded, l.CheckMessage(ctx, "c1", 0).Reason)
}

func TestRefundMessage(t *testing.T) {
	t.Parallel()
	for _, scope := range []Scope{PerConnection, PerClient} {
		t.Run(scope.String(), func(t *testing.T) {
			t.Parallel()
			l, _ := newTestLimiter(t, Limits{MessagesPerMinute: 1, BytesPerMinute: 10, MaxMessageSize: 10, MessageScope: scope}, nil)
			_, err := l.Connect(ctx, "c1", "quin", nil)
			require.NoError(t, err)
			require.True(t, l.CheckMessage(ctx, "c1", 10).Allowed)
			l.RefundMessage(ctx, "c1", 10)
			require.True(t, l.CheckMessage(ctx, "c1", 10).Allowed)
			info, _ := l.ConnectionInfo("c1")
			require.Equal(t, int64(1), info.MessageCount)
			require.Equal(t, int64(10), info.BytesReceived)
		})
	}
}

type banGate map[string]time.Time

func (g banGate) BannedUntil(client string, now time.Time) (time.Time, bool) {
	until, ok := g[client]
	if !ok || (!until.IsZero() && !now.Before(until)) {
		return time.Time{}, false
	}
	return until, true
}

func TestGateBans(t *testing.T) {
	t.Parallel()
	sink := &recordSink{}
	l, clk := newTestLimiter(t, Limits{ConnectionsPerMinute: 1}, func(c *Config) {
		c.Gate = banGate{"rex": t0.Add(30 * time.Second), "sam": {}}
		c.Sink = sink
	})
	d, err := l.Connect(ctx, "c1", "rex", nil)
	require.NoError(t, err)
	require.Equal(t, Decision{Reason: ReasonBanned, RetryAfter: 30 * time.Second}, d)
	require.Equal(t, ReasonBanned, l.CheckConnection(ctx, "sam").Reason)
	require.Equal(t, ViolationBanned, sink.all()[0].Type)
	clk.Advance(30 * time.Second)
	d, _ = l.Connect(ctx, "c1", "rex", nil)
	require.True(t, d.Allowed, "a ban consumed no connection token and has expired")
}

type failingStore struct{ MemoryStore }

func (*failingStore) Take(context.Context, Key, Spec, time.Time, int64) (Result, error) {
	return Result{}, fmt.Errorf("backend down: %w", ErrUnavailable)
}

func (*failingStore) Acquire(context.Context, string, int64) (int64, bool, error) {
	return 0, false, ErrUnavailable
}

func TestStoreUnavailable(t *testing.T) {
	t.Parallel()
	fs := &failingStore{}
	sink := &recordSink{}
	l, _ := newTestLimiter(t, Limits{ConnectionsPerMinute: 1, MessagesPerMinute: 5, MessageScope: PerClient}, func(c *Config) {
		c.Store = fs
		c.Slots = NewMemoryStore(MemoryStoreConfig{SweepInterval: -1})
		c.Sink = sink
	})
	d, err := l.Connect(ctx, "c1", "tia", nil)
	require.NoError(t, err)
	require.Equal(t, ReasonStoreUnavailable, d.Reason)
	require.NoError(t, l.RegisterConnection(ctx, "c1", "tia", nil))
	require.Equal(t, ReasonStoreUnavailable, l.CheckMessage(ctx, "c1", 1).Reason)
	require.Nil(t, l.own, "both stores given: the limiter owns none")
	// Both denials reach the sink as store_unavailable violations.
	vs := sink.all()
	require.Len(t, vs, 2)
	for _, v := range vs {
		require.Equal(t, ViolationStoreUnavailable, v.Type)
		require.Equal(t, "tia", v.ClientID)
	}
	require.Equal(t, "c1", vs[1].ConnectionID)
	require.Equal(t, int64(2), l.Statistics().Denied[ReasonStoreUnavailable])

	l2, _ := newTestLimiter(t, Limits{MaxConcurrentConnections: 1}, func(c *Config) { c.Slots = fs })
	d, _ = l2.Connect(ctx, "c1", "tia", nil)
	require.Equal(t, ReasonStoreUnavailable, d.Reason)
}

func TestNewRejectsInvalidLimits(t *testing.T) {
	t.Parallel()
	_, err := New(Config{Limits: Limits{MessagesPerMinute: -1}})
	var fe *FieldError
	require.ErrorAs(t, err, &fe)
	require.Equal(t, "MessagesPerMinute", fe.Field)
	require.True(t, errors.Is(err, ErrInvalidLimits))
}

// Close's contract: every later check denies. CheckMessage used to go on
// allowing a connection registered before Close.
func TestCheckMessageAfterClose(t *testing.T) {
	t.Parallel()
	l, err := New(Config{Limits: Limits{MessagesPerMinute: 100}})
	require.NoError(t, err)
	_, err = l.Connect(ctx, "c1", "kim", nil)
	require.NoError(t, err)
	require.True(t, l.CheckMessage(ctx, "c1", 10).Allowed)
	require.NoError(t, l.Close())
	d := l.CheckMessage(ctx, "c1", 10)
	require.False(t, d.Allowed)
	require.Equal(t, ReasonStoreUnavailable, d.Reason)
	require.Equal(t, int64(1), l.Statistics().Denied[ReasonStoreUnavailable])
	require.Equal(t, ReasonStoreUnavailable, l.CheckConnection(ctx, "kim").Reason)
	require.ErrorIs(t, l.RegisterConnection(ctx, "c2", "kim", nil), ErrClosed)
}

// CheckMessageAt decides at the time it is given, not the Limiter's clock,
// which Now reads.
func TestCheckMessageAt(t *testing.T) {
	t.Parallel()
	l, clk := newTestLimiter(t, Limits{MessagesPerMinute: 1}, nil)
	require.Equal(t, clk.Now(), l.Now())
	_, err := l.Connect(ctx, "c1", "ivy", nil)
	require.NoError(t, err)
	t0 := clk.Now()
	steps := []struct {
		at        time.Duration
		wantOK    bool
		wantRetry time.Duration
	}{
		{0, true, 0},
		{0, false, time.Minute},
		{30 * time.Second, false, 30 * time.Second},
		{time.Minute, true, 0},
		{30 * time.Second, false, time.Minute}, // behind the bucket's last time: nothing refills
	}
	for i, s := range steps {
		d := l.CheckMessageAt(ctx, "c1", 1, t0.Add(s.at))
		require.Equal(t, s.wantOK, d.Allowed, "step %d", i)
		require.Equal(t, s.wantRetry, d.RetryAfter, "step %d", i)
	}
	require.Equal(t, t0, clk.Now(), "the clock was not read forward")
}
