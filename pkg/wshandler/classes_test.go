package wshandler

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
	"github.com/ratethrottle/ratethrottle/pkg/policy"
	"github.com/stretchr/testify/require"
)

// staticPolicy is a PolicySource holding one compiled document.
type staticPolicy struct{ v *policy.Version }

func (s staticPolicy) Current() *policy.Version { return s.v }

func newStaticPolicy(t testing.TB, doc *policy.Document) staticPolicy {
	t.Helper()
	tab, err := policy.Compile(doc)
	if err != nil {
		t.Fatal(err)
	}
	return staticPolicy{&policy.Version{Document: doc, Table: tab}}
}

// classNode starts a room node with the given policy whose connections
// carry the metadata user of their ?uid= query parameter, else their
// ?user= one (which is also their client ID), and the tier of ?tier=.
func classNode(t testing.TB, cfg Config, lim limiter.Limits, doc *policy.Document) (*node, *sink) {
	t.Helper()
	s := &sink{}
	cfg.Policy = newStaticPolicy(t, doc)
	cfg.Metadata = func(r *http.Request) map[string]string {
		q := r.URL.Query()
		user := q.Get("uid")
		if user == "" {
			user = q.Get("user")
		}
		return map[string]string{MetaUser: user, limiter.MetaTier: q.Get("tier")}
	}
	n, _ := roomNodeWith(t, cfg, limiter.Config{Limits: lim, Sink: s})
	return n, s
}

// classErr reads the next frame of c, which must be a class denial.
func classErr(t *testing.T, c *websocket.Conn, class, layer string) {
	t.Helper()
	var r struct {
		reply
		Class string `json:"class"`
		Layer string `json:"layer"`
	}
	_ = c.SetReadDeadline(time.Now().Add(ioTimeout))
	if err := c.ReadJSON(&r); err != nil {
		t.Fatalf("read: %v", err)
	}
	if r.Error != CodeClassRateExceeded || r.Class != class || r.Layer != layer || r.RetryAfterMs == nil {
		t.Fatalf("want a %s denial by the %s layer, got %+v", class, layer, r)
	}
}

func TestClassTypingFloodRefusedWhileMessagesPass(t *testing.T) {
	t.Parallel()
	doc := &policy.Document{Classes: map[string]policy.Class{
		"typing":  {Connection: policy.Rate{Rate: 3}, User: &policy.Rate{Rate: 100}},
		"message": {Connection: policy.Rate{Rate: 100}},
	}}
	n, viols := classNode(t, Config{}, limiter.Limits{}, doc)
	a, b := dialAs(t, n, "ada"), dialAs(t, n, "bob")
	join(t, a, "lobby")
	join(t, b, "lobby")
	for range 3 {
		send(t, a, map[string]string{"type": "typing", "room": "lobby"})
		for _, c := range []*websocket.Conn{a, b} {
			if r := recv(t, c); r.Type != "typing" || r.Room != "lobby" || r.From == "" || string(r.Data) != "null" {
				t.Fatalf("typing relayed as %+v", r)
			}
		}
	}
	for range 5 {
		send(t, a, map[string]string{"type": "typing", "room": "lobby"})
		classErr(t, a, "typing", "connection")
	}
	for i := range 10 {
		send(t, a, msg("lobby", i))
		for _, c := range []*websocket.Conn{a, b} {
			if r := recv(t, c); r.Type != TypeMessage || string(r.Data) != string(rune('0'+i%10)) {
				t.Fatalf("message %d: %+v", i, r)
			}
		}
	}
	// An undefined type is still unknown.
	send(t, a, map[string]string{"type": "file", "room": "lobby"})
	if r := recv(t, a); r.Error != CodeUnknownType {
		t.Fatalf("undefined class: %+v", r)
	}
	got := 0
	viols.mu.Lock()
	defer viols.mu.Unlock()
	for _, v := range viols.vs {
		if v.Type == limiter.ViolationClassRate && v.Reason == limiter.ReasonClassRateExceeded && v.Room == "lobby" && v.Limit == 3 {
			got++
		}
	}
	if got != 5 {
		t.Errorf("class violations: %d of 5 (%+v)", got, viols.vs)
	}
}

