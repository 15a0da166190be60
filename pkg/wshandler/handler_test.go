package wshandler

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

// echo is an OnMessage that sends every message back.
func echo(c *Conn, mt int, data []byte) { _ = c.SendMessage(mt, data) }

// rejection reads a refused handshake's status, Retry-After and body.
func rejection(t *testing.T, resp *http.Response, err error) (int, string, reply) {
	t.Helper()
	if !errors.Is(err, websocket.ErrBadHandshake) || resp == nil {
		t.Fatalf("dial: got %v, want a refused handshake", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var r reply
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("body %q is not JSON: %v", b, err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	return resp.StatusCode, resp.Header.Get("Retry-After"), r
}

func TestAdmissionConnectionRate(t *testing.T) {
	t.Parallel()
	n := newNode(t, Config{OnMessage: echo}, limiter.Limits{ConnectionsPerMinute: 2})
	dial(t, n)
	dial(t, n)
	resp, err := dialErr(t, n)
	status, retry, body := rejection(t, resp, err)
	if status != http.StatusTooManyRequests {
		t.Errorf("status %d, want 429", status)
	}
	// One token refills in 30 s; the header rounds the wait up to seconds.
	if retry != "30" && retry != "29" {
		t.Errorf("Retry-After %q, want 30 (or 29 after a slow second)", retry)
	}
	if body.Error != ErrorCode(limiter.ReasonConnectionRateExceeded) || body.RetryAfterMs == nil || *body.RetryAfterMs <= 28000 {
		t.Errorf("body %+v", body)
	}
	if got := n.h.Stats().Rejected; got != 1 {
		t.Errorf("Rejected %d, want 1", got)
	}
}

func TestAdmissionConcurrentConnections(t *testing.T) {
	t.Parallel()
	n := newNode(t, Config{OnMessage: echo}, limiter.Limits{MaxConcurrentConnections: 1})
	first := dial(t, n)
	// The client's handshake ends before the server counts the connection:
	// wait for it, or the wait for zero below could pass before it starts.
	waitFor(t, ioTimeout, "the first connection to be counted", func() bool { return n.h.Stats().Connections == 1 })
	resp, err := dialErr(t, n)
	status, retry, body := rejection(t, resp, err)
	if status != http.StatusTooManyRequests || retry != "" || body.Error != ErrorCode(limiter.ReasonTooManyConnections) || body.Limit != 1 {
		t.Errorf("got %d Retry-After %q %+v, want 429 without Retry-After, too_many_connections, limit 1", status, retry, body)
	}
	_ = first.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(ioTimeout))
	waitFor(t, ioTimeout, "the first connection to end", func() bool { return n.h.Stats().Connections == 0 })
	dial(t, n)
}

func TestAdmissionBanned(t *testing.T) {
	t.Parallel()
	g := &gate{}
	g.ban("127.0.0.1")
	l, err := limiter.New(limiter.Config{Gate: g})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	n := newNode(t, Config{Limiter: l, OnMessage: echo}, limiter.Limits{})
	resp, err := dialErr(t, n)
	status, retry, body := rejection(t, resp, err)
	if status != http.StatusForbidden || body.Error != ErrorCode(limiter.ReasonBanned) || retry != "90" {
		t.Errorf("got %d Retry-After %q %+v, want 403, banned, 90", status, retry, body)
	}
}

// downStore is a cluster store failing closed: it cannot decide.
type downStore struct{}

func (downStore) Take(context.Context, limiter.Key, limiter.Spec, time.Time, int64) (limiter.Result, error) {
	return limiter.Result{}, limiter.ErrUnavailable
}

func (downStore) Refund(context.Context, limiter.Key, limiter.Spec, time.Time, int64) error {
	return limiter.ErrUnavailable
}

func TestAdmissionStoreUnavailable(t *testing.T) {
	t.Parallel()
	l, err := limiter.New(limiter.Config{Limits: limiter.Limits{ConnectionsPerMinute: 10}, Store: downStore{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	n := newNode(t, Config{Limiter: l, OnMessage: echo}, limiter.Limits{})
	resp, err := dialErr(t, n)
	status, retry, body := rejection(t, resp, err)
	if status != http.StatusServiceUnavailable || retry != "" || body.Error != ErrorCode(limiter.ReasonStoreUnavailable) {
		t.Errorf("got %d Retry-After %q %+v, want 503 store_unavailable without Retry-After", status, retry, body)
	}
}

func TestAdmissionRejectWithClose(t *testing.T) {
	t.Parallel()
	n := newNode(t, Config{OnMessage: echo, RejectWithClose: true}, limiter.Limits{ConnectionsPerMinute: 1})
	dial(t, n)
	c := dial(t, n) // the upgrade succeeds...
	// ...then an error frame tells the wait, which a close reason cannot.
	_ = c.SetReadDeadline(time.Now().Add(ioTimeout))
	_, b, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("no error frame before the close: %v", err)
	}
	var f struct {
		Type         FrameType
		Error        string
		RetryAfterMS int64 `json:"retry_after_ms"`
	}
	if err := json.Unmarshal(b, &f); err != nil || f.Type != TypeError ||
		f.Error != string(limiter.ReasonConnectionRateExceeded) || f.RetryAfterMS < 59_000 || f.RetryAfterMS > 60_000 {
		t.Errorf("error frame %s (%v), want connection_rate_exceeded with retry_after_ms about 60000", b, err)
	}
	ce := closeCode(t, c)
	if ce.Code != websocket.ClosePolicyViolation || ce.Text != string(limiter.ReasonConnectionRateExceeded) {
		t.Errorf("close %d %q, want 1008 connection_rate_exceeded", ce.Code, ce.Text)
	}
}

func TestAdmissionKeyFuncError(t *testing.T) {
	t.Parallel()
	kf := func(*http.Request) (string, error) { return "", ErrNoIdentity }
	n := newNode(t, Config{OnMessage: echo, KeyFunc: kf}, limiter.Limits{})
	resp, err := dialErr(t, n)
	if resp == nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("got %v %v, want 400", resp, err)
	}
	resp.Body.Close()
}

func TestOversizedFrameCloses1009(t *testing.T) {
	t.Parallel()
	s := &sink{}
	n := newNode(t, Config{OnMessage: echo, Limiter: newLimiter(t, limiter.Config{Limits: limiter.Limits{MaxMessageSize: 100}, Sink: s})}, limiter.Limits{})
	c := dial(t, n)
	send(t, c, strings.Repeat("a", 100))
	recv := func() string {
		_ = c.SetReadDeadline(time.Now().Add(ioTimeout))
		_, b, err := c.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if got := recv(); len(got) != 100 {
		t.Fatalf("echo of 100 bytes: got %d bytes", len(got))
	}
	send(t, c, strings.Repeat("a", 101))
	if ce := closeCode(t, c); ce.Code != websocket.CloseMessageTooBig {
		t.Errorf("close %d, want 1009", ce.Code)
	}
	waitFor(t, ioTimeout, "a message_size violation", func() bool {
		ts := s.types()
		return len(ts) == 1 && ts[0] == limiter.ViolationMessageSize
	})
}

func TestMessageRateErrorFrame(t *testing.T) {
	t.Parallel()
	n := newNode(t, Config{OnMessage: echo}, limiter.Limits{MessagesPerMinute: 3})
	c := dial(t, n)
	for i := 0; i < 3; i++ {
		send(t, c, `{"n":1}`)
		if r := recv(t, c); r.Error != "" {
			t.Fatalf("message %d denied: %+v", i, r)
		}
	}
	send(t, c, `{"n":1}`)
	r := recv(t, c)
	if r.Type != TypeError || r.Error != ErrorCode(limiter.ReasonRateLimitExceeded) || r.RetryAfterMs == nil ||
		*r.RetryAfterMs < 19000 || *r.RetryAfterMs > 20000 || r.Limit != 3 {
		t.Errorf("got %+v, want rate_limit_exceeded with retry_after_ms near 20000", r)
	}
}

func TestBandwidthExactBytes(t *testing.T) {
	t.Parallel()
	n := newNode(t, Config{OnMessage: func(c *Conn, _ int, _ []byte) { _ = c.Send([]byte(`{"ok":true}`)) }},
		limiter.Limits{BytesPerMinute: 100, MaxMessageSize: 100})
	c := dial(t, n)
	send(t, c, strings.Repeat("é", 30)) // 60 bytes, 30 characters
	if r := recv(t, c); r.Error != "" {
		t.Fatalf("first message denied: %+v", r)
	}
	send(t, c, strings.Repeat("é", 30))
	if r := recv(t, c); r.Error != ErrorCode(limiter.ReasonBandwidthExceeded) || r.RetryAfterMs == nil {
		t.Errorf("got %+v, want bandwidth_exceeded", r)
	}
}

func TestDenialsClose1008(t *testing.T) {
	t.Parallel()
	n := newNode(t, Config{OnMessage: echo, MaxDenials: 2}, limiter.Limits{MessagesPerMinute: 1})
	c := dial(t, n)
	send(t, c, `{}`)
	recv(t, c)
	for i := 0; i < 3; i++ {
		send(t, c, `{}`)
		if r := recv(t, c); r.Error != ErrorCode(limiter.ReasonRateLimitExceeded) {
			t.Fatalf("denial %d: got %+v", i, r)
		}
	}
	ce := closeCode(t, c)
	if ce.Code != websocket.ClosePolicyViolation || ce.Text != CloseReasonTooManyDenials {
		t.Errorf("close %d %q, want 1008 %s", ce.Code, ce.Text, CloseReasonTooManyDenials)
	}
}

func TestMessageGateClosesBanned(t *testing.T) {
	t.Parallel()
	g := &gate{}
	n := newNode(t, Config{OnMessage: echo, Limiter: newLimiter(t, limiter.Config{Gate: g})}, limiter.Limits{})
	c := dial(t, n)
	send(t, c, `{}`)
	recv(t, c)
	g.ban("127.0.0.1")
	send(t, c, `{}`)
	if r := recv(t, c); r.Error != ErrorCode(limiter.ReasonBanned) {
		t.Errorf("got %+v, want a banned error frame", r)
	}
	if ce := closeCode(t, c); ce.Code != websocket.ClosePolicyViolation || ce.Text != "banned" {
		t.Errorf("close %d %q, want 1008 banned", ce.Code, ce.Text)
	}
}

func TestCallbacks(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var closed []error
	cfg := Config{
		OnConnect: func(c *Conn) error {
			if c.Client() != "127.0.0.1" || !strings.HasPrefix(c.ID(), "n1-") || c.Metadata()["ua"] != "test" {
				return errors.New("unexpected connection " + c.ID())
			}
			return c.Send([]byte(`{"hello":true}`))
		},
		OnMessage: echo,
		OnClose: func(c *Conn, err error) {
			mu.Lock()
			closed = append(closed, err)
			mu.Unlock()
		},
		Metadata: func(*http.Request) map[string]string { return map[string]string{"ua": "test"} },
		NodeID:   "n1",
	}
	n := newNode(t, cfg, limiter.Limits{})
	c := dial(t, n)
	if r := recv(t, c); string(r.Data) != "" || r.Type != "" {
		t.Fatalf("hello: %+v", r)
	}
	_ = c.SetWriteDeadline(time.Now().Add(ioTimeout))
	if err := c.WriteMessage(websocket.BinaryMessage, []byte{0, 1, 2}); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(ioTimeout))
	mt, b, err := c.ReadMessage()
	if err != nil || mt != websocket.BinaryMessage || string(b) != "\x00\x01\x02" {
		t.Fatalf("echo: %d %q %v", mt, b, err)
	}
	_ = c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4000, "bye"), time.Now().Add(ioTimeout))
	waitFor(t, ioTimeout, "OnClose", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(closed) == 1
	})
	var ce *websocket.CloseError
	if !errors.As(closed[0], &ce) || ce.Code != 4000 {
		t.Errorf("OnClose got %v, want close 4000", closed[0])
	}
}

