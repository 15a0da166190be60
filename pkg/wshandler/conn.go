package wshandler

import (
	"bytes"
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
	"github.com/ratethrottle/ratethrottle/pkg/policy"
)

// outFrame is one queued message. data is never modified once queued, so
// one frame may sit in many queues.
type outFrame struct {
	typ  int
	data []byte
}

// Conn is one open WebSocket connection of a Handler. Send and Close are
// safe for concurrent use; the rest is read-only.
type Conn struct {
	h      *Handler
	ws     *websocket.Conn
	sc     *scanConn // ws's connection
	id     string
	client string
	meta   map[string]string
	user   string // meta[MetaUser]

	// The policy's classes, owned by the read goroutine; next to the
	// fields above, which a message reads anyway.
	resTab  *policy.Table    // the table res was resolved in
	res     *policy.Resolved // the class limits of the connection's tier in resTab
	classes connBuckets      // the per-connection class buckets

	idJSON []byte

	closing   chan struct{} // closed when a close is requested
	dead      chan struct{} // closed when the read loop has ended
	closeOnce sync.Once
	deadOnce  sync.Once
	closeCode int
	closeText string
	aborted   atomic.Bool
	wmu       sync.Mutex  // held while writing queued frames
	handling  atomic.Bool // the read goroutine is handling a message

	// The writer goroutine runs only while there is something to write:
	// queued frames, or the close frame. An idle connection has none, and
	// so no second goroutine stack.
	wstate  sync.Mutex // guards writing and wstopped; taken before qmu
	writing bool       // a writer goroutine is running
	// wstopped is set once no writer may start: the close frame is
	// written or the read loop has ended.
	wstopped bool
	writers  sync.WaitGroup
	pinger   *time.Timer // sends a ping every PingInterval; nil without pings

	// The send queue is a slice that grows with what is queued, up to
	// SendQueueSize frames, rather than a channel of that capacity: a
	// channel's buffer is allocated whole (8 KB at the default size) by
	// every connection, idle or not. The writer takes the whole queue at
	// once and hands its emptied batch back as the next queue.
	qmu   sync.Mutex
	queue []outFrame // guarded by qmu; oldest first
	spare []outFrame // guarded by wmu: the last batch's array, for reuse

	// Owned by the read goroutine.
	limit    int64           // the read limit in force (readLimit); 0 means none
	pv       *policy.Version // the policy version limit was taken from
	denials  limiter.Bucket
	controls limiter.Bucket // pings and pongs from the client
	rooms    map[string]membership
	rbuf     bytes.Buffer
	ebuf     []byte
}

// ID returns the connection's ID, unique on its node and prefixed by the
// node's ID.
func (c *Conn) ID() string { return c.id }

// Client returns the key KeyFunc gave the connection's client.
func (c *Conn) Client() string { return c.client }

// Metadata returns the metadata registered with the connection. Callers
// must not modify it.
func (c *Conn) Metadata() map[string]string { return c.meta }

// Send queues a text message for the connection. It never waits: when the
// send queue is full the connection is aborted and Send returns
// ErrQueueFull. data is copied. Frames queued while the connection's own
// OnMessage runs are written as soon as it returns.
func (c *Conn) Send(data []byte) error {
	return c.SendMessage(websocket.TextMessage, data)
}

// SendMessage queues a message of messageType (websocket.TextMessage or
// websocket.BinaryMessage), as Send does.
func (c *Conn) SendMessage(messageType int, data []byte) error {
	return c.enqueue(outFrame{typ: messageType, data: bytes.Clone(data)})
}

// Close closes the connection with code and reason (at most 123 bytes;
// longer reasons are cut) after what is already queued for it is written.
// It does not wait. Closing a closed connection does nothing.
func (c *Conn) Close(code int, reason string) {
	c.closeOnce.Do(func() {
		c.closeCode, c.closeText = code, cutReason(reason)
		close(c.closing)
		c.kick() // the writer says goodbye
	})
}

// abort drops the connection without a close frame. It reports whether
// this call dropped it.
func (c *Conn) abort() bool {
	if c.aborted.Swap(true) {
		return false
	}
	c.Close(websocket.CloseAbnormalClosure, "")
	_ = c.ws.NetConn().Close()
	return true
}

