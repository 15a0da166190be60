package wshandler

import (
	"errors"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestSendQueueReleasedWhenIdle checks that a connection that has sent a
// burst keeps no large queue once the burst is written: an idle connection
// holds at most maxSpare frame headers, not SendQueueSize of them.
func TestSendQueueReleasedWhenIdle(t *testing.T) {
	t.Parallel()
	conns := make(chan *Conn, 1)
	const burst = 200
	n := newNode(t, Config{
		OnConnect: func(c *Conn) error { conns <- c; return nil },
		OnMessage: func(c *Conn, _ int, _ []byte) {
			for i := 0; i < burst; i++ {
				if err := c.Send([]byte("x")); err != nil {
					t.Errorf("Send %d: %v", i, err)
					return
				}
			}
		},
	}, benchLimits)
	ws := dial(t, n)
	c := <-conns
	if c.queued() != 0 {
		t.Fatalf("a new connection has %d frames queued", c.queued())
	}
	send(t, ws, "go")
	for i := 0; i < burst; i++ {
		_ = ws.SetReadDeadline(time.Now().Add(ioTimeout))
		if _, _, err := ws.ReadMessage(); err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
	}
	// Every frame has been read, so the writer is done with the batch once
	// it releases wmu.
	c.wmu.Lock()
	spare := cap(c.spare)
	c.wmu.Unlock()
	c.qmu.Lock()
	queue := cap(c.queue)
	c.qmu.Unlock()
	if queue > maxSpare || spare > maxSpare {
		t.Fatalf("idle connection keeps queue capacity %d and spare %d, want at most %d each", queue, spare, maxSpare)
	}
}

// TestSendQueueBound checks that the queue holds exactly SendQueueSize
// frames: the next Send fails with ErrQueueFull and drops the connection.
func TestSendQueueBound(t *testing.T) {
	t.Parallel()
	errs := make(chan error, 1)
	n := newNode(t, Config{
		SendQueueSize: 4,
		OnMessage: func(c *Conn, _ int, _ []byte) {
			// While OnMessage runs nothing flushes the queue.
			for i := 0; i < 4; i++ {
				if err := c.Send([]byte("x")); err != nil {
					errs <- err
					return
				}
			}
			errs <- c.Send([]byte("one too many"))
		},
	}, benchLimits)
	ws := dial(t, n)
	send(t, ws, "go")
	if err := <-errs; !errors.Is(err, ErrQueueFull) {
		t.Fatalf("fifth Send: %v, want ErrQueueFull", err)
	}
	_ = ws.SetReadDeadline(time.Now().Add(ioTimeout))
	for {
		if _, _, err := ws.ReadMessage(); err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) && ce.Code != websocket.CloseAbnormalClosure {
				t.Fatalf("overflowed connection sent close %d, want none (1006)", ce.Code)
			}
			break
		}
	}
	waitFor(t, ioTimeout, "the overflow to be counted", func() bool { return n.h.Stats().Overflows == 1 })
}
