package wshandler

import (
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

// invalidMessage is a room message whose data holds the bytes ff fe, which
// are not UTF-8: a browser fails a connection that receives them in a text
// frame.
var invalidMessage = []byte("{\"type\":\"message\",\"room\":\"lobby\",\"data\":{\"text\":\"\xff\xfe\"}}")

// writeRaw writes b as one frame of type mt.
func writeRaw(t testing.TB, c *websocket.Conn, mt int, b []byte) {
	t.Helper()
	_ = c.SetWriteDeadline(time.Now().Add(ioTimeout))
	if err := c.WriteMessage(mt, b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// TestInvalidUTF8Closes1007: a member's text frame that is not UTF-8 fails
// its connection with 1007, is counted as an invalid_utf8 violation and
// denial, and reaches no other member. It used to be relayed to the whole
// room.
func TestInvalidUTF8Closes1007(t *testing.T) {
	t.Parallel()
	s := &sink{}
	n, _ := roomNodeWith(t, Config{}, limiter.Config{Sink: s})
	a, b := dialAs(t, n, "mallory"), dialAs(t, n, "bob")
	join(t, a, "lobby")
	join(t, b, "lobby")
	writeRaw(t, a, websocket.TextMessage, invalidMessage)
	if ce := closeCode(t, a); ce.Code != websocket.CloseInvalidFramePayloadData || ce.Text != "invalid_utf8" {
		t.Errorf("close %d %q, want 1007 invalid_utf8", ce.Code, ce.Text)
	}
	// b's next frame is its own message: nothing came in between.
	send(t, b, msg("lobby", "after"))
	if r := recv(t, b); r.Type != TypeMessage || string(r.Data) != `"after"` {
		t.Errorf("b got %+v, want its own message first", r)
	}
	waitFor(t, ioTimeout, "an invalid_utf8 violation", func() bool {
		ts := s.types()
		return len(ts) == 1 && ts[0] == limiter.ViolationInvalidUTF8
	})
	s.mu.Lock()
	v := s.vs[0]
	s.mu.Unlock()
	if v.ClientID != "mallory" || v.Reason != limiter.ReasonInvalidUTF8 || v.Size != int64(len(invalidMessage)) || v.RetryAfter != limiter.Never {
		t.Errorf("violation %+v", v)
	}
	if got := n.h.Limiter().Statistics().Denied[limiter.ReasonInvalidUTF8]; got != 1 {
		t.Errorf("Denied[invalid_utf8] = %d, want 1", got)
	}
	if st := n.h.Stats(); st.Denials != 1 {
		t.Errorf("Denials %d, want 1", st.Denials)
	}
}

// TestInvalidUTF8BinaryRoomFrame: the room protocol relays message data in
// text frames, so a binary frame that is not UTF-8 is a malformed frame:
// refused with invalid_frame, and relayed to no one. (A binary frame may
// hold anything; RFC 6455's 1007 is for text frames.)
func TestInvalidUTF8BinaryRoomFrame(t *testing.T) {
	t.Parallel()
	n, _ := roomNode(t, Config{}, limiter.Limits{})
	a, b := dialAs(t, n, "mallory"), dialAs(t, n, "bob")
	join(t, a, "lobby")
	join(t, b, "lobby")
	writeRaw(t, a, websocket.BinaryMessage, invalidMessage)
	if r := recv(t, a); r.Error != CodeInvalidFrame {
		t.Errorf("got %+v, want invalid_frame", r)
	}
	send(t, b, msg("lobby", "after"))
	if r := recv(t, b); string(r.Data) != `"after"` {
		t.Errorf("b got %+v, want its own message first", r)
	}
}

// TestInvalidUTF8OnMessage: with OnMessage, text frames are checked and
// binary frames are the application's business.
func TestInvalidUTF8OnMessage(t *testing.T) {
	t.Parallel()
	n := newNode(t, Config{OnMessage: echo}, limiter.Limits{})
	c := dial(t, n)
	writeRaw(t, c, websocket.BinaryMessage, []byte{0xff, 0xfe})
	_ = c.SetReadDeadline(time.Now().Add(ioTimeout))
	if mt, b, err := c.ReadMessage(); err != nil || mt != websocket.BinaryMessage || string(b) != "\xff\xfe" {
		t.Fatalf("binary echo: %d %q %v", mt, b, err)
	}
	writeRaw(t, c, websocket.TextMessage, []byte{'a', 0xff})
	if ce := closeCode(t, c); ce.Code != websocket.CloseInvalidFramePayloadData {
		t.Errorf("close %d, want 1007", ce.Code)
	}
}

// TestInvalidUTF8AcrossNodes: a NATS client that is not a node publishes
// frames that are not UTF-8 on a room's subject; the node drops and counts
// them and delivers the valid frame that follows. A member's invalid frame
// is never published.
func TestInvalidUTF8AcrossNodes(t *testing.T) {
	t.Parallel()
	s := startNATS(t)
	na, _ := clusterNode(t, s, "node-a", Config{})
	nb, _ := clusterNode(t, s, "node-b", Config{})
	a1, a2 := dialAs(t, na, "a1"), dialAs(t, na, "a2")
	b1 := dialAs(t, nb, "b1")
	for _, c := range []*websocket.Conn{a1, a2, b1} {
		join(t, c, "lobby")
	}
	raw, err := nats.Connect(s.ClientURL(), nats.Name("foreign"))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	subject := RoomSubject("test", "lobby")
	fromA := make(chan []byte, 16)
	sub, err := raw.Subscribe(subject, func(m *nats.Msg) {
		if m.Header.Get(HeaderOrigin) == "node-a" {
			fromA <- m.Data
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := raw.Flush(); err != nil {
		t.Fatal(err)
	}

	for _, p := range [][]byte{{0xff, 0xfe}, invalidMessage} {
		if err := raw.Publish(subject, p); err != nil {
			t.Fatal(err)
		}
	}
	if err := raw.Publish(subject, []byte(`{"type":"message","room":"lobby","from":"foreign","data":"valid"}`)); err != nil {
		t.Fatal(err)
	}
	if r := recv(t, b1); r.From != "foreign" || string(r.Data) != `"valid"` {
		t.Errorf("b1 got %+v, want the valid foreign frame first", r)
	}
	if got := nb.h.Stats().RemoteDropped; got != 2 {
		t.Errorf("node b RemoteDropped %d, want 2", got)
	}

	// a1's invalid frame fails a1 and is not published; a2's next one is.
	writeRaw(t, a1, websocket.TextMessage, invalidMessage)
	if ce := closeCode(t, a1); ce.Code != websocket.CloseInvalidFramePayloadData {
		t.Errorf("close %d, want 1007", ce.Code)
	}
	send(t, a2, msg("lobby", "after"))
	select {
	case p := <-fromA:
		if !utf8.Valid(p) || string(p) == string(invalidMessage) {
			t.Errorf("node a published %q", p)
		}
	case <-time.After(ioTimeout):
		t.Fatal("node a published nothing")
	}
	// b1 hears only the foreign valid frame (read above) and a2's.
	if r := recv(t, b1); string(r.Data) != `"after"` {
		t.Errorf("b1 got %+v, want a2's message", r)
	}
}

// TestErrorEchoesID: every error frame echoes the frame's id, including the
// error for a well-formed message with "data": null, which used to drop it.
func TestErrorEchoesID(t *testing.T) {
	t.Parallel()
	n, _ := roomNode(t, Config{MaxDenials: -1}, limiter.Limits{})
	c := dialAs(t, n, "carol")
	join(t, c, "lobby")
	for _, f := range []string{
		`{"type":"message","room":"lobby","data":null,"id":"m1"}`,
		`{"type":"message","room":"lobby","id":"m1"}`,
		`{"room":"lobby","id":"m1"}`,
	} {
		send(t, c, f)
		if r := recv(t, c); r.Error != CodeInvalidFrame || r.ID != "m1" {
			t.Errorf("%s: got %+v, want invalid_frame with id m1", f, r)
		}
	}
}

// TestHugeFrameGets1009: a client writing a 10 MiB frame against a 10,240 B
// limit receives the 1009 close frame (it used to get 1006: the socket was
// closed while it was still writing), and the message_size violation
// reports the length the frame declared, not the limit plus one.
func TestHugeFrameGets1009(t *testing.T) {
	t.Parallel()
	const limit, size = 10240, 10 << 20
	for _, tc := range []struct {
		name   string
		cfg    Config
		dialer websocket.Dialer
	}{
		// gorilla's client sends a message in frames of its write buffer.
		{"rooms/fragments", Config{}, websocket.Dialer{}},
		{"rooms/one frame", Config{}, websocket.Dialer{WriteBufferSize: size + 64}},
		{"OnMessage/one frame", Config{OnMessage: echo}, websocket.Dialer{WriteBufferSize: size + 64}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := &sink{}
			tc.cfg.Limiter = newLimiter(t, limiter.Config{Limits: limiter.Limits{MaxMessageSize: limit}, Sink: s})
			n := newNode(t, tc.cfg, limiter.Limits{})
			c, _, err := tc.dialer.Dial(n.url, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetWriteDeadline(time.Now().Add(ioTimeout))
			if err := c.WriteMessage(websocket.TextMessage, make([]byte, size)); err != nil {
				t.Fatalf("write: %v", err)
			}
			if ce := closeCode(t, c); ce.Code != websocket.CloseMessageTooBig {
				t.Errorf("close %d, want 1009", ce.Code)
			}
			waitFor(t, ioTimeout, "a message_size violation", func() bool { return len(s.types()) == 1 })
			s.mu.Lock()
			v := s.vs[0]
			s.mu.Unlock()
			if v.Type != limiter.ViolationMessageSize || v.Current != size || v.Size != size || v.Limit != limit ||
				v.RetryAfter != limiter.Never {
				t.Errorf("violation %+v, want message_size observing %d bytes", v, size)
			}
		})
	}
}

// pingFlood sends up to n pings (and first pongs unsolicited pongs) on c,
// stopping at the first failed write, and returns how many went out.
func pingFlood(c *websocket.Conn, pongs, n int) int {
	sent := 0
	for i := 0; i < pongs+n; i++ {
		mt := websocket.PingMessage
		if i < pongs {
			mt = websocket.PongMessage
		}
		if err := c.WriteControl(mt, []byte("p"), time.Now().Add(ioTimeout)); err != nil {
			break
		}
		sent++
	}
	return sent
}

// TestControlFramesBounded: a client's pings and pongs share a bucket of
// ControlFramesPerMinute; a client sending 20,000 pings used to get 20,000
// pongs. Here it gets 60 minus the 30 unsolicited pongs it sent first; the
// rest go unanswered, and, counted as denials, close the connection.
func TestControlFramesBounded(t *testing.T) {
	t.Parallel()
	const flood = 20000
	t.Run("unanswered", func(t *testing.T) {
		t.Parallel()
		s := &sink{}
		n, _ := roomNodeWith(t, Config{MaxDenials: -1}, limiter.Config{Sink: s})
		c := dialAs(t, n, "pinger")
		var pongs int
		c.SetPongHandler(func(string) error { pongs++; return nil })
		join(t, c, "lobby")
		if sent := pingFlood(c, 30, flood); sent != 30+flood {
			t.Fatalf("sent %d control frames", sent)
		}
		// Frames are handled in order: once the message comes back, every
		// pong the server wrote has been read (the handler runs in recv).
		send(t, c, msg("lobby", "after"))
		if r := recv(t, c); string(r.Data) != `"after"` {
			t.Fatalf("got %+v", r)
		}
		if pongs != DefaultControlFramesPerMinute-30 {
			t.Errorf("%d pongs for %d pings after 30 pongs, want %d", pongs, flood, DefaultControlFramesPerMinute-30)
		}
		if got := len(s.types()); got != 30+flood-DefaultControlFramesPerMinute {
			t.Errorf("%d violations, want one per frame beyond the bucket", got)
		}
	})
	t.Run("closed", func(t *testing.T) {
		t.Parallel()
		n, _ := roomNode(t, Config{}, limiter.Limits{})
		c := dialAs(t, n, "pinger")
		var pongs int
		c.SetPongHandler(func(string) error { pongs++; return nil })
		done := make(chan *websocket.CloseError, 1)
		go func() {
			_ = c.SetReadDeadline(time.Now().Add(ioTimeout))
			for {
				if _, _, err := c.ReadMessage(); err != nil {
					ce, _ := err.(*websocket.CloseError)
					done <- ce
					return
				}
			}
		}()
		pingFlood(c, 0, flood)
		ce := <-done
		if ce == nil || ce.Code != websocket.ClosePolicyViolation || ce.Text != CloseReasonTooManyDenials {
			t.Errorf("close %v, want 1008 %s", ce, CloseReasonTooManyDenials)
		}
		if pongs != DefaultControlFramesPerMinute {
			t.Errorf("%d pongs, want %d", pongs, DefaultControlFramesPerMinute)
		}
	})
}

// TestDenialsEchoID: a rate denial of a malformed or unknown frame, and the
// banned error of a room frame, echo the frame's id (and room) too.
func TestDenialsEchoID(t *testing.T) {
	t.Parallel()
	n, _ := roomNode(t, Config{MaxDenials: -1}, limiter.Limits{MessagesPerMinute: 1})
	c := dialAs(t, n, "dora")
	join(t, c, "lobby") // the one message
	for _, f := range []string{`{"type":"dance","room":"x","id":"u1"}`, `{"room":"lobby","id":"u1"}`} {
		send(t, c, f)
		if r := recv(t, c); r.Error != ErrorCode(limiter.ReasonRateLimitExceeded) || r.ID != "u1" {
			t.Errorf("%s: %+v, want rate_limit_exceeded with id u1", f, r)
		}
	}

	g := &gate{}
	nb, _ := roomNodeWith(t, Config{}, limiter.Config{Gate: g})
	b := dialAs(t, nb, "eve")
	join(t, b, "lobby")
	g.ban("eve")
	send(t, b, map[string]any{"type": "message", "room": "lobby", "id": "b1", "data": 1})
	if r := recv(t, b); r.Error != ErrorCode(limiter.ReasonBanned) || r.ID != "b1" || r.Room != "lobby" {
		t.Errorf("got %+v, want banned with id b1 in lobby", r)
	}
}