// enqueue puts f on the send queue without waiting.
func (c *Conn) enqueue(f outFrame) error {
	select {
	case <-c.closing:
		return ErrClosed
	default:
	}
	c.qmu.Lock()
	if len(c.queue) >= c.h.cfg.SendQueueSize {
		c.qmu.Unlock()
		if c.abort() {
			c.h.overflows.Add(1)
		}
		return ErrQueueFull
	}
	c.queue = append(c.queue, f)
	c.qmu.Unlock()
	// While the read goroutine handles a message it writes the queue when
	// done (flushAfterRead), so the writer need not wake. handling is
	// loaded after the frame is queued and cleared before the queue is
	// checked, so a frame is never left without a writer.
	if !c.handling.Load() {
		c.kick()
	}
	return nil
}

// isClosing reports whether a close was requested.
func (c *Conn) isClosing() bool {
	select {
	case <-c.closing:
		return true
	default:
		return false
	}
}

func cutReason(s string) string {
	const max = 123 // a close frame's payload is at most 125 bytes
	if len(s) <= max {
		return s
	}
	s = s[:max]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

// kick starts the writer goroutine unless one is running or writing has
// stopped. Queued frames are written by whoever holds wmu: the writer, or
// the read goroutine right after it has handled a message (which saves a
// goroutine on the common request-reply path). Either way the frames leave
// in queue order.
func (c *Conn) kick() {
	c.wstate.Lock()
	defer c.wstate.Unlock()
	if c.writing || c.wstopped {
		return
	}
	c.writing = true
	c.writers.Add(1)
	go c.writeRun()
}

// writeRun writes queued frames until the queue is empty, then ends; on a
// close request it flushes what was queued and writes the close frame.
func (c *Conn) writeRun() {
	defer c.writers.Done()
	for {
		if c.isClosing() {
			c.writeClose()
			return
		}
		c.wmu.Lock()
		if !c.flushUnlock() {
			c.stopWriting()
			return
		}
		// A frame queued from here on finds writing set and relies on
		// this loop: the check and the reset are under wstate, which an
		// enqueuer's kick takes after queueing.
		c.wstate.Lock()
		if c.queued() == 0 && !c.isClosing() {
			c.writing = false
			c.wstate.Unlock()
			return
		}
		c.wstate.Unlock()
	}
}

// stopWriting ends the writer for good.
func (c *Conn) stopWriting() {
	c.wstate.Lock()
	c.writing, c.wstopped = false, true
	c.wstate.Unlock()
}

// writeClose flushes what was queued before the close and writes the
// close frame, unless the connection was aborted; then the read loop
// waits for the client's close frame, at most CloseTimeout.
func (c *Conn) writeClose() {
	defer c.stopWriting()
	if c.aborted.Load() {
		return
	}
	cfg := &c.h.cfg
	c.wmu.Lock()
	if !c.flushUnlock() {
		return
	}
	msg := websocket.FormatCloseMessage(c.closeCode, c.closeText)
	if err := c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(cfg.WriteTimeout)); err != nil {
		c.writeFailed(err)
		return
	}
	_ = c.ws.NetConn().SetReadDeadline(time.Now().Add(cfg.CloseTimeout))
}

// ping sends a ping to the client and schedules the next; it runs on the
// pinger timer's goroutine.
func (c *Conn) sendPing() {
	if c.isClosing() {
		return
	}
	select {
	case <-c.dead:
		return
	default:
	}
	if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(c.h.cfg.WriteTimeout)); err != nil {
		c.writeFailed(err)
		return
	}
	c.pinger.Reset(c.h.cfg.PingInterval)
}

// queued returns the number of frames waiting in the send queue.
func (c *Conn) queued() int {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	return len(c.queue)
}

// maxSpare is the largest batch array a connection keeps for reuse; a
// connection that once queued more gives the larger array back, so an idle
// connection holds at most this many frame headers.
const maxSpare = 16

