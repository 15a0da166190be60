package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// Config is one load run. Zero fields get the defaults named on them.
type Config struct {
	// Targets are the nodes; connections are spread over them in turn.
	Targets []Target
	// Conns is the number of connections to open.
	Conns int
	// Sources is the number of 127.x source addresses to dial loopback
	// IPv4 targets from. Zero means one (the system's choice).
	Sources int
	// DialConcurrency bounds the handshakes in flight. Zero means 64.
	DialConcurrency int
	// DialTimeout bounds one handshake. Zero means 10 seconds.
	DialTimeout time.Duration
	// ConnectTimeout bounds the whole connect phase (dials and joins).
	// Zero means one minute.
	ConnectTimeout time.Duration
	// Rooms is the number of rooms; connection i joins room i mod Rooms.
	// Zero means no rooms: connections are opened and held idle.
	Rooms int
	// SendersPerRoom is how many members of each room send. Zero means 1.
	SendersPerRoom int
	// Rate is the messages per second all senders send together.
	Rate float64
	// Size is the size of a message frame in bytes; frames are padded up
	// to it. Zero means the smallest frame.
	Size int
	// Duration is how long messages are sent (or connections held).
	Duration time.Duration
	// Settle is the pause between the connect phase and the memory
	// reading that follows it. Zero means 2 seconds.
	Settle time.Duration
	// Drain is how long deliveries are awaited after the last send. Zero
	// means 2 seconds.
	Drain time.Duration
	// SampleEvery, if positive, reads every node's metrics at this
	// interval while the run lasts.
	SampleEvery time.Duration
	// Window, if positive, replaces the fixed Rate by a closed loop: each
	// sender keeps Window messages in flight, sending one more for every
	// message it reads from its room (with one sender a room, its own
	// messages coming back), so the run measures what the server sustains.
	Window int
	// NoJoin skips the join frames: each connection counts as the only
	// member of its room at once. For servers that do not speak the room
	// protocol, such as a bare echo server.
	NoJoin bool
	// Log receives progress lines; nil discards them.
	Log io.Writer
}