func TestOnConnectError(t *testing.T) {
	t.Parallel()
	n := newNode(t, Config{OnMessage: echo, OnConnect: func(*Conn) error { return errors.New("no room for you") }}, limiter.Limits{})
	c := dial(t, n)
	if ce := closeCode(t, c); ce.Code != websocket.ClosePolicyViolation || ce.Text != "no room for you" {
		t.Errorf("close %d %q", ce.Code, ce.Text)
	}
}

func TestCloseClient(t *testing.T) {
	t.Parallel()
	n := newNode(t, Config{OnMessage: echo}, limiter.Limits{})
	a, b := dial(t, n), dial(t, n)
	waitFor(t, ioTimeout, "two connections", func() bool { return n.h.Stats().Connections == 2 })
	if got := n.h.CloseClient("10.9.9.9", websocket.ClosePolicyViolation, "banned"); got != 0 {
		t.Errorf("CloseClient of a stranger closed %d", got)
	}
	if got := n.h.CloseClient("127.0.0.1", websocket.ClosePolicyViolation, "banned"); got != 2 {
		t.Errorf("CloseClient closed %d, want 2", got)
	}
	for _, c := range []*websocket.Conn{a, b} {
		if ce := closeCode(t, c); ce.Code != websocket.ClosePolicyViolation || ce.Text != "banned" {
			t.Errorf("close %d %q", ce.Code, ce.Text)
		}
	}
	waitFor(t, ioTimeout, "no connections", func() bool { return n.h.Stats().Connections == 0 })
}

