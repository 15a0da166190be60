package wshandler

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
	"github.com/ratethrottle/ratethrottle/pkg/policy"
	"github.com/ratethrottle/ratethrottle/pkg/subject"
)

// sendUntilDenied sends room messages on c, the room's only member here,
// until one is refused, and returns how many passed and the refusal. It
// stops after max messages.
func sendUntilDenied(t *testing.T, c *websocket.Conn, room string, max int) (int, reply) {
	t.Helper()
	for i := 0; i < max; i++ {
		send(t, c, msg(room, i))
		if r := recv(t, c); r.Error != "" {
			return i, r
		}
	}
	t.Fatalf("%d messages to %q passed, none refused", max, room)
	return 0, reply{}
}

// A room's message rate lowered at run time is enforced on an open
// connection, which stays open and in the room.
func TestSetRoomLimitsLowersRateOnOpenConnection(t *testing.T) {
	t.Parallel()
	n, _ := roomNode(t, Config{MaxDenials: -1, Rooms: map[string]RoomLimits{"lobby": {MessagesPerMinute: 1000}}}, limiter.Limits{})
	a := dialAs(t, n, "alice")
	join(t, a, "lobby")
	for i := 0; i < 10; i++ { // 990 of 1000 left
		send(t, a, msg("lobby", i))
		if r := recv(t, a); r.Type != TypeMessage {
			t.Fatalf("message %d before the change: %+v", i, r)
		}
	}
	if err := n.h.SetRoomLimits(map[string]RoomLimits{"lobby": {MessagesPerMinute: 100}}, nil, RoomLimits{}); err != nil {
		t.Fatal(err)
	}
	// 99% of the new burst of 100: 99 messages, then a refusal naming the new limit.
	passed, r := sendUntilDenied(t, a, "lobby", 200)
	if passed != 99 || r.Error != ErrorCode(limiter.ReasonRoomRateExceeded) || r.Limit != 100 {
		t.Fatalf("after lowering to 100/min: %d passed, then %+v; want 99 and room_rate_exceeded with limit 100", passed, r)
	}
	// Still open and still a member: a leave is answered.
	send(t, a, map[string]string{"type": "leave", "room": "lobby", "id": "l"})
	if r := recv(t, a); r.Type != TypeLeft || r.ID != "l" {
		t.Fatalf("leave after the change: %+v", r)
	}
}

// A bucket drained to half is rescaled to half of the new burst, not
// refilled, in the room's total bucket and its member's bucket alike.
func TestSetRoomLimitsKeepsBucketLevel(t *testing.T) {
	t.Parallel()
	n, clk := roomNode(t, Config{MaxDenials: -1, DefaultRoom: RoomLimits{MessagesPerMinute: 10, MemberMessagesPerMinute: 10}}, limiter.Limits{})
	a := dialAs(t, n, "alice")
	join(t, a, "r")
	for i := 0; i < 5; i++ {
		send(t, a, msg("r", i))
		if r := recv(t, a); r.Type != TypeMessage {
			t.Fatalf("message %d: %+v", i, r)
		}
	}
	if err := n.h.SetRoomLimits(nil, nil, RoomLimits{MessagesPerMinute: 20, MemberMessagesPerMinute: 40}); err != nil {
		t.Fatal(err)
	}
	store := n.h.Limiter().Store()
	member := limiter.Key{Kind: KindRoomMember, Scope: "r", ID: "alice"}
	// Asking for the whole burst is refused and says what is left: half of 40.
	if res, _ := store.Take(context.Background(), member, limiter.PerMinute(40), clk.Now(), 40); res.OK || res.Remaining != 20 {
		t.Errorf("member bucket after the change: %+v, want 20 of 40 left", res)
	}
	// The room's bucket holds half of 20: ten messages, then a refusal.
	passed, r := sendUntilDenied(t, a, "r", 30)
	if passed != 10 || r.Error != ErrorCode(limiter.ReasonRoomRateExceeded) || r.Limit != 20 {
		t.Errorf("after raising the room to 20/min: %d passed, then %+v; want 10 (half of 20) and a refusal with limit 20", passed, r)
	}
}

