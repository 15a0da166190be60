package wshandler

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

// ServeHTTP returns once the connection is upgraded, so that net/http's
// goroutine and request state are not held for the connection's life, and
// the connection goes on being served; Shutdown still waits for it. The
// default upgrader pools write buffers, so an idle connection holds none.
// Together they took an idle connection on the node from 26.3 to
// 17.4 KiB (docs/BENCHMARKS.md).
func TestServeHTTPReturnsAndConnectionLives(t *testing.T) {
	t.Parallel()
	lim, err := limiter.New(limiter.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer lim.Close()
	h, err := New(Config{Limiter: lim, OnMessage: echo})
	if err != nil {
		t.Fatal(err)
	}
	if h.up.WriteBufferPool == nil {
		t.Error("the default upgrader has no write buffer pool")
	}
	returned := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r)
		returned <- struct{}{}
	}))
	defer srv.Close()
	c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case <-returned:
	case <-time.After(ioTimeout):
		t.Fatal("ServeHTTP still running with the connection open")
	}
	send(t, c, "still here")
	_ = c.SetReadDeadline(time.Now().Add(ioTimeout))
	if _, b, err := c.ReadMessage(); err != nil || string(b) != "still here" {
		t.Fatalf("echo after ServeHTTP returned: %q, %v", b, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- h.Shutdown(ctx) }()
	if ce := closeCode(t, c); ce.Code != websocket.CloseGoingAway {
		t.Fatalf("close %d after Shutdown, want 1001", ce.Code)
	}
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
}