func TestShutdown(t *testing.T) {
	t.Parallel()
	n := newNode(t, Config{OnMessage: echo}, limiter.Limits{})
	var cs []*websocket.Conn
	for i := 0; i < 3; i++ {
		cs = append(cs, dial(t, n))
	}
	waitFor(t, ioTimeout, "three connections", func() bool { return n.h.Stats().Connections == 3 })
	// The clients answer the close frame while Shutdown waits.
	errs := make(chan *websocket.CloseError, len(cs))
	for _, c := range cs {
		go func() {
			_ = c.SetReadDeadline(time.Now().Add(ioTimeout))
			for {
				if _, _, err := c.ReadMessage(); err != nil {
					ce, _ := err.(*websocket.CloseError)
					errs <- ce
					return
				}
			}
		}()
	}
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	if err := n.h.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	for range cs {
		if ce := <-errs; ce == nil || ce.Code != websocket.CloseGoingAway {
			t.Errorf("close %v, want 1001", ce)
		}
	}
	if st := n.h.Limiter().Statistics(); st.ActiveConnections != 0 {
		t.Errorf("limiter still has %d connections", st.ActiveConnections)
	}
	resp, err := dialErr(t, n)
	if resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("dial after Shutdown: %v %v, want 503", resp, err)
	}
	if resp != nil {
		resp.Body.Close()
	}
	if err := n.h.Shutdown(ctx); err != nil {
		t.Errorf("second Shutdown: %v", err)
	}
}

