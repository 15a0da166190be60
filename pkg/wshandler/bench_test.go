package wshandler

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
	"github.com/ratethrottle/ratethrottle/pkg/policy"
)

// benchLimits are limits that every benchmark message passes, so that each
// check runs in full without denying.
var benchLimits = limiter.Limits{
	MessagesPerMinute: 1 << 40,
	BytesPerMinute:    1 << 50,
	MaxMessageSize:    64 << 10,
}

// echoPayload is the message the echo benchmarks send.
var echoPayload = []byte(`{"type":"chat","room":"lobby","text":"hello, world","seq":123456}`)

// runEchoClient sends b.N messages through one connection to url, with up
// to 32 in flight, and reads every echo. It is the client of both echo
// benchmarks.
func runEchoClient(b *testing.B, url string) {
	c, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	const window = 32
	slots := make(chan struct{}, window)
	done := make(chan error, 1)
	b.SetBytes(int64(len(echoPayload)))
	b.ReportAllocs()
	b.ResetTimer()
	go func() {
		for i := 0; i < b.N; i++ {
			_ = c.SetReadDeadline(time.Now().Add(ioTimeout))
			_, p, err := c.ReadMessage()
			if err == nil && len(p) != len(echoPayload) {
				err = websocket.ErrReadLimit
			}
			if err != nil {
				done <- err
				return
			}
			<-slots
		}
		done <- nil
	}()
	for i := 0; i < b.N; i++ {
		select {
		case slots <- struct{}{}:
		case err := <-done:
			b.Fatalf("reader stopped after an error: %v", err)
		}
		_ = c.SetWriteDeadline(time.Now().Add(ioTimeout))
		if err := c.WriteMessage(websocket.TextMessage, echoPayload); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
}

// BenchmarkEchoBare is the baseline: the echo server a user would write
// with gorilla/websocket alone.
func BenchmarkEchoBare(b *testing.B) {
	var up websocket.Upgrader
	var wg sync.WaitGroup
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wg.Add(1)
		defer wg.Done()
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		c.SetReadLimit(benchLimits.MaxMessageSize)
		for {
			mt, p, err := c.ReadMessage()
			if err != nil {
				return
			}
			if err := c.WriteMessage(mt, p); err != nil {
				return
			}
		}
	}))
	defer srv.Close()
	runEchoClient(b, "ws"+strings.TrimPrefix(srv.URL, "http"))
	srv.CloseClientConnections()
	wg.Wait()
}

// BenchmarkEchoHandler is the same echo through a Handler with admission,
// the read limit, and message and bandwidth checks on every message.
func BenchmarkEchoHandler(b *testing.B) {
	n := newNode(b, Config{OnMessage: echo, CloseTimeout: 100 * time.Millisecond}, benchLimits)
	runEchoClient(b, n.url)
}

// BenchmarkRoomFanout sends room messages from one member to a room of 100
// or 1,000 members on one node, with up to 4 messages in flight; an op is
// one message delivered to every member.
func BenchmarkRoomFanout(b *testing.B) {
	for _, members := range []int{100, 1000} {
		b.Run("members="+strconv.Itoa(members), func(b *testing.B) {
			benchFanout(b, members)
		})
	}
}

