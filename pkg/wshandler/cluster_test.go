package wshandler

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/ratethrottle/ratethrottle/pkg/embedded"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
	"github.com/ratethrottle/ratethrottle/pkg/subject"
)

// startNATS starts an embedded NATS server on a random loopback port.
func startNATS(t testing.TB) *embedded.Server {
	t.Helper()
	s, err := embedded.Start(embedded.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	return s
}

// clusterNode starts a room node whose rooms fan out through NATS.
func clusterNode(t testing.TB, s *embedded.Server, id string, cfg Config) (*node, *nats.Conn) {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL(), nats.Name(id))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	b, err := NewNATSBroker(NATSBrokerConfig{Conn: nc, NodeID: id, Prefix: "test"})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Broker, cfg.NodeID, cfg.KeyFunc = b, id, QueryParam("user", nil)
	return newNode(t, cfg, limiter.Limits{}), nc
}

// TestClusterFanout: two nodes share NATS; two senders, one on each node,
// send 100 messages each, concurrently, to a room with two members on each
// node. Every member receives all 200, each exactly once, and each sender's
// in the order sent.
func TestClusterFanout(t *testing.T) {
	t.Parallel()
	s := startNATS(t)
	na, nca := clusterNode(t, s, "node-a", Config{})
	nb, ncb := clusterNode(t, s, "node-b", Config{})

	a1, a2 := dialAs(t, na, "a1"), dialAs(t, na, "a2")
	b1, b2 := dialAs(t, nb, "b1"), dialAs(t, nb, "b2")
	members := []*websocket.Conn{a1, a2, b1, b2}
	if nca.NumSubscriptions() != 0 || ncb.NumSubscriptions() != 0 {
		t.Fatal("subscribed before any member joined")
	}
	for _, c := range members {
		join(t, c, "chat.*>") // a name that would break a raw subject
	}
	// Per node, one subscription to the room's messages and one to its
	// presence, however many members.
	if nca.NumSubscriptions() != 2 || ncb.NumSubscriptions() != 2 {
		t.Fatalf("subscriptions %d and %d, want two per node", nca.NumSubscriptions(), ncb.NumSubscriptions())
	}

	const perSender = 100
	type got struct {
		counts map[string]int
		next   map[string]int
		err    error
	}
	results := make([]got, len(members))
	var wg sync.WaitGroup
	for i, c := range members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g := got{counts: map[string]int{}, next: map[string]int{}}
			defer func() { results[i] = g }()
			for n := 0; n < 2*perSender; n++ {
				_ = c.SetReadDeadline(time.Now().Add(ioTimeout))
				var r struct {
					Type FrameType
					Data struct {
						S string
						I int
					}
				}
				if err := c.ReadJSON(&r); err != nil {
					g.err = fmt.Errorf("after %d messages: %w", n, err)
					return
				}
				if r.Type != TypeMessage {
					g.err = fmt.Errorf("frame of type %q", r.Type)
					return
				}
				if r.Data.I != g.next[r.Data.S] {
					g.err = fmt.Errorf("from %s: got %d, want %d", r.Data.S, r.Data.I, g.next[r.Data.S])
					return
				}
				g.next[r.Data.S]++
				g.counts[r.Data.S]++
			}
		}()
	}
	var sends sync.WaitGroup
	for _, sc := range []struct {
		name string
		c    *websocket.Conn
	}{{"a1", a1}, {"b1", b1}} {
		sends.Add(1)
		go func() {
			defer sends.Done()
			for i := 0; i < perSender; i++ {
				_ = sc.c.SetWriteDeadline(time.Now().Add(ioTimeout))
				if err := sc.c.WriteJSON(msg("chat.*>", map[string]any{"s": sc.name, "i": i})); err != nil {
					t.Errorf("send: %v", err)
					return
				}
			}
		}()
	}
	sends.Wait()
	wg.Wait()
	for i, g := range results {
		if g.err != nil {
			t.Errorf("member %d: %v", i, g.err)
			continue
		}
		if g.counts["a1"] != perSender || g.counts["b1"] != perSender {
			t.Errorf("member %d got %v, want %d from each sender", i, g.counts, perSender)
		}
	}
	// Nothing more arrives: no member got a duplicate.
	for _, c := range members {
		send(t, c, map[string]string{"type": "leave", "room": "chat.*>"})
		if r := recv(t, c); r.Type != TypeLeft {
			t.Errorf("after the messages: got %+v, want only the left frame", r)
		}
	}
	waitFor(t, ioTimeout, "both nodes to unsubscribe", func() bool {
		return nca.NumSubscriptions() == 0 && ncb.NumSubscriptions() == 0
	})
	if st := na.h.Stats(); st.Rooms != 0 || st.PublishErrors != 0 {
		t.Errorf("node a: %+v", st)
	}
}