// A frame refused by its class's room layer has taken nothing: not the
// Limiter's message, not the room's rates, not its class's connection and
// user buckets.
func TestClassDenialConsumesNothing(t *testing.T) {
	t.Parallel()
	doc := &policy.Document{Classes: map[string]policy.Class{
		"file": {Cost: 2, Connection: policy.Rate{Rate: 4}, User: &policy.Rate{Rate: 2}, Room: &policy.Rate{Rate: 2}},
	}}
	n, _ := classNode(t, Config{RoomPatterns: []RoomPattern{{Pattern: "r1", Limits: RoomLimits{MessagesPerMinute: 2, MemberMessagesPerMinute: 100}}}},
		limiter.Limits{MessagesPerMinute: 6}, doc)
	a, b := dialAs(t, n, "ada"), dialAs(t, n, "bob")
	join(t, a, "r1")
	join(t, b, "r1")
	join(t, b, "r2")
	file := func(room string) map[string]any { return map[string]any{"type": "file", "room": room, "data": "x"} }
	send(t, a, file("r1")) // r1's file bucket (2) is empty now
	for _, c := range []*websocket.Conn{a, b} {
		if r := recv(t, c); r.Type != "file" {
			t.Fatalf("file relayed as %+v", r)
		}
	}
	send(t, b, file("r1"))
	classErr(t, b, "file", "room")
	// bob's user bucket (2, one file) was given back: a file to r2 passes.
	send(t, b, file("r2"))
	if r := recv(t, b); r.Type != "file" || r.Room != "r2" {
		t.Fatalf("file to r2 after the refund: %+v", r)
	}
	// r1's room rate (2): ada's file and one more message.
	send(t, a, msg("r1", 1))
	for _, c := range []*websocket.Conn{a, b} {
		if r := recv(t, c); r.Type != TypeMessage {
			t.Fatalf("second message of r1: %+v", r)
		}
	}
	send(t, a, msg("r1", 2))
	if r := recv(t, a); r.Error != ErrorCode(limiter.ReasonRoomRateExceeded) {
		t.Fatalf("third message of r1: %+v", r)
	}
	// bob's Limiter messages (6): two joins, the file to r2 and three more.
	for i := range 3 {
		send(t, b, msg("r2", i))
		if r := recv(t, b); r.Type != TypeMessage {
			t.Fatalf("bob's message %d: %+v", i, r)
		}
	}
	send(t, b, msg("r2", 9))
	if r := recv(t, b); r.Error != ErrorCode(limiter.ReasonRateLimitExceeded) {
		t.Fatalf("bob's seventh frame: %+v", r)
	}
}

// One user's class bucket is shared by their connections from different
// addresses, and a pro user gets the pro tier's class limits.
func TestClassUserLayerAndTier(t *testing.T) {
	t.Parallel()
	doc := &policy.Document{
		Classes: map[string]policy.Class{"typing": {Connection: policy.Rate{Rate: 100}, User: &policy.Rate{Rate: 2}}},
		Tiers: map[string]policy.Tier{"pro": {Classes: map[string]policy.Class{
			"typing": {Connection: policy.Rate{Rate: 100}, User: &policy.Rate{Rate: 4}}}}},
	}
	n, _ := classNode(t, Config{}, limiter.Limits{}, doc)
	c1, c2 := dialAs(t, n, "addr1&uid=ada"), dialAs(t, n, "addr2&uid=ada")
	pro := dialAs(t, n, "addr3&uid=grace&tier=pro")
	typing := map[string]string{"type": "typing", "room": "lobby"}
	for _, c := range []*websocket.Conn{c1, c2, pro} {
		join(t, c, "lobby")
	}
	drain := func(n int) { // every member sees every relayed frame
		for range n {
			for _, c := range []*websocket.Conn{c1, c2, pro} {
				if r := recv(t, c); r.Type != "typing" {
					t.Fatalf("typing relayed as %+v", r)
				}
			}
		}
	}
	send(t, c1, typing)
	send(t, c2, typing)
	drain(2)
	send(t, c2, typing)
	classErr(t, c2, "typing", "user")
	send(t, c1, typing)
	classErr(t, c1, "typing", "user")
	for range 4 {
		send(t, pro, typing)
		drain(1)
	}
	send(t, pro, typing)
	classErr(t, pro, "typing", "user")
}

// swapPolicy is a PolicySource whose version a test replaces.
type swapPolicy struct {
	v atomic.Pointer[policy.Version]
}

func (s *swapPolicy) Current() *policy.Version { return s.v.Load() }

func (s *swapPolicy) set(t *testing.T, doc *policy.Document) {
	t.Helper()
	tab, err := policy.Compile(doc)
	if err != nil {
		t.Fatal(err)
	}
	s.v.Store(&policy.Version{Document: doc, Table: tab})
}

// typingHarness is a Handler whose OnMessage frames are all of class
// "typing", with a policy that can be swapped and a clock that stands
// still unless the test moves now, for tests of checkMessage.
type typingHarness struct {
	h   *Handler
	l   *limiter.Limiter
	src *swapPolicy
	now time.Time
}

func newTypingHarness(t *testing.T, doc *policy.Document) *typingHarness {
	th := &typingHarness{src: &swapPolicy{}, now: time.Unix(1_700_000_000, 0)}
	clock := func() time.Time { return th.now }
	l, err := limiter.New(limiter.Config{Limits: limiter.Limits{MessagesPerMinute: 1000, BytesPerMinute: 1 << 20}, Now: clock})
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Close() })
	th.src.set(t, doc)
	h, err := New(Config{Limiter: l, Now: clock, Policy: th.src, OnMessage: func(*Conn, int, []byte) {},
		Classify: func(*Conn, int, []byte) string { return "typing" }})
	require.NoError(t, err)
	t.Cleanup(func() { _ = h.Shutdown(context.Background()) })
	th.h, th.l = h, l
	return th
}

