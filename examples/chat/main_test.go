package main

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/ratethrottle/ratethrottle/pkg/embedded"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Two chat servers on one NATS: a member on each gets the other's message,
// and a flood is refused with an error frame carrying the wait.
func TestTwoServersChat(t *testing.T) {
	srv, err := embedded.Start(embedded.Config{})
	require.NoError(t, err)
	defer srv.Shutdown()

	ctx, cancel := context.WithCancel(context.Background())
	var addrs []string
	done := make(chan error, 2)
	for i := 0; i < 2; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		addrs = append(addrs, ln.Addr().String())
		go func() { done <- run(ctx, ln, srv.ClientURL()) }()
	}
	defer func() {
		cancel()
		for i := 0; i < 2; i++ {
			require.NoError(t, <-done)
		}
	}()

	// The listeners exist already, so a dial waits for the server to start
	// serving rather than failing.
	dialer := websocket.Dialer{HandshakeTimeout: 20 * time.Second}
	dial := func(addr string) *websocket.Conn {
		t.Helper()
		c, _, err := dialer.Dial("ws://"+addr+"/ws", nil)
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		require.NoError(t, c.SetReadDeadline(time.Now().Add(10*time.Second)))
		return c
	}
	read := func(c *websocket.Conn) map[string]any {
		t.Helper()
		var f map[string]any
		require.NoError(t, c.ReadJSON(&f))
		return f
	}
	a, b := dial(addrs[0]), dial(addrs[1])
	for _, c := range []*websocket.Conn{a, b} {
		require.NoError(t, c.WriteJSON(map[string]any{"type": "join", "room": "lobby"}))
		require.Equal(t, "joined", read(c)["type"])
	}
	require.NoError(t, a.WriteJSON(map[string]any{"type": "message", "room": "lobby", "data": map[string]string{"name": "ada", "text": "hi"}}))
	for _, c := range []*websocket.Conn{a, b} {
		f := read(c)
		require.Equal(t, "message", f["type"])
		require.Equal(t, "hi", f["data"].(map[string]any)["text"])
	}

	// 20 messages a minute per member: the flood gets an error frame.
	var denied map[string]any
	for i := 0; i < 40 && denied == nil; i++ {
		require.NoError(t, b.WriteJSON(map[string]any{"type": "message", "room": "lobby", "data": map[string]string{"name": "bo", "text": "x"}}))
		if f := read(b); f["type"] == "error" {
			denied = f
		}
	}
	require.NotNil(t, denied, "no denial in 40 messages")
	require.True(t, strings.HasSuffix(denied["error"].(string), "_exceeded"), "%v", denied)
	require.Greater(t, denied["retry_after_ms"].(float64), 0.0)
}