// flushLocked writes the frames queued when it is called (at most one
// queue's worth); requires c.wmu held. Each write has WriteTimeout; the
// deadline is renewed every 16 frames rather than for each one. Two or
// more frames are written as one batch (scanConn).
func (c *Conn) flushLocked() error {
	c.qmu.Lock()
	batch := c.queue
	c.queue = c.spare
	c.qmu.Unlock()
	c.spare = nil
	var err error
	// Several frames go out in as few write calls as their size allows.
	batched := len(batch) > 1 && c.sc != nil
	if batched {
		c.sc.beginBatch()
	}
	for i, f := range batch {
		if i%16 == 0 {
			if err = c.ws.SetWriteDeadline(time.Now().Add(c.h.cfg.WriteTimeout)); err != nil {
				break
			}
		}
		if err = c.ws.WriteMessage(f.typ, f.data); err != nil {
			break
		}
	}
	if batched {
		if berr := c.sc.endBatch(); err == nil {
			err = berr
		}
	}
	clear(batch) // drop the references to the frames' data
	if cap(batch) <= maxSpare {
		c.spare = batch[:0]
	}
	return err
}

// flushUnlock writes the frames queued (flushLocked), unlocks c.wmu, which
// it requires held, and reports whether the writes succeeded; a failed
// write ends the connection (writeFailed).
func (c *Conn) flushUnlock() bool {
	err := c.flushLocked()
	c.wmu.Unlock()
	if err != nil {
		c.writeFailed(err)
		return false
	}
	return true
}

// flushAfterRead writes what the read goroutine's handling of a message
// queued, on the read goroutine, if the writer is not busy; otherwise it
// leaves the frames to the writer.
func (c *Conn) flushAfterRead() {
	c.handling.Store(false)
	if c.queued() == 0 {
		return
	}
	if !c.wmu.TryLock() {
		c.kick()
		return
	}
	if !c.flushUnlock() {
		return
	}
	if c.queued() > 0 {
		c.kick()
	}
}

// serve runs the connection on the calling goroutine until it ends.
func (c *Conn) serve() {
	h := c.h
	if c.limit > 0 {
		c.ws.SetReadLimit(c.limit)
	}
	pi := h.cfg.PingInterval
	if pi > 0 {
		_ = c.ws.SetReadDeadline(time.Now().Add(2 * pi))
	}
	c.ws.SetPongHandler(func(string) error {
		if c.controlFrame() && pi > 0 && !c.isClosing() {
			_ = c.ws.SetReadDeadline(time.Now().Add(2 * pi))
		}
		return nil
	})
	c.ws.SetPingHandler(c.ping)
	if pi > 0 {
		// Armed only once assigned: sendPing reads c.pinger.
		c.pinger = time.AfterFunc(time.Hour, c.sendPing)
		c.pinger.Stop()
		c.pinger.Reset(pi)
	}
	if h.cfg.OnConnect != nil {
		if err := h.cfg.OnConnect(c); err != nil {
			c.Close(websocket.ClosePolicyViolation, err.Error())
		}
	}
	err := c.readLoop()
	c.deadOnce.Do(func() { close(c.dead) })
	if c.pinger != nil {
		c.pinger.Stop()
	}
	c.stopWriting()
	c.writers.Wait()
	_ = c.ws.NetConn().Close()
	c.leaveAll()
	_ = h.lim.UnregisterConnection(h.ctx, c.id)
	h.untrack(c)
	if h.cfg.OnClose != nil {
		h.cfg.OnClose(c, err)
	}
}

// readLoop reads and handles messages until the connection fails or the
// close handshake ends. It returns the error that ended it.
func (c *Conn) readLoop() error {
	for {
		c.followPolicy()
		mt, r, err := c.ws.NextReader()
		if err == nil {
			c.rbuf.Reset()
			_, err = c.rbuf.ReadFrom(r)
		}
		if err != nil {
			if errors.Is(err, websocket.ErrReadLimit) {
				c.refuseOversized()
			}
			return err
		}
		if c.isClosing() {
			continue // draining until the client's close frame
		}
		data := c.rbuf.Bytes()
		// A text frame must be UTF-8 (RFC 6455 §8.1). (The room protocol
		// refuses binary frames that are not, see handleFrame.)
		if mt == websocket.TextMessage && !utf8.Valid(data) {
			c.failInvalidUTF8(len(data))
			continue
		}
		c.handling.Store(true)
		c.handle(mt, data)
		c.flushAfterRead()
	}
}