// A raised MaxMembers admits a join refused before; a lowered one evicts
// no member and refuses the next join. With RoomSlots the shared count
// includes the members who joined while the room had no cap.
func TestSetRoomLimitsMaxMembers(t *testing.T) {
	t.Parallel()
	for _, shared := range []bool{false, true} {
		cfg := Config{MaxDenials: -1, Rooms: map[string]RoomLimits{"vip": {MaxMembers: 1}}}
		var slots *limiter.MemoryStore
		if shared {
			slots = limiter.NewMemoryStore(limiter.MemoryStoreConfig{SweepInterval: -1})
			t.Cleanup(func() { _ = slots.Close() })
			cfg.RoomSlots = slots
		}
		n, _ := roomNode(t, cfg, limiter.Limits{})
		a, b, c := dialAs(t, n, "alice"), dialAs(t, n, "bob"), dialAs(t, n, "carol")
		join(t, a, "vip")
		send(t, b, map[string]string{"type": "join", "room": "vip"})
		if r := recv(t, b); r.Error != ErrorCode(limiter.ReasonRoomFull) || r.Limit != 1 {
			t.Fatalf("shared %v: bob's join under a cap of 1: %+v", shared, r)
		}
		if err := n.h.SetRoomLimits(map[string]RoomLimits{"vip": {MaxMembers: 2}}, nil, RoomLimits{}); err != nil {
			t.Fatal(err)
		}
		join(t, b, "vip") // refused before, admitted now
		if err := n.h.SetRoomLimits(map[string]RoomLimits{"vip": {MaxMembers: 1}}, nil, RoomLimits{}); err != nil {
			t.Fatal(err)
		}
		send(t, c, map[string]string{"type": "join", "room": "vip"})
		if r := recv(t, c); r.Error != ErrorCode(limiter.ReasonRoomFull) || r.Limit != 1 {
			t.Errorf("shared %v: carol's join after lowering the cap to 1: %+v", shared, r)
		}
		// Both members stay: a message reaches both.
		send(t, b, msg("vip", "still here"))
		for _, m := range []*websocket.Conn{a, b} {
			if r := recv(t, m); r.Type != TypeMessage {
				t.Errorf("shared %v: member after lowering the cap: %+v", shared, r)
			}
		}
		// No cap, then a cap of 2 on the room's two members.
		if err := n.h.SetRoomLimits(nil, nil, RoomLimits{}); err != nil {
			t.Fatal(err)
		}
		join(t, c, "vip")
		if shared {
			if got, _ := slots.Count(context.Background(), "room:"+subject.Token("vip")); got != 3 {
				t.Errorf("shared slots count %d members, want 3", got)
			}
		}
		if err := n.h.SetRoomLimits(map[string]RoomLimits{"vip": {MaxMembers: 3}}, nil, RoomLimits{}); err != nil {
			t.Fatal(err)
		}
		d := dialAs(t, n, "dave")
		send(t, d, map[string]string{"type": "join", "room": "vip"})
		if r := recv(t, d); r.Error != ErrorCode(limiter.ReasonRoomFull) || r.Limit != 3 {
			t.Errorf("shared %v: dave's join after a cap of 3 on 3 members who joined uncapped: %+v", shared, r)
		}
	}
}

// Invalid rules name the field as New does and change nothing.
func TestSetRoomLimitsInvalidChangesNothing(t *testing.T) {
	t.Parallel()
	n, _ := roomNode(t, Config{MaxDenials: -1, DefaultRoom: RoomLimits{MaxMembers: 1}}, limiter.Limits{})
	a, b := dialAs(t, n, "alice"), dialAs(t, n, "bob")
	join(t, a, "r")
	for _, tc := range []struct {
		field string
		set   func() error
	}{
		{`Rooms["r"].MaxMembers`, func() error {
			return n.h.SetRoomLimits(map[string]RoomLimits{"r": {MaxMembers: -1}}, nil, RoomLimits{})
		}},
		{`RoomPatterns[0].Pattern`, func() error {
			return n.h.SetRoomLimits(nil, []RoomPattern{{Pattern: ""}}, RoomLimits{})
		}},
		{`DefaultRoom.MessageBurst`, func() error {
			return n.h.SetRoomLimits(nil, nil, RoomLimits{MessageBurst: 5})
		}},
	} {
		err := tc.set()
		var fe *limiter.FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field || !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("got %v, want a FieldError for %s", err, tc.field)
		}
	}
	send(t, b, map[string]string{"type": "join", "room": "r"})
	if r := recv(t, b); r.Error != ErrorCode(limiter.ReasonRoomFull) || r.Limit != 1 {
		t.Errorf("a refused change changed the room: %+v", r)
	}
}

// soleMember connects one client to n, joins it to the room name and
// returns the room and the server side of the connection, for calling the room path
// directly.
func soleMember(tb testing.TB, n *node, name string) (*room, *Conn) {
	tb.Helper()
	join(tb, dialAs(tb, n, "alice"), name)
	n.h.hub.mu.Lock()
	r := n.h.hub.rooms[name]
	n.h.hub.mu.Unlock()
	n.h.mu.Lock()
	defer n.h.mu.Unlock()
	for c := range n.h.conns {
		return r, c
	}
	tb.Fatal("no connection")
	return nil, nil
}