func (c Config) withDefaults() (Config, error) {
	if len(c.Targets) == 0 {
		return c, errors.New("no target")
	}
	if c.Conns <= 0 {
		return c, errors.New("conns must be positive")
	}
	if c.Rooms < 0 || c.SendersPerRoom < 0 || c.Rate < 0 || c.Size < 0 || c.Duration < 0 || c.Window < 0 {
		return c, errors.New("rooms, senders, rate, size, duration and window must not be negative")
	}
	if c.NoJoin && c.Rooms > 0 && c.Rooms != c.Conns {
		return c, errors.New("without joins every connection must be its own room (rooms = conns)")
	}
	if c.Rooms > c.Conns {
		return c, fmt.Errorf("rooms (%d) exceed conns (%d)", c.Rooms, c.Conns)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.DialTimeout, 10*time.Second)
	def(&c.ConnectTimeout, time.Minute)
	def(&c.Settle, 2*time.Second)
	def(&c.Drain, 2*time.Second)
	if c.DialConcurrency <= 0 {
		c.DialConcurrency = 64
	}
	if c.SendersPerRoom == 0 {
		c.SendersPerRoom = 1
	}
	if c.Rooms > 0 && c.SendersPerRoom > (c.Conns+c.Rooms-1)/c.Rooms {
		c.SendersPerRoom = (c.Conns + c.Rooms - 1) / c.Rooms
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
	return c, nil
}

// TargetResult is what one node reported and served.
type TargetResult struct {
	// URL is the node's WebSocket URL.
	URL string
	// Established counts the connections whose handshake with the node
	// succeeded; ones that later ended are still counted.
	Established int64
	// Before, Connected and After are the node's metrics before the first
	// dial, once every connection is open and Settle has passed, and after
	// the drain; their At is zero when the node could not be read.
	Before, Connected, After Sample
	// ScrapeErr is the last error reading the node's metrics, in any of
	// those readings or the periodic ones; nil when every read succeeded
	// or there was no metrics URL.
	ScrapeErr error
}

// MemPerConn returns the node's heap plus stack and its resident memory
// gained per connection between Before and Connected, in bytes, and
// whether both readings exist.
func (t TargetResult) MemPerConn() (heapStack, rss float64, ok bool) {
	if t.Before.At.IsZero() || t.Connected.At.IsZero() || t.Established == 0 {
		return 0, 0, false
	}
	hs := func(s Sample) float64 {
		return s.Get("go_memstats_heap_inuse_bytes") + s.Get("go_memstats_stack_inuse_bytes")
	}
	n := float64(t.Established)
	return (hs(t.Connected) - hs(t.Before)) / n,
		(t.Connected.Get("process_resident_memory_bytes") - t.Before.Get("process_resident_memory_bytes")) / n, true
}

// Row is one periodic reading of every node's metrics.
type Row struct {
	// Elapsed is the time since the connect phase started, rounded to the
	// second.
	Elapsed time.Duration
	// Samples holds one Sample per target, in the order of
	// Config.Targets; a zero At when unreadable.
	Samples []Sample
}

// Result is the outcome of a run.
type Result struct {
	// Config is the run's configuration with the defaults applied.
	Config Config
	// Attempted is the number of connections the run set out to open,
	// Config.Conns.
	Attempted int64
	// Established counts the connections whose handshake succeeded.
	Established int64
	// Joined counts the connections whose room join was confirmed by a
	// "joined" frame.
	Joined int64
	// ConnectTime is how long the connect phase took: the dials and the
	// joins, bounded by Config.ConnectTimeout.
	ConnectTime time.Duration
	// DialErrors counts failed dials by cause ("http 429", "refused", …).
	DialErrors map[string]int64
	// Closes counts connections that ended before the run closed them,
	// by close code (1006 when no close frame came).
	Closes map[int]int64
	// ErrorFrames counts the error frames received, by code.
	ErrorFrames map[string]int64
	// WriteErrors counts failed writes of join and message frames; a
	// sender stops at its first failed write.
	WriteErrors int64
	// Sent and Delivered count room messages; DeliveredInWindow counts the
	// deliveries that arrived while senders were sending.
	Sent, Delivered, DeliveredInWindow int64
	// Expected is the deliveries Sent implies: each message to every
	// member of its room, the sender included.
	Expected int64
	// SendTime is how long the send phase lasted: about Config.Duration,
	// or less when the run was cancelled.
	SendTime time.Duration
	// Latency holds the delivery latencies: from a sender's write of a
	// message to a member's read of it.
	Latency *Histogram
	// Targets holds one TargetResult per target, in the order of
	// Config.Targets.
	Targets []TargetResult
	// Rows are the periodic readings taken every Config.SampleEvery;
	// empty when SampleEvery is not positive.
	Rows []Row
}

// SentPerSec returns the messages sent per second of the send phase.
func (r *Result) SentPerSec() float64 { return perSec(r.Sent, r.SendTime) }

// DeliveredPerSec returns the deliveries per second of the send phase.
func (r *Result) DeliveredPerSec() float64 { return perSec(r.DeliveredInWindow, r.SendTime) }

func perSec(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// client is one load connection.
type client struct {
	ws     *websocket.Conn
	target int
	room   int // -1 without rooms
	joined chan struct{}
	once   sync.Once
	done   chan struct{} // closed when the reader returns
	acks   chan struct{} // with Window: one per message read, for its sender
}

// run is the shared state of one Run.
type run struct {
	cfg      Config
	stopping atomic.Bool
	sending  atomic.Bool

	established, joined       atomic.Int64
	sent, delivered, inWindow atomic.Int64
	writeErrors               atomic.Int64
	perTarget                 []atomic.Int64
	lat                       Histogram
	mu                        sync.Mutex
	dialErrors                map[string]int64
	closes                    map[int]int64
	errorFrames               map[string]int64
	clients                   []*client
	members                   []int64 // per room
}

var (
	prefixMessage = []byte(`{"type":"message"`)
	prefixJoined  = []byte(`{"type":"joined"`)
	prefixError   = []byte(`{"type":"error","error":"`)
	stampMark     = []byte(`"data":{"t":`)
)

// Run opens the connections, joins the rooms, sends for cfg.Duration,
// drains, closes every connection and returns what it measured. It
// returns early with what it has when ctx ends. Every goroutine it starts
// has ended when it returns.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	r := &run{
		cfg:         cfg,
		perTarget:   make([]atomic.Int64, len(cfg.Targets)),
		dialErrors:  make(map[string]int64),
		closes:      make(map[int]int64),
		errorFrames: make(map[string]int64),
		members:     make([]int64, cfg.Rooms),
	}
	res := &Result{Config: cfg, Latency: &r.lat, Targets: make([]TargetResult, len(cfg.Targets))}
	httpc := &http.Client{Timeout: 5 * time.Second}
	defer httpc.CloseIdleConnections()
	readAll := func() []Sample {
		out := make([]Sample, len(cfg.Targets))
		for i, t := range cfg.Targets {
			if t.Metrics == "" {
				continue
			}
			s, err := scrape(ctx, httpc, t.Metrics)
			if err != nil {
				res.Targets[i].ScrapeErr = err
				continue
			}
			out[i] = s
		}
		return out
	}
	before := readAll()

	// Sample the nodes for the whole run, connect phase included.
	start := time.Now()
	sampleCtx, stopSampling := context.WithCancel(ctx)
	var sampler sync.WaitGroup
	if cfg.SampleEvery > 0 {
		sampler.Add(1)
		go func() {
			defer sampler.Done()
			t := time.NewTicker(cfg.SampleEvery)
			defer t.Stop()
			for {
				select {
				case <-sampleCtx.Done():
					return
				case <-t.C:
					row := Row{Elapsed: time.Since(start).Round(time.Second), Samples: readAll()}
					r.mu.Lock()
					res.Rows = append(res.Rows, row)
					r.mu.Unlock()
					fmt.Fprintln(cfg.Log, formatRow(row))
				}
			}
		}()
	}

	r.connect(ctx)
	res.ConnectTime = time.Since(start)
	fmt.Fprintf(cfg.Log, "connected %d/%d, joined %d, in %v\n", r.established.Load(), cfg.Conns, r.joined.Load(), res.ConnectTime.Round(time.Millisecond))
	sleepCtx(ctx, cfg.Settle)
	connected := readAll()

	sendStart := time.Now()
	r.sendPhase(ctx)
	res.SendTime = time.Since(sendStart)
	sleepCtx(ctx, cfg.Drain)
	after := readAll()
	stopSampling()
	sampler.Wait()

	r.closeAll()

	res.Attempted = int64(cfg.Conns)
	res.Established = r.established.Load()
	res.Joined = r.joined.Load()
	res.Sent = r.sent.Load()
	res.Delivered = r.delivered.Load()
	res.DeliveredInWindow = r.inWindow.Load()
	res.WriteErrors = r.writeErrors.Load()
	res.Expected = r.expected()
	r.mu.Lock()
	res.DialErrors, res.Closes, res.ErrorFrames = r.dialErrors, r.closes, r.errorFrames
	r.mu.Unlock()
	for i, t := range cfg.Targets {
		tr := &res.Targets[i]
		tr.URL = t.WS.String()
		tr.Established = r.perTarget[i].Load()
		tr.Before, tr.Connected, tr.After = before[i], connected[i], after[i]
	}
	return res, nil
}