// followPolicy sets the read limit again when the policy version has
// changed since it was set, so that a new max_message_size applies from
// the connection's next message. It costs one atomic load when nothing
// changed.
func (c *Conn) followPolicy() {
	p := c.h.cfg.Policy
	if p == nil {
		return
	}
	v := p.Current()
	if v == c.pv {
		return
	}
	c.pv = v
	c.limit = c.h.readLimit(c.id, c.meta, v)
	if c.sc != nil {
		c.sc.scan.limit = c.limit
	}
	c.ws.SetReadLimit(c.limit) // 0 means none to gorilla too
}

// refuseOversized reports a message over MaxMessageSize, which gorilla
// has refused from its header with a 1009 close frame, and then drains the
// connection: it reads and discards what the client still sends, until
// the client's close frame, for at most CloseTimeout and MaxDrain bytes.
// Closing the socket while the client is still writing would reset the
// connection, and the client would never read the 1009.
//
// The violation reports the length the message's frame headers declared:
// the refused frame's, plus its later fragments' that arrive while
// draining.
func (c *Conn) refuseOversized() {
	h := c.h
	now := h.cfg.Now()
	c.Close(websocket.CloseMessageTooBig, "") // no more sends; the frame is out already
	c.drain()
	max := c.limit
	size := c.sc.scan.oversize
	if size == 0 {
		size = max + 1 // not seen by the scanner: a length that overflowed
	}
	h.violate(limiter.Violation{Type: limiter.ViolationMessageSize, Reason: limiter.ReasonMessageTooLarge,
		Time: now, ClientID: c.client, ConnectionID: c.id, Size: size, Limit: max, Current: size,
		RetryAfter: limiter.Never, Metadata: c.meta})
}

// drain reads and discards from the socket until the client's close frame
// has arrived, for at most CloseTimeout and MaxDrain bytes.
func (c *Conn) drain() {
	cfg := &c.h.cfg
	if cfg.MaxDrain <= 0 || c.sc.scan.closed {
		return
	}
	_ = c.sc.SetReadDeadline(time.Now().Add(cfg.CloseTimeout))
	buf := make([]byte, 32<<10)
	for n := int64(0); n < cfg.MaxDrain && !c.sc.scan.closed; {
		k, err := c.sc.Read(buf[:min(int64(len(buf)), cfg.MaxDrain-n)])
		n += int64(k)
		if err != nil {
			return
		}
	}
}

// writeFailed ends the connection after a failed write, unless the write
// failed because a close frame has been sent: then the read goroutine ends
// it once the close handshake or the drain is over.
func (c *Conn) writeFailed(err error) {
	if !errors.Is(err, websocket.ErrCloseSent) {
		c.abort()
	}
}

// failInvalidUTF8 reports a frame of size bytes that is not valid UTF-8
// and fails the connection with 1007. The frame goes nowhere: not to
// OnMessage, not to a room, not into an error frame.
func (c *Conn) failInvalidUTF8(size int) {
	h := c.h
	h.denials.Add(1)
	h.violate(limiter.Violation{Type: limiter.ViolationInvalidUTF8, Reason: limiter.ReasonInvalidUTF8,
		Time: h.cfg.Now(), ClientID: c.client, ConnectionID: c.id, Size: int64(size), Current: int64(size),
		RetryAfter: limiter.Never, Metadata: c.meta})
	c.Close(websocket.CloseInvalidFramePayloadData, string(limiter.ReasonInvalidUTF8))
}

// handle runs one message through the limits and to OnMessage or the room
// protocol.
func (c *Conn) handle(mt int, data []byte) {
	h := c.h
	if h.cfg.OnMessage == nil {
		c.handleFrame(mt, data)
		return
	}
	if !c.gate("", "") {
		return
	}
	if e, ok := c.checkMessage(mt, data); !ok {
		c.deny(e)
		return
	}
	h.cfg.OnMessage(c, mt, data)
}

