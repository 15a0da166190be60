package wshandler

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/ratethrottle/ratethrottle/pkg/embedded"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

// testLocalAfter is the LocalAfter of the local-room tests.
const testLocalAfter = 50 * time.Millisecond

// localNode starts a cluster node whose rooms go local after
// testLocalAfter, and returns its broker.
func localNode(t *testing.T, s *embedded.Server, id string) (*node, *NATSBroker) {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL(), nats.Name(id))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	b, err := NewNATSBroker(NATSBrokerConfig{Conn: nc, NodeID: id, Prefix: "test", LocalAfter: testLocalAfter})
	if err != nil {
		t.Fatal(err)
	}
	n := newNode(t, Config{Broker: b, NodeID: id, KeyFunc: QueryParam("user", nil), MaxDenials: -1}, limiter.Limits{})
	return n, b
}

// isLocal reports whether b publishes nothing for room.
func (b *NATSBroker) isLocal(room string) bool {
	b.mu.RLock()
	defer b.mu.RUnlock()
	p := b.rooms[room]
	return p != nil && p.local.Load() && p.epoch.Load() == b.epoch.Load()
}

// TestLocalRoomPublishesNothing: a room with members on one node only
// goes local after LocalAfter, and then its messages reach its members and
// no NATS subscriber of the room's subject.
func TestLocalRoomPublishesNothing(t *testing.T) {
	t.Parallel()
	s := startNATS(t)
	na, ba := localNode(t, s, "node-a")
	raw, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	var published atomic.Int64
	if _, err := raw.Subscribe(RoomSubject("test", "solo"), func(*nats.Msg) { published.Add(1) }); err != nil {
		t.Fatal(err)
	}
	if err := raw.Flush(); err != nil {
		t.Fatal(err)
	}
	a := dialAs(t, na, "a")
	join(t, a, "solo")
	if ba.isLocal("solo") {
		t.Fatal("the room is local before LocalAfter has passed")
	}
	send(t, a, msg("solo", "early"))
	recv(t, a)
	waitFor(t, ioTimeout, "the room to go local", func() bool { return ba.isLocal("solo") })
	before := published.Load()
	if before != 1 {
		t.Errorf("the subject had %d messages before the room went local, want 1", before)
	}
	for i := 0; i < 50; i++ {
		send(t, a, msg("solo", i))
		if r := recv(t, a); string(r.Data) != strconv.Itoa(i) {
			t.Fatalf("got %s, want %d", r.Data, i)
		}
	}
	// A round trip on each connection: anything node a published has
	// reached the raw subscriber.
	if err := ba.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := raw.Flush(); err != nil {
		t.Fatal(err)
	}
	if n := published.Load() - before; n != 0 {
		t.Errorf("%d of 50 messages of a local room were published", n)
	}
}

// TestLocalRoomSwitchesWhenAnotherNodeJoins: while a member on node a sends
// a stream of numbered messages to a local room, a member joins on node b.
// Node b's member receives every message sent after its join was
// confirmed, exactly once and in order, and node a's other member receives
// every message exactly once; messages from node b reach node a.
func TestLocalRoomSwitchesWhenAnotherNodeJoins(t *testing.T) {
	t.Parallel()
	s := startNATS(t)
	na, ba := localNode(t, s, "node-a")
	nb, bb := localNode(t, s, "node-b")
	sender, a2 := dialAs(t, na, "a1"), dialAs(t, na, "a2")
	join(t, sender, "r")
	join(t, a2, "r")
	waitFor(t, ioTimeout, "the room to go local", func() bool { return ba.isLocal("r") })

	const total = 400
	var sent atomic.Int64
	failed := make(chan error, 1)
	done := make(chan struct{})
	// The sender holds its second half until b1 has joined, so that the
	// switch happens in the middle of the stream however fast it runs.
	b1Joined := make(chan struct{})
	go func() { // t.Fatal is for the test's goroutine: an error goes to failed
		defer close(done)
		for i := 0; i < total; i++ {
			if i == total/2 {
				select {
				case <-b1Joined:
				case <-time.After(ioTimeout):
					failed <- fmt.Errorf("sender: b1 did not join within %v", ioTimeout)
					return
				}
			}
			_ = sender.SetWriteDeadline(time.Now().Add(ioTimeout))
			if err := sender.WriteJSON(msg("r", i)); err != nil {
				failed <- fmt.Errorf("sender: write %d: %w", i, err)
				return
			}
			sent.Add(1)
			// Its own copy: one message in flight at a time.
			_ = sender.SetReadDeadline(time.Now().Add(ioTimeout))
			if _, _, err := sender.ReadMessage(); err != nil {
				failed <- fmt.Errorf("sender: read %d: %w", i, err)
				return
			}
		}
	}()
	t.Cleanup(func() { <-done }) // the sender's deadlines bound this wait
	waitFor(t, ioTimeout, "a tenth of the messages", func() bool { return sent.Load() >= total/10 })
	b1 := dialAs(t, nb, "b1")
	join(t, b1, "r")
	close(b1Joined)
	// Message number sent (and any later one) was written after b1's join
	// was confirmed.
	mustGet := sent.Load() + 1
	if ba.isLocal("r") || bb.isLocal("r") {
		t.Error("a room is still local on one node after a member joined on the other")
	}
	seqOf := func(r reply) int {
		var n int
		if err := json.Unmarshal(r.Data, &n); err != nil || r.Type != TypeMessage {
			t.Fatalf("got %+v, want a numbered message", r)
		}
		return n
	}
	// recvB1 reads b1's next frame; on a failure it names the sender's
	// error too, if the sender stopped first.
	recvB1 := func() reply {
		t.Helper()
		_ = b1.SetReadDeadline(time.Now().Add(ioTimeout))
		_, data, err := b1.ReadMessage()
		if err != nil {
			select {
			case serr := <-failed:
				t.Fatalf("b1: read after %d sent: %v; %v", sent.Load(), err, serr)
			default:
				t.Fatalf("b1: read after %d sent: %v (the sender is still running)", sent.Load(), err)
			}
		}
		var r reply
		if err := json.Unmarshal(data, &r); err != nil {
			t.Fatalf("b1: frame %q: %v", data, err)
		}
		return r
	}
	first, last := -1, -1
	for last != total-1 {
		n := seqOf(recvB1())
		if first < 0 {
			first = n
		} else if n != last+1 {
			t.Fatalf("b1 got message %d after %d: lost or duplicated", n, last)
		}
		last = n
	}
	if int64(first) > mustGet {
		t.Errorf("b1's first message is %d; messages from %d on were sent after its join", first, mustGet)
	}
	t.Logf("b1 joined while message %d was being sent; its first message is %d", mustGet-1, first)
	for i := 0; i < total; i++ {
		if n := seqOf(recv(t, a2)); n != i {
			t.Fatalf("a2 got message %d, want %d", n, i)
		}
	}
	<-done
	select {
	case err := <-failed:
		t.Fatal(err)
	default:
	}
	// b1's message reaches node a; nothing else is pending for anyone.
	send(t, b1, msg("r", "from b"))
	for _, c := range []*websocket.Conn{b1, a2, sender} {
		if r := recv(t, c); string(r.Data) != `"from b"` {
			t.Errorf("got %+v, want b1's message and nothing before it", r)
		}
	}
}