// sleepCtx sleeps for d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// connect dials every connection with bounded concurrency, starts its
// reader, joins its room, and waits for the joins, all within
// ConnectTimeout.
func (r *run) connect(ctx context.Context) {
	cfg := r.cfg
	ctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
	defer cancel()
	sources := []net.Addr{nil}
	if cfg.Sources > 1 {
		sources = sourceAddrs(cfg.Sources)
	}
	dialers := make([][]*websocket.Dialer, len(cfg.Targets))
	for ti, t := range cfg.Targets {
		for _, src := range sources {
			if !t.Loopback || t.IPv6 {
				src = nil
			}
			nd := &net.Dialer{Timeout: cfg.DialTimeout, LocalAddr: src}
			dialers[ti] = append(dialers[ti], &websocket.Dialer{
				NetDialContext:   nd.DialContext,
				HandshakeTimeout: cfg.DialTimeout,
				ReadBufferSize:   2048,
				WriteBufferSize:  2048,
			})
		}
	}
	work := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < cfg.DialConcurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				r.dialOne(ctx, i, dialers)
			}
		}()
	}
	progress := time.NewTicker(5 * time.Second)
	defer progress.Stop()
feed:
	for i := 0; i < cfg.Conns; i++ {
		select {
		case work <- i:
		case <-progress.C:
			fmt.Fprintf(cfg.Log, "dialing: %d open\n", r.established.Load())
			i--
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	if cfg.Rooms == 0 {
		return
	}
	r.mu.Lock()
	clients := append([]*client(nil), r.clients...)
	r.mu.Unlock()
	for _, c := range clients {
		select {
		case <-c.joined:
		case <-c.done:
		case <-ctx.Done():
			return
		}
	}
}

func (r *run) dialOne(ctx context.Context, i int, dialers [][]*websocket.Dialer) {
	cfg := r.cfg
	ti := i % len(cfg.Targets)
	ds := dialers[ti]
	d := ds[(i/len(cfg.Targets))%len(ds)]
	ws, resp, err := d.DialContext(ctx, cfg.Targets[ti].WS.String(), nil)
	if err != nil {
		r.countDialError(resp, err)
		return
	}
	r.established.Add(1)
	r.perTarget[ti].Add(1)
	c := &client{ws: ws, target: ti, room: -1, joined: make(chan struct{}), done: make(chan struct{})}
	if cfg.Rooms > 0 {
		c.room = i % cfg.Rooms
	}
	if cfg.Window > 0 {
		c.acks = make(chan struct{}, cfg.Window)
	}
	r.mu.Lock()
	r.clients = append(r.clients, c)
	r.mu.Unlock()
	go r.read(c)
	if c.room < 0 {
		return
	}
	if cfg.NoJoin {
		r.joinedOnce(c)
		return
	}
	_ = ws.SetWriteDeadline(time.Now().Add(cfg.DialTimeout))
	if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"join","room":"`+roomName(c.room)+`"}`)); err != nil {
		r.writeErrors.Add(1)
	}
}

func roomName(i int) string { return "wsload-" + strconv.Itoa(i) }

func (r *run) countDialError(resp *http.Response, err error) {
	var key string
	s := err.Error()
	switch {
	case resp != nil:
		key = "http " + strconv.Itoa(resp.StatusCode)
	case strings.Contains(s, "connection refused"):
		key = "refused"
	case strings.Contains(s, "too many open files"):
		key = "too many open files"
	case strings.Contains(s, "address already in use"), strings.Contains(s, "assign requested address"):
		key = "no free port"
	case strings.Contains(s, "timeout"), strings.Contains(s, "deadline"), errors.Is(err, context.Canceled):
		key = "timeout"
	default:
		key = s
		if len(key) > 60 {
			key = key[:60]
		}
	}
	r.mu.Lock()
	r.dialErrors[key]++
	r.mu.Unlock()
}

// read is a connection's reader: it counts deliveries and their latency,
// joins, error frames, and how the connection ended.
func (r *run) read(c *client) {
	defer close(c.done)
	for {
		_, p, err := c.ws.ReadMessage()
		if err != nil {
			r.ended(err)
			return
		}
		switch {
		case bytes.HasPrefix(p, prefixMessage):
			r.delivered.Add(1)
			if r.sending.Load() {
				r.inWindow.Add(1)
			}
			if t, ok := stamp(p); ok {
				r.lat.Record(time.Duration(time.Now().UnixNano() - t))
			}
			if c.acks != nil {
				select {
				case c.acks <- struct{}{}:
				default:
				}
			}
		case bytes.HasPrefix(p, prefixJoined):
			r.joinedOnce(c)
		case bytes.HasPrefix(p, prefixError):
			code, _, _ := bytes.Cut(p[len(prefixError):], []byte(`"`))
			r.mu.Lock()
			r.errorFrames[string(code)]++
			r.mu.Unlock()
		}
	}
}

