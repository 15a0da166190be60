package wshandler

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ratethrottle/ratethrottle/internal/wait"

	"github.com/gorilla/websocket"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitFor polls a condition with a deadline (internal/wait).
var waitFor = wait.For

// ioTimeout bounds every read and write a test client makes.
const ioTimeout = 5 * time.Second

// node is a Handler served by an httptest.Server.
type node struct {
	h   *Handler
	srv *httptest.Server
	url string
}

// newNode starts a Handler for cfg; with a nil cfg.Limiter it gets one with
// lim. Cleanup shuts everything down.
func newNode(t testing.TB, cfg Config, lim limiter.Limits) *node {
	t.Helper()
	if cfg.Limiter == nil {
		cfg.Limiter = newLimiter(t, limiter.Config{Limits: lim})
	}
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	n := &node{h: h, srv: srv, url: "ws" + strings.TrimPrefix(srv.URL, "http")}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := h.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		srv.Close()
	})
	return n
}

// newLimiter returns a Limiter for lc, closed at cleanup.
func newLimiter(t testing.TB, lc limiter.Config) *limiter.Limiter {
	t.Helper()
	l, err := limiter.New(lc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// dial connects a client to n; the connection is closed at cleanup.
func dial(t testing.TB, n *node) *websocket.Conn {
	t.Helper()
	c, resp, err := websocket.DefaultDialer.Dial(n.url, nil)
	if err != nil {
		t.Fatalf("dial: %v (response %v)", err, resp)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// dialErr dials and returns the HTTP response of a refused handshake.
func dialErr(t testing.TB, n *node) (*http.Response, error) {
	t.Helper()
	c, resp, err := websocket.DefaultDialer.Dial(n.url, nil)
	if err == nil {
		t.Cleanup(func() { _ = c.Close() })
	}
	return resp, err
}

// reply is any server frame, decoded.
type reply struct {
	Type         FrameType       `json:"type"`
	Room         string          `json:"room"`
	From         string          `json:"from"`
	Name         *string         `json:"name"`
	Connection   string          `json:"connection"`
	ID           string          `json:"id"`
	Data         json.RawMessage `json:"data"`
	Error        ErrorCode       `json:"error"`
	RetryAfterMs *int64          `json:"retry_after_ms"`
	Limit        int64           `json:"limit"`
	MaxSize      int64           `json:"max_size"`
}

// send writes v as a JSON text frame.
func send(t testing.TB, c *websocket.Conn, v any) {
	t.Helper()
	var b []byte
	switch v := v.(type) {
	case string:
		b = []byte(v)
	default:
		var err error
		if b, err = json.Marshal(v); err != nil {
			t.Fatal(err)
		}
	}
	_ = c.SetWriteDeadline(time.Now().Add(ioTimeout))
	if err := c.WriteMessage(websocket.TextMessage, b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// recv reads one frame and decodes it.
func recv(t testing.TB, c *websocket.Conn) reply {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(ioTimeout))
	_, b, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	var r reply
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("frame %q is not JSON: %v", b, err)
	}
	return r
}

// closeCode reads until the connection ends and returns its close error.
func closeCode(t testing.TB, c *websocket.Conn) *websocket.CloseError {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(ioTimeout))
	for i := 0; i < 10000; i++ {
		if _, _, err := c.ReadMessage(); err != nil {
			ce, ok := err.(*websocket.CloseError)
			if !ok {
				t.Fatalf("connection ended with %v, not a close frame", err)
			}
			return ce
		}
	}
	t.Fatal("no close after 10000 frames")
	return nil
}

func join(t testing.TB, c *websocket.Conn, room string) {
	t.Helper()
	send(t, c, map[string]string{"type": "join", "room": room})
	if r := recv(t, c); r.Type != TypeJoined || r.Room != room {
		t.Fatalf("join %q: got %+v", room, r)
	}
}

func msg(room string, data any) map[string]any {
	return map[string]any{"type": "message", "room": room, "data": data}
}

// gate is a limiter.Gate with a settable ban list.
type gate struct {
	mu     sync.Mutex
	banned map[string]bool
}

func (g *gate) ban(client string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.banned == nil {
		g.banned = make(map[string]bool)
	}
	g.banned[client] = true
}

func (g *gate) BannedUntil(client string, now time.Time) (time.Time, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return now.Add(90 * time.Second), g.banned[client]
}

// sink records violations.
type sink struct {
	mu sync.Mutex
	vs []limiter.Violation
}

func (s *sink) HandleViolation(v limiter.Violation) {
	s.mu.Lock()
	s.vs = append(s.vs, v)
	s.mu.Unlock()
}

func (s *sink) types() []limiter.ViolationType {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ts []limiter.ViolationType
	for _, v := range s.vs {
		ts = append(ts, v.Type)
	}
	return ts
}