// TestClusterJoinAfterMessages: a node subscribes only while it has
// members, so a member that joins later does not get earlier messages, and
// gets the next one.
func TestClusterJoinAfterMessages(t *testing.T) {
	t.Parallel()
	s := startNATS(t)
	na, nca := clusterNode(t, s, "node-a", Config{})
	nb, _ := clusterNode(t, s, "node-b", Config{})
	a, b := dialAs(t, na, "a"), dialAs(t, nb, "b")
	join(t, a, "r")
	send(t, a, msg("r", "early"))
	recv(t, a)
	// a's own copy is delivered on node a before the publication reaches
	// the server; a round trip makes sure it has (and found no node b).
	if err := nca.Flush(); err != nil {
		t.Fatal(err)
	}
	join(t, b, "r")
	send(t, a, msg("r", "late"))
	recv(t, a)
	if r := recv(t, b); string(r.Data) != `"late"` {
		t.Errorf("b got %s, want the late message only", r.Data)
	}
}

func TestRoomSubject(t *testing.T) {
	t.Parallel()
	long := string(make([]byte, 100))
	cases := map[string]string{
		"lobby":   "p.rooms.bG9iYnk",
		"a.b *>":  "p.rooms.YS5iICo-",
		"ñ":       "p.rooms.w7E",
		long[:48]: "p.rooms." + "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
	}
	for room, want := range cases {
		if got := RoomSubject("p", room); got != want {
			t.Errorf("RoomSubject(%q) = %q, want %q", room, got, want)
		}
	}
	h1, h2 := subject.Token(long), subject.Token(long[:99]+"x")
	if h1[0] != '=' || len(h1) != 44 || h1 == h2 {
		t.Errorf("long names: %q %q", h1, h2)
	}
}

// TestJoinDuringNATSOutage: while the NATS server is down, a join of a room
// with no local members succeeds at once (it used to block the connection
// for SubscribeTimeout and then fail with unavailable) and the room fans
// out locally; once the server is back, the subscription is in place and
// the members hear the other node again.
func TestJoinDuringNATSOutage(t *testing.T) {
	t.Parallel()
	s := startNATS(t)
	connect := func(id string) *nats.Conn {
		nc, err := nats.Connect(s.ClientURL(), nats.Name(id), nats.MaxReconnects(-1),
			nats.ReconnectWait(20*time.Millisecond), nats.ReconnectJitter(0, 0))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	nodeOn := func(nc *nats.Conn, id string) *node {
		b, err := NewNATSBroker(NATSBrokerConfig{Conn: nc, NodeID: id, Prefix: "test"})
		if err != nil {
			t.Fatal(err)
		}
		return newNode(t, Config{Broker: b, NodeID: id, KeyFunc: QueryParam("user", nil)}, limiter.Limits{})
	}
	nca, ncb := connect("node-a"), connect("node-b")
	na, nb := nodeOn(nca, "node-a"), nodeOn(ncb, "node-b")
	b1 := dialAs(t, nb, "b1")
	join(t, b1, "lobby")

	s.Stop()
	waitFor(t, ioTimeout, "both nodes to notice the outage", func() bool {
		return !nca.IsConnected() && !ncb.IsConnected()
	})
	a1, a2 := dialAs(t, na, "a1"), dialAs(t, na, "a2")
	start := time.Now()
	join(t, a1, "lobby")
	join(t, a2, "lobby")
	if d := time.Since(start); d > time.Second {
		t.Errorf("two joins took %v while NATS was down", d)
	}
	send(t, a1, msg("lobby", "local"))
	for _, c := range []*websocket.Conn{a1, a2} {
		if r := recv(t, c); r.Type != TypeMessage || string(r.Data) != `"local"` {
			t.Errorf("local fan-out during the outage: %+v", r)
		}
	}

	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "both nodes to reconnect", func() bool {
		return nca.IsConnected() && ncb.IsConnected()
	})
	// A round trip on each connection after its reconnect: the server has
	// the subscriptions the reconnect sent.
	for _, nc := range []*nats.Conn{nca, ncb} {
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	send(t, b1, msg("lobby", "from b"))
	// b1 may also get a1's message from the outage, which node a's NATS
	// client buffered and sent on reconnect (whether node b was subscribed
	// again by then is a race); b1's reads skip it.
	recvB := func() reply {
		r := recv(t, b1)
		if string(r.Data) == `"local"` {
			r = recv(t, b1)
		}
		return r
	}
	recvB() // b1's own message
	for _, c := range []*websocket.Conn{a1, a2} {
		if r := recv(t, c); r.Type != TypeMessage || string(r.Data) != `"from b"` {
			t.Errorf("after the outage: %+v, want b1's message", r)
		}
	}
	send(t, a1, msg("lobby", "from a"))
	if r := recvB(); string(r.Data) != `"from a"` {
		t.Errorf("b1 got %+v, want a1's message", r)
	}
}