// joinedOnce counts c's join the first time it is called for c.
func (r *run) joinedOnce(c *client) {
	c.once.Do(func() {
		r.joined.Add(1)
		r.mu.Lock()
		r.members[c.room]++
		r.mu.Unlock()
		close(c.joined)
	})
}

// stamp returns the send time embedded in a delivered frame.
func stamp(p []byte) (int64, bool) {
	i := bytes.Index(p, stampMark)
	if i < 0 {
		return 0, false
	}
	var t int64
	n := 0
	for _, b := range p[i+len(stampMark):] {
		if b < '0' || b > '9' {
			break
		}
		t = t*10 + int64(b-'0')
		n++
	}
	return t, n > 0
}

// ended counts a connection that ended by the server's or the network's
// doing; the run's own closing is not counted.
func (r *run) ended(err error) {
	if r.stopping.Load() {
		return
	}
	code := websocket.CloseAbnormalClosure
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		code = ce.Code
	}
	r.mu.Lock()
	r.closes[code]++
	r.mu.Unlock()
}

// expected returns the deliveries the messages sent imply.
func (r *run) expected() int64 {
	// Every room has the same senders sending at the same rate, so each
	// message goes to its room's members; rooms differ in size by at most
	// one, so the mean is exact enough.
	r.mu.Lock()
	defer r.mu.Unlock()
	var members int64
	for _, m := range r.members {
		members += m
	}
	if len(r.members) == 0 {
		return 0
	}
	return int64(float64(r.sent.Load()) * float64(members) / float64(len(r.members)))
}