// The room message path with live rules allocates nothing.
func TestRoomMessageAllocatesNothing(t *testing.T) {
	n, _ := roomNode(t, Config{MaxDenials: -1, DefaultRoom: RoomLimits{MessagesPerMinute: 1 << 40, MemberMessagesPerMinute: 1 << 40}},
		limiter.Limits{MessagesPerMinute: 1 << 40})
	r, c := soleMember(t, n, "r")
	run := func() {
		if e, ok := c.roomMessage(r, 64, "", nil, policy.NoClass); !ok {
			t.Fatalf("denied: %+v", e)
		}
	}
	run()
	if allocs := testing.AllocsPerRun(1000, run); allocs != 0 {
		t.Errorf("%v allocations per room message", allocs)
	}
}

// Changes of the room rules racing room messages, joins and leaves on
// several connections: every connection stays open and every message is
// answered (relayed or refused), under -race.
func TestSetRoomLimitsRacesMessages(t *testing.T) {
	t.Parallel()
	n, _ := roomNode(t, Config{MaxDenials: -1, DefaultRoom: RoomLimits{MessagesPerMinute: 1000, MemberMessagesPerMinute: 1000}}, limiter.Limits{})
	const clients, msgs, changes = 4, 50, 50
	conns := make([]*websocket.Conn, clients)
	for i := range conns {
		conns[i] = dialAs(t, n, "u"+string(rune('a'+i)))
		join(t, conns[i], "own"+string(rune('a'+i)))
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < changes; i++ {
			rl := RoomLimits{MessagesPerMinute: int64(10 + i%3*500), MemberMessagesPerMinute: int64(5 + i%2*500), MaxMembers: int64(i % 3)}
			if err := n.h.SetRoomLimits(map[string]RoomLimits{"owna": rl}, []RoomPattern{{Pattern: "own*", Limits: rl}}, rl); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	errs := make(chan error, clients)
	for i, c := range conns {
		room := "own" + string(rune('a'+i))
		go func() {
			for k := 0; k < msgs; k++ {
				_ = c.SetWriteDeadline(time.Now().Add(ioTimeout))
				if err := c.WriteJSON(msg(room, k)); err != nil {
					errs <- err
					return
				}
				_ = c.SetReadDeadline(time.Now().Add(ioTimeout))
				var r reply
				if err := c.ReadJSON(&r); err != nil {
					errs <- err
					return
				}
				if r.Type != TypeMessage && r.Error != ErrorCode(limiter.ReasonRoomRateExceeded) {
					errs <- fmt.Errorf("%s: %+v", room, r)
					return
				}
			}
			errs <- nil
		}()
	}
	for range conns {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	<-done
	if st := n.h.Stats(); st.Rooms != clients {
		t.Errorf("%d rooms open, want %d: a change left a room", st.Rooms, clients)
	}
}

// BenchmarkRoomMessage is the room layers of one message (the Limiter's
// check, the member and room buckets in a MemoryStore), called directly
// on an open connection: the cost of loading the room's live rules.
func BenchmarkRoomMessage(b *testing.B) {
	n, _ := roomNode(b, Config{MaxDenials: -1, DefaultRoom: RoomLimits{MessagesPerMinute: 1 << 40, MemberMessagesPerMinute: 1 << 40}},
		limiter.Limits{MessagesPerMinute: 1 << 40})
	r, conn := soleMember(b, n, "r")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if e, ok := conn.roomMessage(r, 64, "", nil, policy.NoClass); !ok {
			b.Fatalf("denied: %+v", e)
		}
	}
}

// brokenSlots is a limiter.Slots whose store is down; it counts Releases.
type brokenSlots struct{ released atomic.Int64 }

func (s *brokenSlots) Acquire(context.Context, string, int64) (int64, bool, error) {
	return 0, false, errors.New("store down")
}
func (s *brokenSlots) Release(context.Context, string) error { s.released.Add(1); return nil }
func (s *brokenSlots) Count(context.Context, string) (int64, error) {
	return 0, errors.New("store down")
}

// With RoomSlots down, a room without a cap still admits joins (there is
// nothing to enforce) and its members release no slot they never took; a
// capped room refuses the join as store_unavailable.
func TestRoomSlotsDownAdmitsUncappedRooms(t *testing.T) {
	t.Parallel()
	slots := &brokenSlots{}
	n, _ := roomNode(t, Config{MaxDenials: -1, RoomSlots: slots, Rooms: map[string]RoomLimits{"capped": {MaxMembers: 5}}}, limiter.Limits{})
	a := dialAs(t, n, "alice")
	join(t, a, "open")
	send(t, a, map[string]string{"type": "join", "room": "capped"})
	if r := recv(t, a); r.Error != ErrorCode(limiter.ReasonStoreUnavailable) {
		t.Errorf("join of a capped room with the slots down: %+v", r)
	}
	send(t, a, map[string]string{"type": "leave", "room": "open"})
	if r := recv(t, a); r.Type != TypeLeft {
		t.Fatalf("leave: %+v", r)
	}
	if got := slots.released.Load(); got != 0 {
		t.Errorf("%d slots released, none taken", got)
	}
}