// checkMessage runs a message for OnMessage through the Limiter's checks
// and, with Classify and a Policy, its class's buckets. On a denial nothing
// stays taken and it returns the error frame. It allocates nothing
// (BenchmarkMessagePath) unless Classify or a Store does.
func (c *Conn) checkMessage(mt int, data []byte) (errorInfo, bool) {
	h := c.h
	now := h.cfg.Now()
	if d := h.lim.CheckMessageAt(h.ctx, c.id, len(data), now); !d.Allowed {
		return errorFromDecision(d), false
	}
	if h.cfg.Classify == nil || h.cfg.Policy == nil {
		return errorInfo{}, true
	}
	t := h.cfg.Policy.Current().Table
	if id := t.Class(h.cfg.Classify(c, mt, data)); id != policy.NoClass {
		if e, ok := c.takeClass(t, id, "", errorInfo{}, now); !ok {
			h.lim.RefundMessage(h.ctx, c.id, len(data))
			return e, false
		}
	}
	return errorInfo{}, true
}

// gate reports whether the client may still send; a banned client gets an
// error frame (for room and the frame's id ref, if any) and its connection
// is closed.
func (c *Conn) gate(room, ref string) bool {
	g := c.h.gate
	if g == nil {
		return true
	}
	if _, banned := g.BannedUntil(c.client, c.h.cfg.Now()); banned {
		c.sendError(errorInfo{code: ErrorCode(limiter.ReasonBanned), room: room, ref: ref})
		c.Close(websocket.ClosePolicyViolation, string(limiter.ReasonBanned))
		return false
	}
	return true
}

// ping answers a client's ping with a pong, if the ping is within the
// connection's control-frame bucket; it runs on the read goroutine.
func (c *Conn) ping(data string) error {
	if !c.controlFrame() {
		return nil
	}
	err := c.ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(c.h.cfg.WriteTimeout))
	var ne net.Error
	if err == nil || errors.Is(err, websocket.ErrCloseSent) || (errors.As(err, &ne) && ne.Timeout()) {
		return nil // as gorilla's own ping handler: the writer notices a dead peer
	}
	return err
}

// controlFrame takes a token for a ping or pong from the client and
// reports whether it was within ControlFramesPerMinute. A frame beyond it
// is ignored (a ping gets no pong), reported as a message_rate violation
// and counted as a denial.
func (c *Conn) controlFrame() bool {
	h := c.h
	if h.cfg.ControlFramesPerMinute < 0 {
		return true
	}
	spec := limiter.Spec{Limit: int64(h.cfg.ControlFramesPerMinute), Per: time.Minute}
	now := h.cfg.Now()
	r := c.controls.TakeAt(spec, now, 1)
	if r.OK {
		return true
	}
	h.violate(limiter.Violation{Type: limiter.ViolationMessageRate, Reason: limiter.ReasonRateLimitExceeded,
		Time: now, ClientID: c.client, ConnectionID: c.id, Limit: spec.Limit, Remaining: r.Remaining,
		RetryAfter: r.RetryAfter, Metadata: c.meta})
	c.countDenial()
	return false
}

// deny answers a denied frame with an error frame and counts the denial.
func (c *Conn) deny(e errorInfo) {
	c.sendError(e)
	if e.uncertain {
		// The cluster's own uncertainty, not the client's excess: a
		// denial in the statistics, never a step toward a close.
		c.h.denials.Add(1)
		return
	}
	c.countDenial()
}

// countDenial counts a denial and closes the connection when it has been
// denied too often.
func (c *Conn) countDenial() {
	c.h.denials.Add(1)
	if c.h.cfg.MaxDenials < 0 {
		return
	}
	spec := limiter.Spec{Limit: int64(c.h.cfg.MaxDenials), Per: c.h.cfg.DenialWindow}
	if r := c.denials.TakeAt(spec, c.h.cfg.Now(), 1); !r.OK {
		c.Close(websocket.ClosePolicyViolation, CloseReasonTooManyDenials)
	}
}

// CloseReasonTooManyDenials is the reason of the 1008 close of a connection
// denied more than Config.MaxDenials times within Config.DenialWindow.
const CloseReasonTooManyDenials = "too_many_denials"

// sendError queues an error frame.
func (c *Conn) sendError(e errorInfo) {
	c.ebuf = appendErrorFrame(c.ebuf[:0], e)
	_ = c.enqueue(outFrame{typ: websocket.TextMessage, data: bytes.Clone(c.ebuf)})
}

// ctx returns the context of the connection's store calls.
func (c *Conn) ctx() context.Context { return c.h.ctx }
