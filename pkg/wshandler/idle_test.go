package wshandler

import (
	"context"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
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

// An idle connection has one goroutine, its reader: the writer runs only
// while frames are queued and ends once they are written.
func TestIdleConnectionHasOneGoroutine(t *testing.T) {
	var conns []*Conn
	var mu sync.Mutex
	n := newNode(t, Config{OnMessage: echo, OnConnect: func(c *Conn) error {
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
		return nil
	}}, limiter.Limits{})
	const count = 50
	base := runtime.NumGoroutine()
	clients := make([]*websocket.Conn, count)
	for i := range clients {
		clients[i] = dial(t, n)
	}
	waitFor(t, ioTimeout, "every connection to be served", func() bool { return n.h.Stats().Connections == count })
	settled := func(what string) {
		waitFor(t, ioTimeout, what, func() bool { return runtime.NumGoroutine()-base <= count+5 })
	}
	settled("one goroutine per idle connection")
	mu.Lock()
	for _, c := range conns {
		if err := c.Send([]byte("hello")); err != nil {
			t.Fatal(err)
		}
	}
	mu.Unlock()
	for _, c := range clients {
		_ = c.SetReadDeadline(time.Now().Add(ioTimeout))
		if _, b, err := c.ReadMessage(); err != nil || string(b) != "hello" {
			t.Fatalf("got %q, %v", b, err)
		}
	}
	settled("the writers to end once the frames are written")
}
