package wshandler

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

// FuzzFrameScanner feeds arbitrary byte streams, split at an arbitrary
// point, to the frame scanner: it never panics, and a split changes
// nothing. The corpus holds ping floods and oversized and fragmented
// messages.
func FuzzFrameScanner(f *testing.F) {
	var pings []byte
	for range 2000 {
		pings = append(pings, clientFrame(true, 9, 1)...)
	}
	f.Add(pings, uint16(1000))
	f.Add(append(pings, clientFrame(true, 8, 2)...), uint16(7))
	f.Add(bytes.Join([][]byte{clientFrame(false, 1, 900), clientFrame(true, 10, 3), clientFrame(true, 0, 300)}, nil), uint16(903))
	f.Add([]byte{0x81, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4}, uint16(3))
	f.Fuzz(func(t *testing.T, stream []byte, split uint16) {
		cut := int(split) % (len(stream) + 1)
		whole, parts := frameScanner{limit: 1000}, frameScanner{limit: 1000}
		whole.feed(stream)
		parts.feed(stream[:cut])
		parts.feed(stream[cut:])
		if whole != parts {
			t.Fatalf("split at %d: %+v, whole: %+v", cut, parts, whole)
		}
		if whole.oversize != 0 && whole.oversize <= whole.limit {
			t.Fatalf("oversize %d within the limit", whole.oversize)
		}
	})
}

// fuzzOps turns fuzz input into client frames: each op is a kind byte and
// a length byte, then that many payload bytes. Kinds: ping, pong, a raw
// text frame, a raw binary frame, and a room message whose data string
// holds the payload bytes unescaped (so possibly not UTF-8).
func fuzzOps(b []byte, room string) (ops []struct {
	mt   int
	data []byte
}) {
	for len(b) >= 2 && len(ops) < 5000 {
		kind, n := b[0]%5, int(b[1])
		b = b[2:]
		n = min(n, len(b))
		p := b[:n]
		b = b[n:]
		op := struct {
			mt   int
			data []byte
		}{websocket.TextMessage, p}
		switch kind {
		case 0:
			op.mt, op.data = websocket.PingMessage, p[:min(len(p), 125)]
		case 1:
			op.mt, op.data = websocket.PongMessage, p[:min(len(p), 125)]
		case 3:
			op.mt = websocket.BinaryMessage
		case 4:
			op.data = fmt.Appendf(nil, `{"type":"message","room":%q,"data":"%s"}`, room, p)
		}
		ops = append(ops, op)
	}
	return ops
}

// FuzzRoomConn drives a real connection with fuzzed frames (control-frame
// floods, text that is not UTF-8, room messages with raw bytes) while
// another member of the room listens: every frame the listener receives is
// UTF-8 and JSON, and the node stays up.
func FuzzRoomConn(f *testing.F) {
	flood := make([]byte, 0, 4000)
	for range 1000 {
		flood = append(flood, 0, 2, 'h', 'i')
	}
	f.Add(flood)
	f.Add([]byte{4, 2, 0xff, 0xfe})
	f.Add([]byte{4, 5, 'h', 'e', 'l', 'l', 'o', 2, 3, 'a', 0xc3, 'b', 4, 1, 'x'})
	f.Add([]byte{3, 2, 0xff, '{', 1, 1, 'p', 4, 3, 0xed, 0xa0, 0x80})
	n, _ := roomNode(f, Config{}, limiter.Limits{MaxMessageSize: 4096})
	var seq int
	f.Fuzz(func(t *testing.T, b []byte) {
		seq++
		room := fmt.Sprintf("fuzz-%d", seq)
		listener, fuzzer := dialAs(t, n, "listener"), dialAs(t, n, "fuzzer")
		join(t, listener, room)
		join(t, fuzzer, room)
		for _, op := range fuzzOps(b, room) {
			var err error
			deadline := time.Now().Add(ioTimeout)
			if op.mt == websocket.PingMessage || op.mt == websocket.PongMessage {
				err = fuzzer.WriteControl(op.mt, op.data, deadline)
			} else {
				_ = fuzzer.SetWriteDeadline(deadline)
				err = fuzzer.WriteMessage(op.mt, op.data)
			}
			if err != nil {
				break // the server has closed the connection
			}
		}
		_ = fuzzer.Close()
		waitFor(t, ioTimeout, "the fuzzed connection to end", func() bool { return n.h.Stats().Connections == 1 })
		send(t, listener, msg(room, "end"))
		for i := 0; ; i++ {
			_ = listener.SetReadDeadline(time.Now().Add(ioTimeout))
			_, p, err := listener.ReadMessage()
			if err != nil {
				t.Fatalf("listener after %d frames: %v", i, err)
			}
			if !utf8.Valid(p) || !json.Valid(p) {
				t.Fatalf("listener got %q", p)
			}
			if bytes.Contains(p, []byte(`"data":"end"`)) {
				break
			}
		}
		_ = listener.Close()
		waitFor(t, ioTimeout, "the listener to end", func() bool { return n.h.Stats().Connections == 0 })
	})
}