func TestShutdownDeadlineDropsSilentClients(t *testing.T) {
	t.Parallel()
	n := newNode(t, Config{OnMessage: echo, CloseTimeout: time.Minute}, limiter.Limits{})
	dial(t, n) // never reads, so never answers the close frame
	waitFor(t, ioTimeout, "a connection", func() bool { return n.h.Stats().Connections == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := n.h.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown: %v, want DeadlineExceeded", err)
	}
	if got := n.h.Stats().Connections; got != 0 {
		t.Errorf("%d connections left", got)
	}
}

// TestWiredOnce sets the Gate and the Sink on the Limiter alone: the
// handler's per-message ban check and its room violations use them, and a
// panic in the Sink from a room violation is counted by the Limiter.
func TestWiredOnce(t *testing.T) {
	t.Parallel()
	s := &sink{}
	g := &gate{}
	panics := false
	var mu sync.Mutex
	lc := limiter.Config{Gate: g, Sink: limiter.ViolationFunc(func(v limiter.Violation) {
		s.HandleViolation(v)
		mu.Lock()
		p := panics
		mu.Unlock()
		if p {
			panic("sink")
		}
	})}
	n, _ := roomNodeWith(t, Config{Rooms: map[string]RoomLimits{"vip": {MaxMembers: 1}}}, lc)
	a, b := dialAs(t, n, "alice"), dialAs(t, n, "bob")
	join(t, a, "vip")
	send(t, b, map[string]string{"type": "join", "room": "vip"})
	if r := recv(t, b); r.Error != ErrorCode(limiter.ReasonRoomFull) {
		t.Fatalf("got %+v, want room_full", r)
	}
	if got := s.types(); len(got) != 1 || got[0] != limiter.ViolationRoomFull {
		t.Fatalf("sink got %v, want [room_full]", got)
	}
	mu.Lock()
	panics = true
	mu.Unlock()
	send(t, b, map[string]string{"type": "join", "room": "vip"})
	if r := recv(t, b); r.Error != ErrorCode(limiter.ReasonRoomFull) {
		t.Fatalf("got %+v, want room_full", r)
	}
	st := n.h.Limiter().Statistics()
	if st.ViolationPanics != 1 || st.Denied[limiter.ReasonRoomFull] != 2 {
		t.Errorf("panics %d, room_full denials %d; want 1 and 2", st.ViolationPanics, st.Denied[limiter.ReasonRoomFull])
	}
	mu.Lock()
	panics = false
	mu.Unlock()
	g.ban("alice")
	send(t, a, msg("vip", 1))
	if r := recv(t, a); r.Error != ErrorCode(limiter.ReasonBanned) {
		t.Errorf("got %+v, want banned", r)
	}
	if ce := closeCode(t, a); ce.Code != websocket.ClosePolicyViolation || ce.Text != "banned" {
		t.Errorf("close %d %q, want 1008 banned", ce.Code, ce.Text)
	}
}
