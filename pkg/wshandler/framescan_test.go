package wshandler

import (
	"bytes"
	"encoding/binary"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

// clientFrame returns a masked client frame: fin, opcode and a payload of n
// bytes (zeros; the scanner never reads payloads).
func clientFrame(fin bool, op byte, n int) []byte {
	b := []byte{op}
	if fin {
		b[0] |= 0x80
	}
	switch {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n <= 0xffff:
		b = append(b, 0x80|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	b = append(b, 1, 2, 3, 4) // masking key
	return append(b, make([]byte, n)...)
}

func TestFrameScanner(t *testing.T) {
	t.Parallel()
	var pings []byte
	for range 1000 {
		pings = append(pings, clientFrame(true, 9, 4)...)
	}
	closeLookalike := clientFrame(true, 1, 8)
	copy(closeLookalike[6:], clientFrame(true, 8, 0))
	cases := []struct {
		name     string
		stream   [][]byte
		oversize int64
		closed   bool
	}{
		{"small", [][]byte{clientFrame(true, 1, 100)}, 0, false},
		{"at the limit", [][]byte{clientFrame(true, 1, 1000)}, 0, false},
		{"16-bit length", [][]byte{clientFrame(true, 2, 1001)}, 1001, false},
		{"64-bit length", [][]byte{clientFrame(true, 1, 70000)}, 70000, false},
		{"fragments add up", [][]byte{clientFrame(false, 1, 600), clientFrame(false, 0, 600), clientFrame(true, 0, 300)}, 1500, false},
		{"control frames between fragments", [][]byte{clientFrame(false, 1, 900), clientFrame(true, 9, 10),
			clientFrame(true, 0, 200), clientFrame(true, 1, 5000)}, 1100, false},
		{"first oversized message counts", [][]byte{clientFrame(true, 1, 2000), clientFrame(true, 1, 5000)}, 2000, false},
		{"ping flood, then close", [][]byte{pings, clientFrame(true, 8, 2)}, 0, true},
		{"payload bytes that look like a close header", [][]byte{closeLookalike}, 0, false},
	}
	for _, tc := range cases {
		stream := bytes.Join(tc.stream, nil)
		// Whole, and one byte at a time: the same result.
		for _, step := range []int{len(stream), 1, 7} {
			s := frameScanner{limit: 1000}
			for i := 0; i < len(stream); i += step {
				s.feed(stream[i:min(i+step, len(stream))])
			}
			if s.oversize != tc.oversize || s.closed != tc.closed {
				t.Errorf("%s (step %d): oversize %d closed %v, want %d %v", tc.name, step, s.oversize, s.closed, tc.oversize, tc.closed)
			}
		}
	}
}

// countConn is a net.Conn that records its writes.
type countConn struct {
	net.Conn
	writes [][]byte
}

func (c *countConn) Write(p []byte) (int, error) {
	c.writes = append(c.writes, bytes.Clone(p))
	return len(p), nil
}

// TestScanConnBatchesWrites: inside a batch, writes are gathered and go
// out in one write call (more only past maxBatch), in order; outside one
// they go straight through.
func TestScanConnBatchesWrites(t *testing.T) {
	cc := &countConn{}
	sc := &scanConn{Conn: cc}
	frame := bytes.Repeat([]byte("f"), 100)
	if _, err := sc.Write(frame); err != nil || len(cc.writes) != 1 {
		t.Fatalf("outside a batch: %d writes, %v", len(cc.writes), err)
	}
	sc.beginBatch()
	var want []byte
	for i := 0; i < 10; i++ {
		p := append(bytes.Clone(frame), byte('0'+i))
		want = append(want, p...)
		if n, err := sc.Write(p); n != len(p) || err != nil {
			t.Fatalf("write in a batch: %d, %v", n, err)
		}
	}
	if len(cc.writes) != 1 {
		t.Fatal("a batch wrote before its end")
	}
	if err := sc.endBatch(); err != nil {
		t.Fatal(err)
	}
	if len(cc.writes) != 2 || !bytes.Equal(cc.writes[1], want) {
		t.Fatalf("%d writes after the batch, want 2 with the frames in order", len(cc.writes))
	}
	// A batch larger than maxBatch writes in pieces, in order.
	cc.writes = nil
	sc.beginBatch()
	want = want[:0]
	big := bytes.Repeat([]byte("b"), 1000)
	for i := 0; i < 100; i++ {
		want = append(want, big...)
		_, _ = sc.Write(big)
	}
	if err := sc.endBatch(); err != nil {
		t.Fatal(err)
	}
	if n := len(cc.writes); n < 3 || n > 5 {
		t.Errorf("100,000 bytes in %d writes, want 4 or so", n)
	}
	if got := bytes.Join(cc.writes, nil); !bytes.Equal(got, want) {
		t.Error("the pieces of a large batch are not the frames in order")
	}
}

// TestQueuedFramesArriveInOrder: frames queued during OnMessage leave as
// one batch and arrive whole and in order.
func TestQueuedFramesArriveInOrder(t *testing.T) {
	t.Parallel()
	n := newNode(t, Config{OnMessage: func(c *Conn, _ int, _ []byte) {
		for i := 0; i < 200; i++ {
			_ = c.Send([]byte(strconv.Itoa(i) + strings.Repeat("x", i*10)))
		}
	}}, limiter.Limits{})
	c := dial(t, n)
	send(t, c, "go")
	for i := 0; i < 200; i++ {
		_ = c.SetReadDeadline(time.Now().Add(ioTimeout))
		_, b, err := c.ReadMessage()
		if want := strconv.Itoa(i) + strings.Repeat("x", i*10); err != nil || string(b) != want {
			t.Fatalf("frame %d: %.20q, %v", i, b, err)
		}
	}
}