// A policy change rescales a connection's class bucket, which its read
// goroutine does at its next message of the new version: the bucket keeps
// the fraction of the burst it held and is never refilled by the change.
func TestClassConnectionBucketRescaledLazily(t *testing.T) {
	t.Parallel()
	typing := func(rate int64) *policy.Document {
		return &policy.Document{Classes: map[string]policy.Class{"typing": {Connection: policy.Rate{Rate: rate}}}}
	}
	th := newTypingHarness(t, typing(4))
	h, l, src, now := th.h, th.l, th.src, &th.now
	_, err := l.Connect(context.Background(), "c1", "198.51.100.1", nil)
	require.NoError(t, err)
	c := &Conn{h: h, id: "c1", client: "198.51.100.1"}
	// allowed sends messages until one is denied and returns how many
	// passed; the denial must be the typing class's connection layer.
	allowed := func() int {
		for n := 0; n < 100; n++ {
			if e, ok := c.checkMessage(websocket.TextMessage, []byte("x")); !ok {
				require.Equal(t, CodeClassRateExceeded, e.code)
				require.Equal(t, "typing", e.class)
				require.Equal(t, "connection", e.layer)
				return n
			}
		}
		t.Fatal("no denial in 100 messages")
		return 0
	}
	for range 2 { // half of the burst of 4
		_, ok := c.checkMessage(websocket.TextMessage, []byte("x"))
		require.True(t, ok)
	}
	src.set(t, typing(40)) // half of 40 left, not 38
	require.Equal(t, 20, allowed())
	src.set(t, typing(4)) // empty stays empty
	require.Equal(t, 0, allowed())
	*now = now.Add(15 * time.Second) // one token at 4 a minute
	require.Equal(t, 1, allowed())
	src.set(t, &policy.Document{}) // no class: nothing to keep
	_, ok := c.checkMessage(websocket.TextMessage, []byte("x"))
	require.True(t, ok)
}

// A policy change rescales the class buckets of the shared store too: an
// address bucket drained to half of 4 holds half of 40 after the change,
// once, whichever of the address's two connections checks first (a
// second rescale would leave 200, none 38).
func TestClassSharedBucketRescaledOnce(t *testing.T) {
	t.Parallel()
	typing := func(rate int64) *policy.Document {
		return &policy.Document{Classes: map[string]policy.Class{"typing": {Address: &policy.Rate{Rate: rate}}}}
	}
	th := newTypingHarness(t, typing(4))
	h, l, src, now := th.h, th.l, th.src, &th.now
	const addr = "198.51.100.7"
	var conns []*Conn
	for _, id := range []string{"c1", "c2"} {
		_, err := l.Connect(context.Background(), id, addr, nil)
		require.NoError(t, err)
		conns = append(conns, &Conn{h: h, id: id, client: addr})
	}
	send := func(c *Conn) bool {
		e, ok := c.checkMessage(websocket.TextMessage, []byte("x"))
		if !ok {
			require.Equal(t, CodeClassRateExceeded, e.code)
			require.Equal(t, "address", e.layer)
		}
		return ok
	}
	// allowed sends from the connections in turn until both are denied
	// and returns how many passed.
	allowed := func() int {
		n := 0
		for range 300 {
			a, b := send(conns[1]), send(conns[0])
			if !a && !b {
				return n
			}
			n += btoi(a) + btoi(b)
		}
		t.Fatal("no denial in 600 messages")
		return 0
	}
	require.True(t, send(conns[0]))
	require.True(t, send(conns[0])) // half of the address's 4
	src.set(t, typing(40))
	require.Equal(t, 20, allowed()) // half of 40: 38 without a rescale, more with two
	src.set(t, typing(4))
	require.Equal(t, 0, allowed()) // empty stays empty
	*now = now.Add(15 * time.Second)
	require.Equal(t, 1, allowed()) // one token at 4 a minute
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// A policy class named "join" charges joins: beyond its rate a join is
// refused with the class and layer, a join the room refuses (already in)
// gives its token back, messages are not charged by it, and a leave is
// never refused by a class.
func TestClassJoinChargesJoins(t *testing.T) {
	t.Parallel()
	doc := &policy.Document{Classes: map[string]policy.Class{
		"join":  {Connection: policy.Rate{Rate: 2}},
		"leave": {Connection: policy.Rate{Rate: 1}},
	}}
	n, _ := classNode(t, Config{}, limiter.Limits{}, doc)
	a := dialAs(t, n, "ada")
	join(t, a, "one")
	send(t, a, map[string]string{"type": "join", "room": "one"})
	if r := recv(t, a); r.Error != CodeAlreadyIn {
		t.Fatalf("second join of one: %+v", r)
	}
	join(t, a, "two") // the refused join took nothing
	send(t, a, map[string]string{"type": "join", "room": "three"})
	classErr(t, a, "join", "connection")
	for i := range 5 {
		send(t, a, msg("one", i))
		if r := recv(t, a); r.Type != TypeMessage {
			t.Fatalf("message %d: %+v", i, r)
		}
	}
	for _, room := range []string{"one", "two"} {
		send(t, a, map[string]string{"type": "leave", "room": room})
		if r := recv(t, a); r.Type != TypeLeft {
			t.Fatalf("leave %s: %+v", room, r)
		}
	}
}
