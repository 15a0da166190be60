package policy

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

var t0 = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

func exampleTable(t testing.TB) *Table {
	t.Helper()
	return benchTable(t)
}

func newChecker(t testing.TB) *Checker {
	t.Helper()
	local := limiter.NewMemoryStore(limiter.MemoryStoreConfig{SweepInterval: -1})
	shared := limiter.NewMemoryStore(limiter.MemoryStoreConfig{SweepInterval: -1})
	t.Cleanup(func() { local.Close(); shared.Close() })
	return &Checker{Local: local, Shared: shared}
}

// take runs n takes and returns how many passed and the first denial.
func take(t *testing.T, c *Checker, tab *Table, tier, class, room string, sub Subject, n int) (int, Denial) {
	t.Helper()
	r, id := tab.Tier(tier), tab.Class(class)
	var rule *RoomRule
	if room != "" {
		rule = tab.Room(room)
		sub.Room = room
	}
	passed := 0
	var first Denial
	for range n {
		d, ok, err := c.Take(context.Background(), r, rule, id, sub, t0)
		require.NoError(t, err)
		if ok {
			passed++
		} else if first.Class == "" {
			first = d
		}
	}
	return passed, first
}

func TestTypingFloodRefusedWhileMessagesPass(t *testing.T) {
	tab, c := exampleTable(t), newChecker(t)
	ada := Subject{Connection: "c1", User: "ada", Address: "203.0.113.7"}
	n, d := take(t, c, tab, "free", "typing", "", ada, 50)
	require.Equal(t, 5, n, "typing burst per connection")
	require.Equal(t, Denial{Class: "typing", Layer: LayerConnection, Limit: 20, RetryAfter: 500 * time.Millisecond}, d)
	n, _ = take(t, c, tab, "free", "message", "", ada, 10)
	require.Equal(t, 10, n, "messages have their own buckets")
}

func TestUserLimitSharedAcrossConnectionsAndAddresses(t *testing.T) {
	tab, c := exampleTable(t), newChecker(t)
	total := 0
	var d Denial
	for i := range 3 {
		sub := Subject{Connection: fmt.Sprint("c", i), User: "ada", Address: fmt.Sprint("198.51.100.", i)}
		n, den := take(t, c, tab, "free", "typing", "", sub, 4)
		total += n
		if den.Class != "" {
			d = den
		}
	}
	require.Equal(t, 5, total, "one user burst of typing over three connections")
	require.Equal(t, LayerUser, d.Layer)
	require.Equal(t, "user", d.Layer.String())
}

func TestAnonymousClientsShareTheAddressLimit(t *testing.T) {
	tab, c := exampleTable(t), newChecker(t)
	total := 0
	var d Denial
	for i := range 4 {
		sub := Subject{Connection: fmt.Sprint("anon-", i), Address: "2001:db8:1:2::/64"}
		n, den := take(t, c, tab, "", "message", "", sub, 10)
		total += n
		if den.Class != "" {
			d = den
		}
	}
	require.Equal(t, 30, total, "the address burst, though each connection may send 10")
	require.Equal(t, LayerAddress, d.Layer)
	require.Equal(t, int64(300), d.Limit)
}

func TestProUserGetsProLimits(t *testing.T) {
	tab, c := exampleTable(t), newChecker(t)
	n, d := take(t, c, tab, "pro", "message", "", Subject{Connection: "p1", User: "pat"}, 60)
	require.Equal(t, 50, n)
	require.Equal(t, LayerConnection, d.Layer)
	require.Equal(t, int64(300), d.Limit)
	n, _ = take(t, c, tab, "free", "message", "", Subject{Connection: "f1", User: "fay"}, 60)
	require.Equal(t, 10, n)
}

func TestCostAndRoomLayer(t *testing.T) {
	tab, c := exampleTable(t), newChecker(t)
	n, d := take(t, c, tab, "free", "file", "", Subject{Connection: "c1"}, 5)
	require.Equal(t, 3, n, "30-token burst, 10 a file")
	require.Equal(t, int64(0), d.Remaining)

	// The room layer: 60 in a room without a rule of its own, 100 in the
	// lobby, across many connections (each within its own burst).
	for room, want := range map[string]int{"game": 60, "lobby": 100} {
		total := 0
		for i := range 20 {
			n, _ := take(t, c, tab, "free", "message", room, Subject{Connection: fmt.Sprint(room, i)}, 10)
			total += n
		}
		require.Equal(t, want, total, room)
	}
}

