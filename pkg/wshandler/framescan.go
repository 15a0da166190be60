package wshandler

import (
	"bufio"
	"encoding/binary"
	"math"
	"net"
	"net/http"
	"sync"
)

// frameScanner follows the frame headers of a client's byte stream as it is
// read, skipping payloads by their length, so that the handler knows what
// gorilla/websocket does not tell it: the length a refused message
// declared (for a fragmented message, the sum its frames declared, up to
// the last one read while draining), and whether the client's close frame
// has arrived while the handler discards the rest of a refused message. It does O(1) work per
// frame and none per payload byte.
type frameScanner struct {
	limit    int64    // the read limit in bytes; 0 means none
	hdr      [14]byte // the header being read
	hn       int      // bytes of hdr read
	need     int      // the header's length, once its first two bytes are in
	left     int64    // payload bytes of the current frame still to come
	msg      int64    // length the current data message has declared so far
	oversize int64    // declared length of the first message over limit; 0 if none
	growing  bool     // more frames of that message may follow
	closed   bool     // a close frame's header has gone by
}

// feed scans p, the next bytes of the stream.
func (s *frameScanner) feed(p []byte) {
	for len(p) > 0 {
		if s.left > 0 {
			k := min(s.left, int64(len(p)))
			s.left -= k
			p = p[k:]
			continue
		}
		s.hdr[s.hn] = p[0]
		s.hn++
		p = p[1:]
		if s.hn == 2 {
			s.need = 2
			switch s.hdr[1] & 0x7f {
			case 126:
				s.need += 2
			case 127:
				s.need += 8
			}
			if s.hdr[1]&0x80 != 0 {
				s.need += 4 // the masking key
			}
		}
		if s.hn >= 2 && s.hn == s.need {
			s.header()
			s.hn = 0
		}
	}
}

// header takes in a complete frame header.
func (s *frameScanner) header() {
	n := int64(s.hdr[1] & 0x7f)
	switch n {
	case 126:
		n = int64(binary.BigEndian.Uint16(s.hdr[2:4]))
	case 127:
		u := binary.BigEndian.Uint64(s.hdr[2:10])
		n = int64(min(u, math.MaxInt64))
	}
	s.left = n
	switch s.hdr[0] & 0x0f {
	case 1, 2: // text, binary: a new message
		s.msg = n
	case 0: // continuation
		s.msg = min(s.msg, math.MaxInt64-n) + n
	case 8:
		s.closed = true
		return
	default: // ping, pong, reserved
		return
	}
	final := s.hdr[0]&0x80 != 0
	switch {
	case s.growing:
		// The refused message's later fragments, read while draining.
		s.oversize, s.growing = s.msg, !final
	case s.limit > 0 && s.msg > s.limit && s.oversize == 0:
		s.oversize, s.growing = s.msg, !final
	}
}

// scanConn is the connection a Handler gives gorilla/websocket: it passes
// every byte through and feeds what is read to its frameScanner. Reads
// happen on the connection's read goroutine only, so the scanner needs no
// lock.
//
// It also batches writes: between beginBatch and endBatch, what gorilla
// writes (each write a whole frame, under gorilla's write lock) is
// gathered in a pooled buffer and sent with as few system calls as its
// size allows, so that a writer with many frames queued does not pay one
// write call per frame. Outside a batch, writes go straight through.
type scanConn struct {
	net.Conn
	scan frameScanner

	wmu      sync.Mutex // guards batching and wbuf; held while writing
	batching bool
	wbuf     *[]byte
}

// maxBatch is the most a batch gathers before it writes.
const maxBatch = 32 << 10

// batchBuffers holds the buffers of batches in progress.
var batchBuffers = sync.Pool{New: func() any { b := make([]byte, 0, maxBatch); return &b }}

// Write implements net.Conn.
func (c *scanConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if !c.batching {
		return c.Conn.Write(p)
	}
	if len(*c.wbuf)+len(p) > maxBatch {
		if err := c.flushBatchLocked(); err != nil {
			return 0, err
		}
		if len(p) > maxBatch {
			return c.Conn.Write(p)
		}
	}
	*c.wbuf = append(*c.wbuf, p...)
	return len(p), nil
}

// beginBatch starts gathering writes.
func (c *scanConn) beginBatch() {
	c.wmu.Lock()
	c.batching = true
	c.wbuf = batchBuffers.Get().(*[]byte)
	c.wmu.Unlock()
}

// endBatch writes what the batch gathered and stops gathering.
func (c *scanConn) endBatch() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	err := c.flushBatchLocked()
	c.batching = false
	*c.wbuf = (*c.wbuf)[:0]
	batchBuffers.Put(c.wbuf)
	c.wbuf = nil
	return err
}

func (c *scanConn) flushBatchLocked() error {
	if len(*c.wbuf) == 0 {
		return nil
	}
	_, err := c.Conn.Write(*c.wbuf)
	*c.wbuf = (*c.wbuf)[:0]
	return err
}

// Read implements net.Conn.
func (c *scanConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.scan.feed(p[:n])
	return n, err
}

// scanWriter hands the Upgrader a scanConn in place of the hijacked
// connection.
type scanWriter struct {
	http.ResponseWriter
	limit int64
	conn  *scanConn
}

// Hijack implements http.Hijacker.
func (w *scanWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.conn = &scanConn{Conn: nc, scan: frameScanner{limit: w.limit}}
	return w.conn, brw, nil
}

// Unwrap returns the wrapped ResponseWriter, for http.ResponseController.
func (w *scanWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