// TestBrokerSubscribeWhileOldSubscriptionLingers: a room's next life on a
// node may subscribe before the last one has unsubscribed (a leave and a
// join racing). The old subscription answers the node's own probe, so the
// join does not wait for SubscribeTimeout, and the new life publishes.
func TestBrokerSubscribeWhileOldSubscriptionLingers(t *testing.T) {
	t.Parallel()
	s := startNATS(t)
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	b, err := NewNATSBroker(NATSBrokerConfig{Conn: nc, NodeID: "n", Prefix: "test", SubscribeTimeout: 5 * time.Second,
		LocalAfter: testLocalAfter})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	unsubOld, err := b.Subscribe(ctx, "r", func([]byte) {})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	unsubNew, err := b.Subscribe(ctx, "r", func([]byte) {})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Subscribe waited %v for its own old subscription", d)
	}
	if err := unsubOld(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * testLocalAfter) // LocalAfter passing is what is tested: the room must not go local
	if b.isLocal("r") {
		t.Error("the room went local although its probe was answered")
	}
	if err := unsubNew(); err != nil {
		t.Fatal(err)
	}
}

// TestLocalRoomHelloAfterReconnect: a local room that stays silent says
// hello again once its NATS connection has reconnected, so that a node
// that got the room while the two were apart hears of it; it goes local
// again when nobody answers. A local room's message sent after the
// reconnect is published.
func TestLocalRoomHelloAfterReconnect(t *testing.T) {
	t.Parallel()
	s := startNATS(t)
	nc, err := nats.Connect(s.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond),
		nats.ReconnectJitter(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	b, err := NewNATSBroker(NATSBrokerConfig{Conn: nc, NodeID: "a", Prefix: "test", LocalAfter: testLocalAfter})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, room := range []string{"silent", "talking"} {
		unsub, err := b.Subscribe(ctx, room, func([]byte) {})
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = unsub() }()
	}
	waitFor(t, ioTimeout, "the rooms to go local", func() bool { return b.isLocal("silent") && b.isLocal("talking") })
	b.mu.RLock()
	silent := b.rooms["silent"]
	b.mu.RUnlock()
	hellos := silent.gen.Load()

	s.Stop()
	waitFor(t, ioTimeout, "the outage to be noticed", func() bool { return !nc.IsConnected() })
	// The watcher has seen the disconnection: the local rooms publish
	// again (into the client's reconnect buffer), checked without a lock.
	waitFor(t, ioTimeout, "the rooms to stop being local", func() bool { return !b.isLocal("silent") && !b.isLocal("talking") })
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ioTimeout, "the reconnect", func() bool { return nc.IsConnected() })

	// A message of a local room after the reconnect is published.
	obs, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer obs.Close()
	sub, err := obs.SubscribeSync(RoomSubject("test", "talking"))
	if err != nil {
		t.Fatal(err)
	}
	if err := obs.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, "talking", []byte("after")); err != nil {
		t.Fatal(err)
	}
	if m, err := sub.NextMsg(ioTimeout); err != nil || string(m.Data) != "after" {
		t.Errorf("after the reconnect the local room published %v, %v", m, err)
	}
	waitFor(t, ioTimeout, "the silent room's hello after the reconnect", func() bool { return silent.gen.Load() > hellos })
	waitFor(t, ioTimeout, "the rooms to go local again", func() bool { return b.isLocal("silent") && b.isLocal("talking") })
}
