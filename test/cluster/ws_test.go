package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// frame is a server frame of the room protocol (docs/PROTOCOL.md).
type frame struct {
	Type         string          `json:"type"`
	Room         string          `json:"room"`
	From         string          `json:"from"`
	Error        string          `json:"error"`
	ID           string          `json:"id"`
	RetryAfterMs int64           `json:"retry_after_ms"`
	Data         json.RawMessage `json:"data"`
}

// wsClient is a client of the room protocol whose reader goroutine hands
// every frame to onFrame and records how the connection ended.
type wsClient struct {
	ws   *websocket.Conn
	wmu  sync.Mutex
	done chan struct{}

	mu     sync.Mutex
	err    error // why the reader stopped
	frames []frame
	keep   bool // keep frames for next()
	notify chan struct{}
}

// dialClient opens ws://addr/ws as client (sent as X-Forwarded-For, which
// the suite's nodes believe from loopback). onFrame, if set, runs on the
// reader goroutine for every frame; otherwise frames are kept for next.
// Cleanup closes the connection and waits for the reader.
func dialClient(t *testing.T, addr, client string, onFrame func(frame)) (*wsClient, error) {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	h := http.Header{}
	h.Set("X-Forwarded-For", client)
	ws, resp, err := d.Dial("ws://"+addr+"/ws", h)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("dial %s: HTTP %d", addr, resp.StatusCode)
		}
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	c := &wsClient{ws: ws, done: make(chan struct{}), keep: onFrame == nil, notify: make(chan struct{}, 1)}
	go c.read(onFrame)
	t.Cleanup(c.close)
	return c, nil
}

func (c *wsClient) read(onFrame func(frame)) {
	defer close(c.done)
	for {
		_, b, err := c.ws.ReadMessage()
		if err != nil {
			c.mu.Lock()
			c.err = err
			c.mu.Unlock()
			c.wake()
			return
		}
		var f frame
		if err := json.Unmarshal(b, &f); err != nil {
			f = frame{Type: "unparsable", Error: string(b)}
		}
		if onFrame != nil {
			onFrame(f)
			continue
		}
		c.mu.Lock()
		if len(c.frames) < 10000 {
			c.frames = append(c.frames, f)
		}
		c.mu.Unlock()
		c.wake()
	}
}

func (c *wsClient) wake() {
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

// send writes v as a JSON text frame.
func (c *wsClient) send(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return c.write(websocket.TextMessage, b)
}

// write writes one frame of type typ.
func (c *wsClient) write(typ int, b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
	return c.ws.WriteMessage(typ, b)
}

// next returns the next kept frame that match accepts, discarding the
// others, or an error when the connection ends or timeout passes.
func (c *wsClient) next(timeout time.Duration, match func(frame) bool) (frame, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		for len(c.frames) > 0 {
			f := c.frames[0]
			c.frames = c.frames[1:]
			if match(f) {
				c.mu.Unlock()
				return f, nil
			}
		}
		err := c.err
		c.mu.Unlock()
		if err != nil {
			return frame{}, err
		}
		select {
		case <-c.notify:
		case <-deadline.C:
			return frame{}, fmt.Errorf("no matching frame within %v", timeout)
		}
	}
}

// join joins room and waits for the reply: nil for joined, else an error
// naming the error frame or the end of the connection.
func (c *wsClient) join(room string) error {
	if err := c.send(map[string]any{"type": "join", "room": room}); err != nil {
		return err
	}
	f, err := c.next(10*time.Second, func(f frame) bool { return f.Type == "joined" || f.Type == "error" })
	switch {
	case err != nil:
		return err
	case f.Type == "error":
		return fmt.Errorf("join %q: %s", room, f.Error)
	}
	return nil
}

// closeErr waits up to timeout for the connection to end and returns the
// close error (a *websocket.CloseError for a close frame).
func (c *wsClient) closeErr(timeout time.Duration) error {
	select {
	case <-c.done:
	case <-time.After(timeout):
		return errors.New("connection still open")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// close closes the connection and waits for the reader. It is idempotent.
func (c *wsClient) close() {
	c.wmu.Lock()
	_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	c.wmu.Unlock()
	_ = c.ws.Close()
	<-c.done
}