func TestDeniedTakeConsumesNothing(t *testing.T) {
	tab, c := exampleTable(t), newChecker(t)
	// Exhaust ada's user typing bucket from other connections.
	for i := range 5 {
		n, _ := take(t, c, tab, "free", "typing", "", Subject{Connection: fmt.Sprint("o", i), User: "ada"}, 1)
		require.Equal(t, 1, n)
	}
	// c1 is refused by the user layer 10 times; its own bucket is intact.
	n, d := take(t, c, tab, "free", "typing", "", Subject{Connection: "c1", User: "ada"}, 10)
	require.Zero(t, n)
	require.Equal(t, LayerUser, d.Layer)
	n, _ = take(t, c, tab, "free", "typing", "", Subject{Connection: "c1", User: "bob"}, 10)
	require.Equal(t, 5, n, "the connection bucket was refunded each time")

	// Refund gives back an allowed take.
	r, id := tab.Tier("free"), tab.Class("file")
	sub := Subject{Connection: "c9"}
	for range 3 {
		_, ok, _ := c.Take(ctx, r, nil, id, sub, t0)
		require.True(t, ok)
		c.Refund(ctx, r, nil, id, sub, t0)
	}
	n, _ = take(t, c, tab, "free", "file", "", sub, 5)
	require.Equal(t, 3, n)
}

type brokenStore struct{ limiter.Store }

func (brokenStore) Take(context.Context, limiter.Key, limiter.Spec, time.Time, int64) (limiter.Result, error) {
	return limiter.Result{}, limiter.ErrUnavailable
}

func TestStoreErrorRefundsEarlierLayers(t *testing.T) {
	tab := exampleTable(t)
	local := limiter.NewMemoryStore(limiter.MemoryStoreConfig{SweepInterval: -1})
	defer local.Close()
	c := &Checker{Local: local, Shared: brokenStore{}}
	_, ok, err := c.Take(ctx, tab.Tier("free"), nil, tab.Class("message"), Subject{Connection: "c1", User: "ada"}, t0)
	require.False(t, ok)
	require.ErrorIs(t, err, limiter.ErrUnavailable)
	ok2 := 0
	for range 20 {
		if local.TakeAt(limiter.Key{Kind: LayerConnection.Kind(), Scope: "message", ID: "c1"}, limiter.Spec{Limit: 60, Burst: 10}, t0, 1).OK {
			ok2++
		}
	}
	require.Equal(t, 10, ok2, "the connection layer was refunded")

	// NoClass takes nothing; no Local means Shared for every layer.
	_, ok, err = (&Checker{Shared: brokenStore{}}).Take(ctx, tab.Tier(""), nil, NoClass, Subject{Connection: "c1"}, t0)
	require.True(t, ok)
	require.NoError(t, err)
}

func TestCheckerAllocatesNothing(t *testing.T) {
	tab, c := exampleTable(t), newChecker(t)
	r, rule := tab.Tier("pro"), tab.Room("lobby")
	sub := Subject{Connection: "c1", User: "ada", Address: "203.0.113.7", Room: "lobby"}
	now := t0
	n := testing.AllocsPerRun(1000, func() {
		now = now.Add(time.Second)
		for _, ft := range frameTypes {
			_, _, _ = c.Take(ctx, r, rule, tab.ClassBytes(ft), sub, now)
		}
	})
	require.Zero(t, n)
}

// BenchmarkCheckerTake measures the class check of one message over the
// four layers, against one MemoryStore.Take (what a single per-client
// message bucket costs today), in the same run.
func BenchmarkCheckerTake(b *testing.B) {
	tab := exampleTable(b)
	c := newChecker(b)
	r, rule := tab.Tier("pro"), tab.Room("lobby")
	subs := make([]Subject, 1024)
	for i := range subs {
		subs[i] = Subject{Connection: fmt.Sprint("c", i), User: fmt.Sprint("u", i%256), Address: fmt.Sprint("a", i%64), Room: "lobby"}
	}
	b.Run("layers=4", func(b *testing.B) {
		b.ReportAllocs()
		now := t0
		for i := 0; b.Loop(); i++ {
			now = now.Add(time.Microsecond)
			_, _, _ = c.Take(ctx, r, rule, tab.ClassBytes(frameTypes[i&7]), subs[i&1023], now)
		}
	})
	b.Run("baseline=one-bucket", func(b *testing.B) {
		b.ReportAllocs()
		now := t0
		spec := limiter.Spec{Limit: 1 << 30}
		for i := 0; b.Loop(); i++ {
			now = now.Add(time.Microsecond)
			_, _ = c.Shared.Take(ctx, limiter.Key{Kind: limiter.KindMessages, ID: subs[i&1023].Connection}, spec, now, 1)
		}
	})
}