func benchFanout(b *testing.B, members int) {
	n := newNode(b, Config{CloseTimeout: 100 * time.Millisecond, MaxDenials: -1}, benchLimits)
	conns := make([]*websocket.Conn, members)
	for i := range conns {
		conns[i] = dial(b, n)
		join(b, conns[i], "bench")
	}
	var delivered atomic.Int64
	tick := make(chan struct{}, 1)
	var wg sync.WaitGroup
	errs := make(chan error, members)
	b.ReportAllocs()
	b.ResetTimer()
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < b.N; i++ {
				_ = c.SetReadDeadline(time.Now().Add(ioTimeout))
				if _, _, err := c.ReadMessage(); err != nil {
					errs <- err
					return
				}
				if delivered.Add(1)%int64(members) == 0 {
					select {
					case tick <- struct{}{}:
					default:
					}
				}
			}
		}()
	}
	frame := []byte(`{"type":"message","room":"bench","data":{"text":"hello, everyone"}}`)
	const window = 4
	sender := conns[0]
	start := time.Now()
	for i := 0; i < b.N; i++ {
		need := int64(i-window) * int64(members)
		for delivered.Load() < need {
			select {
			case <-tick:
			case err := <-errs:
				b.Fatal(err)
			case <-time.After(ioTimeout):
				b.Fatal("fan-out stalled")
			}
		}
		_ = sender.SetWriteDeadline(time.Now().Add(ioTimeout))
		if err := sender.WriteMessage(websocket.TextMessage, frame); err != nil {
			b.Fatal(err)
		}
	}
	wg.Wait()
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)*float64(members)/time.Since(start).Seconds(), "deliveries/s")
	if st := n.h.Stats(); st.Overflows != 0 || st.Denials != 0 {
		b.Fatalf("stats %+v", st)
	}
}

// BenchmarkRoomEcho is the message path of a node: 50 connections, each
// the only member of its own room, each with up to 4 room messages in
// flight; an op is one message sent and delivered back to its sender.
// With broker=nats the rooms are those of a cluster node (an embedded NATS
// server, a NATSBroker), as on cmd/node.
func BenchmarkRoomEcho(b *testing.B) {
	b.Run("broker=none", func(b *testing.B) {
		benchRoomEcho(b, newNode(b, Config{CloseTimeout: 100 * time.Millisecond, MaxDenials: -1}, benchLimits))
	})
	b.Run("broker=none/classes", func(b *testing.B) {
		// Every message also takes its class's connection, address and
		// room buckets (generous ones: nothing is refused).
		lots := policy.Rate{Rate: 1 << 40}
		doc := &policy.Document{Classes: map[string]policy.Class{
			"message": {Connection: lots, Address: &lots, Room: &lots},
		}}
		benchRoomEcho(b, newNode(b, Config{CloseTimeout: 100 * time.Millisecond, MaxDenials: -1,
			Policy: newStaticPolicy(b, doc)}, benchLimits))
	})
	b.Run("broker=nats", func(b *testing.B) {
		s := startNATS(b)
		nc, err := nats.Connect(s.ClientURL())
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(nc.Close)
		br, err := NewNATSBroker(NATSBrokerConfig{Conn: nc, NodeID: "bench", Prefix: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		benchRoomEcho(b, newNode(b, Config{CloseTimeout: 100 * time.Millisecond, MaxDenials: -1, Broker: br, NodeID: "bench"}, benchLimits))
	})
}

func benchRoomEcho(b *testing.B, n *node) {
	const conns, window = 50, 4
	cs := make([]*websocket.Conn, conns)
	frames := make([][]byte, conns)
	for i := range cs {
		cs[i] = dial(b, n)
		room := "echo-" + strconv.Itoa(i)
		join(b, cs[i], room)
		frames[i] = []byte(`{"type":"message","room":"` + room + `","data":{"text":"hello, world","seq":123456}}`)
	}
	var left atomic.Int64
	left.Store(int64(b.N))
	var wg sync.WaitGroup
	errs := make(chan error, 2*conns)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i, c := range cs {
		// Each connection sends its share; its reader returns a slot per echo.
		share := b.N / conns
		if i < b.N%conns {
			share++
		}
		slots := make(chan struct{}, window)
		wg.Add(2)
		go func() {
			defer wg.Done()
			for k := 0; k < share; k++ {
				_ = c.SetReadDeadline(time.Now().Add(ioTimeout))
				if _, _, err := c.ReadMessage(); err != nil {
					errs <- err
					return
				}
				<-slots
			}
		}()
		go func() {
			defer wg.Done()
			for k := 0; k < share; k++ {
				slots <- struct{}{}
				_ = c.SetWriteDeadline(time.Now().Add(ioTimeout))
				if err := c.WriteMessage(websocket.TextMessage, frames[i]); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}
