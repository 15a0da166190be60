package wshandler

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
	"github.com/ratethrottle/ratethrottle/pkg/subject"
)

// clock is a settable time source shared by a Limiter and a Handler.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}

func (c *clock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// dialAs connects as the client user (through KeyFunc QueryParam("user")).
func dialAs(t testing.TB, n *node, user string) *websocket.Conn {
	t.Helper()
	c, resp, err := websocket.DefaultDialer.Dial(n.url+"?user="+user, nil)
	if err != nil {
		t.Fatalf("dial %s: %v (response %v)", user, err, resp)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// roomNode starts a room-protocol node with a fake clock and per-user keys.
func roomNode(t testing.TB, cfg Config, lim limiter.Limits) (*node, *clock) {
	t.Helper()
	return roomNodeWith(t, cfg, limiter.Config{Limits: lim})
}

// roomNodeWith is roomNode with a Limiter of lc (its Sink, its Gate) on
// the test clock.
func roomNodeWith(t testing.TB, cfg Config, lc limiter.Config) (*node, *clock) {
	t.Helper()
	clk := newClock()
	lc.Now = clk.Now
	cfg.Limiter, cfg.Now, cfg.KeyFunc = newLimiter(t, lc), clk.Now, QueryParam("user", nil)
	return newNode(t, cfg, limiter.Limits{}), clk
}

func TestRoomJoinMessageLeave(t *testing.T) {
	t.Parallel()
	n, _ := roomNode(t, Config{}, limiter.Limits{})
	a, b := dialAs(t, n, "alice"), dialAs(t, n, "bob")
	join(t, a, "lobby")
	join(t, b, "lobby")
	send(t, a, msg("lobby", map[string]string{"text": "hi"}))
	for _, c := range []*websocket.Conn{a, b} {
		r := recv(t, c)
		if r.Type != TypeMessage || r.Room != "lobby" || string(r.Data) != `{"text":"hi"}` || r.From == "" {
			t.Errorf("got %+v", r)
		}
	}
	send(t, b, map[string]string{"type": "leave", "room": "lobby", "id": "l1"})
	if r := recv(t, b); r.Type != TypeLeft || r.Room != "lobby" || r.ID != "l1" {
		t.Errorf("leave: %+v", r)
	}
	send(t, b, msg("lobby", 1))
	if r := recv(t, b); r.Error != CodeNotMember || r.Room != "lobby" {
		t.Errorf("message after leave: %+v", r)
	}
	send(t, a, map[string]string{"type": "join", "room": "lobby"})
	if r := recv(t, a); r.Error != CodeAlreadyIn {
		t.Errorf("second join: %+v", r)
	}
	if got := n.h.Stats().Rooms; got != 1 {
		t.Errorf("Rooms %d, want 1", got)
	}
	send(t, a, map[string]string{"type": "leave", "room": "lobby"})
	recv(t, a)
	waitFor(t, ioTimeout, "the idle room to be dropped", func() bool { return n.h.Stats().Rooms == 0 })
}

// TestRoomLayers walks a message through every layer and checks that a
// denial in any layer leaves every layer as it was.
func TestRoomLayers(t *testing.T) {
	t.Parallel()
	s := &sink{}
	cfg := Config{
		MaxDenials:  -1,
		DefaultRoom: RoomLimits{MessagesPerMinute: 3, MemberMessagesPerMinute: 2},
		Rooms:       map[string]RoomLimits{"small": {MaxMessageSize: 50}},
	}
	n, clk := roomNodeWith(t, cfg, limiter.Config{Limits: limiter.Limits{MessagesPerMinute: 100}, Sink: s})
	a, b := dialAs(t, n, "alice"), dialAs(t, n, "bob")
	join(t, a, "lobby")
	join(t, b, "lobby")
	lim, store := n.h.Limiter(), n.h.Limiter().Store()
	counts := func() (int64, int64) {
		var ca, cb int64
		for _, id := range n.h.connIDs() {
			info, _ := lim.ConnectionInfo(id)
			if info.ClientID == "alice" {
				ca = info.MessageCount
			} else {
				cb = info.MessageCount
			}
		}
		return ca, cb
	}
	// Alice: two messages pass, the third meets her member rate.
	for i := 0; i < 2; i++ {
		send(t, a, msg("lobby", i))
		recv(t, a)
		recv(t, b)
	}
	send(t, a, msg("lobby", 2))
	r := recv(t, a)
	if r.Error != ErrorCode(limiter.ReasonRoomRateExceeded) || r.Limit != 2 || r.RetryAfterMs == nil || *r.RetryAfterMs != 30000 {
		t.Fatalf("member layer: %+v", r)
	}
	if ca, _ := counts(); ca != 3 { // the join and two messages
		t.Errorf("alice's connection counted %d messages, want 3: the denied one must not count", ca)
	}
	// Bob: one message passes (the room's third), the next meets the room total.
	send(t, b, msg("lobby", 3))
	recv(t, a)
	recv(t, b)
	send(t, b, msg("lobby", 4))
	r = recv(t, b)
	if r.Error != ErrorCode(limiter.ReasonRoomRateExceeded) || r.Limit != 3 || r.RetryAfterMs == nil || *r.RetryAfterMs != 20000 {
		t.Fatalf("room layer: %+v", r)
	}
	if _, cb := counts(); cb != 2 {
		t.Errorf("bob's connection counted %d messages, want 2", cb)
	}
	// Bob's member bucket still holds one token of two: the denial gave its token back.
	key := limiter.Key{Kind: KindRoomMember, Scope: "lobby", ID: "bob"}
	if res, _ := store.Take(context.Background(), key, limiter.PerMinute(2), clk.Now(), 2); res.OK || res.Remaining != 1 {
		t.Errorf("bob's member bucket: %+v, want 1 token left", res)
	}
	// After 20 s one room token is back and Bob may speak again.
	clk.Advance(20 * time.Second)
	send(t, b, msg("lobby", 5))
	if r := recv(t, b); r.Type != TypeMessage {
		t.Errorf("after refill: %+v", r)
	}
	recv(t, a)

	// The size layer: a room with a smaller cap refuses before any rate.
	join(t, a, "small")
	ca, _ := counts()
	send(t, a, msg("small", strings.Repeat("z", 40)))
	if r := recv(t, a); r.Error != ErrorCode(limiter.ReasonMessageTooLarge) || r.MaxSize != 50 || r.Room != "small" {
		t.Errorf("size layer: %+v", r)
	}
	if ca2, _ := counts(); ca2 != ca {
		t.Errorf("a message over the room's size counted: %d -> %d", ca, ca2)
	}
	want := []limiter.ViolationType{limiter.ViolationRoomRate, limiter.ViolationRoomRate, limiter.ViolationMessageSize}
	if got := s.types(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("violations %v, want %v", got, want)
	}
}

// connIDs lists the IDs of the open connections, for tests.
func (h *Handler) connIDs() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var ids []string
	for c := range h.conns {
		ids = append(ids, c.id)
	}
	return ids
}

func TestRoomConnectionLayerDenies(t *testing.T) {
	t.Parallel()
	n, _ := roomNode(t, Config{DefaultRoom: RoomLimits{MessagesPerMinute: 10}, MaxDenials: -1}, limiter.Limits{MessagesPerMinute: 2})
	a := dialAs(t, n, "alice")
	join(t, a, "lobby") // message 1
	send(t, a, msg("lobby", 1))
	recv(t, a)
	send(t, a, msg("lobby", 2))
	if r := recv(t, a); r.Error != ErrorCode(limiter.ReasonRateLimitExceeded) || r.Room != "lobby" {
		t.Errorf("got %+v", r)
	}
	key := limiter.Key{Kind: KindRoom, Scope: "lobby"}
	if res, _ := n.h.Limiter().Store().Take(context.Background(), key, limiter.PerMinute(10), n.h.cfg.Now(), 10); res.OK || res.Remaining != 9 {
		t.Errorf("room bucket %+v, want 9 left: a message denied by the connection layer took a room token", res)
	}
}

func TestRoomFull(t *testing.T) {
	t.Parallel()
	s := &sink{}
	n, _ := roomNodeWith(t, Config{Rooms: map[string]RoomLimits{"vip": {MaxMembers: 1}}}, limiter.Config{Sink: s})
	a, b := dialAs(t, n, "alice"), dialAs(t, n, "bob")
	join(t, a, "vip")
	send(t, b, map[string]string{"type": "join", "room": "vip", "id": "j"})
	if r := recv(t, b); r.Error != ErrorCode(limiter.ReasonRoomFull) || r.Limit != 1 || r.ID != "j" {
		t.Errorf("got %+v", r)
	}
	if got := s.types(); len(got) != 1 || got[0] != limiter.ViolationRoomFull {
		t.Errorf("violations %v", got)
	}
	send(t, a, map[string]string{"type": "leave", "room": "vip"})
	recv(t, a)
	join(t, b, "vip")
}

func TestRoomFullWithSlots(t *testing.T) {
	t.Parallel()
	slots := limiter.NewMemoryStore(limiter.MemoryStoreConfig{SweepInterval: -1})
	defer slots.Close()
	n, _ := roomNode(t, Config{RoomSlots: slots, DefaultRoom: RoomLimits{MaxMembers: 2}}, limiter.Limits{})
	// Another node holds one place in the room.
	if _, ok, _ := slots.Acquire(context.Background(), "room:"+subject.Token("r"), 2); !ok {
		t.Fatal("acquire")
	}
	a, b := dialAs(t, n, "alice"), dialAs(t, n, "bob")
	join(t, a, "r")
	send(t, b, map[string]string{"type": "join", "room": "r"})
	if r := recv(t, b); r.Error != ErrorCode(limiter.ReasonRoomFull) {
		t.Errorf("got %+v", r)
	}
	_ = a.Close()
	waitFor(t, ioTimeout, "alice's place to be released", func() bool {
		n, _ := slots.Count(context.Background(), "room:"+subject.Token("r"))
		return n == 1
	})
}

func TestRoomCaps(t *testing.T) {
	t.Parallel()
	n, _ := roomNode(t, Config{MaxRoomsPerConn: 2, MaxRoomsPerNode: 3}, limiter.Limits{})
	a, b := dialAs(t, n, "alice"), dialAs(t, n, "bob")
	join(t, a, "r1")
	join(t, a, "r2")
	send(t, a, map[string]string{"type": "join", "room": "r3"})
	if r := recv(t, a); r.Error != CodeTooManyRooms || r.Limit != 2 {
		t.Errorf("per connection: %+v", r)
	}
	join(t, b, "r3")
	send(t, b, map[string]string{"type": "join", "room": "r4"})
	if r := recv(t, b); r.Error != CodeTooManyRooms || r.Limit != 3 {
		t.Errorf("per node: %+v", r)
	}
	join(t, b, "r1") // existing rooms are still open
}

func TestHostileFrames(t *testing.T) {
	t.Parallel()
	n, _ := roomNode(t, Config{MaxDenials: -1}, limiter.Limits{})
	c := dialAs(t, n, "mallory")
	long := strings.Repeat("r", DefaultMaxRoomNameLength+1)
	cases := []struct {
		frame string
		want  ErrorCode
	}{
		{`not json`, CodeInvalidFrame},
		{``, CodeInvalidFrame},
		{`null`, CodeInvalidFrame},
		{`[]`, CodeInvalidFrame},
		{`{`, CodeInvalidFrame},
		{`{"type":5}`, CodeInvalidFrame},
		{`{}`, CodeInvalidFrame},
		{`{"type":"message","room":"x"}`, CodeInvalidFrame},
		{`{"type":"message","room":"x","data":null}`, CodeInvalidFrame},
		{`{"type":"join","room":"x","id":"` + strings.Repeat("i", 65) + `"}`, CodeInvalidFrame},
		{`{"type":"dance","room":"x"}`, CodeUnknownType},
		{`{"type":"join"}`, CodeInvalidRoom},
		{`{"type":"join","room":""}`, CodeInvalidRoom},
		{`{"type":"join","room":"` + long + `"}`, CodeInvalidRoom},
		{`{"type":"join","room":"a\u0000b"}`, CodeInvalidRoom},
		{`{"type":"join","room":"a\nb"}`, CodeInvalidRoom},
		{`{"type":"join","room":"\ud800"}`, CodeInvalidRoom},
		{`{"type":"message","room":"nowhere","data":1}`, CodeNotMember},
		{`{"type":"leave","room":"nowhere"}`, CodeNotMember},
	}
	for _, tc := range cases {
		send(t, c, tc.frame)
		if r := recv(t, c); r.Type != TypeError || r.Error != tc.want {
			t.Errorf("frame %q: got %+v, want error %s", tc.frame, r, tc.want)
		}
	}
	_ = c.SetWriteDeadline(time.Now().Add(ioTimeout))
	if err := c.WriteMessage(websocket.BinaryMessage, []byte{0x01, 0x00, '{'}); err != nil {
		t.Fatal(err)
	}
	if r := recv(t, c); r.Error != CodeInvalidFrame {
		t.Errorf("binary garbage: %+v", r)
	}
	// Names that break subjects and keys are fine as room names.
	for _, room := range []string{"a.b.*>", "ñ 🎉 room", "../../etc", `"quoted"`, strings.Repeat("z", DefaultMaxRoomNameLength)} {
		join(t, c, room)
		send(t, c, msg(room, "x"))
		if r := recv(t, c); r.Type != TypeMessage || r.Room != room {
			t.Errorf("room %q: %+v", room, r)
		}
		send(t, c, map[string]string{"type": "leave", "room": room})
		recv(t, c)
	}
}

// smallBuffers shrinks the server's socket send buffers so that a client
// that does not read stalls the server's writes after a few kilobytes.
type smallBuffers struct{ net.Listener }

func (l smallBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(4096)
	}
	return c, err
}

// TestStalledReaderDoesNotDelayRoom: a member that stops reading while the
// server's write to it is blocked (with a one-minute write timeout) costs
// the others nothing. The reading member gets all 300 messages, in order,
// well inside the 10 s bound (it would need the 60 s write timeout if the
// room waited on the stalled member), and the stalled member is aborted when
// its queue of 16 overflows.
func TestStalledReaderDoesNotDelayRoom(t *testing.T) {
	t.Parallel()
	l, err := limiter.New(limiter.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	h, err := New(Config{Limiter: l, KeyFunc: QueryParam("user", nil), SendQueueSize: 16, WriteTimeout: time.Minute, CloseTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Listener = smallBuffers{srv.Listener}
	srv.Start()
	defer srv.Close()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
		defer cancel()
		_ = h.Shutdown(ctx)
	}()
	n := &node{h: h, srv: srv, url: "ws" + strings.TrimPrefix(srv.URL, "http")}
	smallDialer := websocket.Dialer{NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetReadBuffer(4096)
		}
		return c, err
	}}
	stalled, _, err := smallDialer.Dial(n.url+"?user=stalled", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	join(t, stalled, "room")
	sender, reader := dialAs(t, n, "sender"), dialAs(t, n, "reader")
	join(t, sender, "room")
	join(t, reader, "room")

	const total, window = 300, 8
	payload := strings.Repeat("p", 1000)
	var got atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	readAll := func(c *websocket.Conn, count *atomic.Int64) {
		defer wg.Done()
		for i := 0; i < total; i++ {
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			var r struct {
				Data struct{ I int } `json:"data"`
			}
			if err := c.ReadJSON(&r); err != nil {
				errs <- err
				return
			}
			if r.Data.I != i {
				errs <- fmt.Errorf("message %d arrived as number %d", r.Data.I, i)
				return
			}
			if count != nil {
				count.Add(1)
			}
		}
	}
	wg.Add(2)
	go readAll(reader, &got)
	go readAll(sender, nil)
	start := time.Now()
	for i := 0; i < total; i++ {
		// Keep the reading member within its queue: it reads, so this
		// waits for the network, never for the stalled member.
		for j := 0; j < 5000 && int64(i)-got.Load() > window; j++ {
			time.Sleep(time.Millisecond)
		}
		send(t, sender, map[string]any{"type": "message", "room": "room", "data": map[string]any{"i": i, "p": payload}})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("300 messages took %v, over the 10 s bound", d)
	}
	if got := h.Stats().Overflows; got != 1 {
		t.Errorf("Overflows %d, want 1 (the stalled member)", got)
	}
	waitFor(t, ioTimeout, "the stalled member to be dropped", func() bool { return h.Stats().Connections == 2 })
	t.Logf("300 messages of 1 kB to a room with a stalled member in %v", time.Since(start))
}

var _ http.Handler = (*Handler)(nil)

// slowSlots is a limiter.Slots whose Acquire, once armed, reports that it
// has started and then waits for release: a store round trip that hangs.
type slowSlots struct {
	*limiter.MemoryStore
	armed   atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func (s *slowSlots) Acquire(ctx context.Context, client string, max int64) (int64, bool, error) {
	if s.armed.Load() {
		s.entered <- struct{}{}
		select {
		case <-s.release:
		case <-ctx.Done():
			return 0, false, ctx.Err()
		}
	}
	return s.MemoryStore.Acquire(ctx, client, max)
}

// A join waiting on the shared member count must not hold up the room's
// members: they keep sending and can leave.
func TestSlowJoinDoesNotBlockMembers(t *testing.T) {
	t.Parallel()
	slots := &slowSlots{
		MemoryStore: limiter.NewMemoryStore(limiter.MemoryStoreConfig{SweepInterval: -1}),
		entered:     make(chan struct{}, 1),
		release:     make(chan struct{}),
	}
	defer slots.Close()
	n, _ := roomNode(t, Config{RoomSlots: slots, DefaultRoom: RoomLimits{MaxMembers: 10}}, limiter.Limits{})
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(slots.release) }) }
	t.Cleanup(unblock) // before the node's Shutdown, should the test fail
	a, b, late := dialAs(t, n, "alice"), dialAs(t, n, "bob"), dialAs(t, n, "late")
	join(t, a, "r")
	join(t, b, "r")
	slots.armed.Store(true)
	send(t, late, map[string]string{"type": "join", "room": "r"})
	select {
	case <-slots.entered:
	case <-time.After(ioTimeout):
		t.Fatal("the late join never reached Acquire")
	}
	// While it hangs, alice's message reaches bob and bob can leave.
	send(t, a, msg("r", "hi"))
	if r := recv(t, a); r.Type != TypeMessage {
		t.Fatalf("alice got %+v", r)
	}
	if r := recv(t, b); r.Type != TypeMessage || string(r.Data) != `"hi"` {
		t.Fatalf("bob got %+v", r)
	}
	send(t, b, map[string]string{"type": "leave", "room": "r"})
	if r := recv(t, b); r.Type != TypeLeft {
		t.Fatalf("bob's leave: %+v", r)
	}
	unblock()
	if r := recv(t, late); r.Type != TypeJoined {
		t.Fatalf("late join: %+v", r)
	}
}