// sendPhase runs the senders for Duration; with no rooms or no rate it
// just holds the connections.
func (r *run) sendPhase(ctx context.Context) {
	cfg := r.cfg
	ctx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()
	r.mu.Lock()
	var senders []*client
	perRoom := make([]int, cfg.Rooms)
	for _, c := range r.clients {
		if c.room >= 0 && perRoom[c.room] < cfg.SendersPerRoom {
			perRoom[c.room]++
			senders = append(senders, c)
		}
	}
	r.mu.Unlock()
	if len(senders) == 0 || (cfg.Rate == 0 && cfg.Window == 0) {
		<-ctx.Done()
		return
	}
	if cfg.Window > 0 {
		fmt.Fprintf(cfg.Log, "sending with %d in flight from each of %d senders for %v\n", cfg.Window, len(senders), cfg.Duration)
		r.sending.Store(true)
		defer r.sending.Store(false)
		var wg sync.WaitGroup
		for _, c := range senders {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r.sendWindow(ctx, c)
			}()
		}
		wg.Wait()
		return
	}
	fmt.Fprintf(cfg.Log, "sending %.0f msg/s from %d senders for %v\n", cfg.Rate, len(senders), cfg.Duration)
	each := cfg.Rate / float64(len(senders))
	r.sending.Store(true)
	defer r.sending.Store(false)
	var wg sync.WaitGroup
	for i, c := range senders {
		wg.Add(1)
		// Stagger the senders over one interval so they do not fire
		// together.
		offset := time.Duration(float64(i) / float64(len(senders)) / each * float64(time.Second))
		go func() {
			defer wg.Done()
			r.send(ctx, c, each, offset)
		}()
	}
	wg.Wait()
}

// message is a sender's frame builder: each message carries its send
// time and is padded to Config.Size.
type message struct {
	prefix []byte
	pad    int
	buf    []byte
}

func (r *run) newMessage(c *client) *message {
	prefix := []byte(`{"type":"message","room":"` + roomName(c.room) + `","data":{"t":`)
	return &message{prefix: prefix, pad: r.cfg.Size - len(prefix) - len(`1700000000000000000,"p":""}}`)}
}

// write sends one message on c stamped now; false when the write failed.
func (r *run) write(c *client, m *message, now time.Time) bool {
	m.buf = append(m.buf[:0], m.prefix...)
	m.buf = strconv.AppendInt(m.buf, now.UnixNano(), 10)
	m.buf = append(m.buf, `,"p":"`...)
	for k := 0; k < m.pad; k++ {
		m.buf = append(m.buf, 'x')
	}
	m.buf = append(m.buf, `"}}`...)
	_ = c.ws.SetWriteDeadline(now.Add(5 * time.Second))
	if err := c.ws.WriteMessage(websocket.TextMessage, m.buf); err != nil {
		r.writeErrors.Add(1)
		return false
	}
	r.sent.Add(1)
	return true
}

// sendWindow keeps Window messages in flight on c until ctx ends.
func (r *run) sendWindow(ctx context.Context, c *client) {
	m := r.newMessage(c)
	for i := 0; i < r.cfg.Window; i++ {
		if !r.write(c, m, time.Now()) {
			return
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.done:
			return
		case <-c.acks:
			if !r.write(c, m, time.Now()) {
				return
			}
		}
	}
}

// send sends rate messages a second on c, starting after offset, until
// ctx ends. Each message carries its send time.
func (r *run) send(ctx context.Context, c *client, rate float64, offset time.Duration) {
	m := r.newMessage(c)
	start := time.Now().Add(offset)
	timer := time.NewTimer(offset)
	defer timer.Stop()
	var n int64
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		due := int64(time.Since(start).Seconds()*rate) + 1
		for ; n < due; n++ {
			if ctx.Err() != nil {
				return
			}
			if !r.write(c, m, time.Now()) {
				return
			}
		}
		next := start.Add(time.Duration(float64(n) / rate * float64(time.Second)))
		timer.Reset(max(time.Until(next), 0))
	}
}

// closeAll closes every connection: a close frame to each, a bounded
// wait for the readers, then the sockets.
func (r *run) closeAll() {
	r.stopping.Store(true)
	r.mu.Lock()
	clients := r.clients
	r.mu.Unlock()
	work := make(chan *client)
	var wg sync.WaitGroup
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range work {
				msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
				_ = c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
			}
		}()
	}
	for _, c := range clients {
		work <- c
	}
	close(work)
	wg.Wait()
	deadline := time.NewTimer(5 * time.Second)
	defer deadline.Stop()
wait:
	for _, c := range clients {
		select {
		case <-c.done:
		case <-deadline.C:
			// Stop waiting; closing the sockets below ends the readers.
			break wait
		}
	}
	for _, c := range clients {
		_ = c.ws.Close()
	}
	for _, c := range clients {
		<-c.done
	}
}
