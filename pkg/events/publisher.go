package events

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

// PublisherConfig configures a Publisher. Zero fields get defaults.
type PublisherConfig struct {
	// Conn is the NATS connection to publish on. Required. The Publisher
	// does not close it. Its reconnect settings decide what happens to
	// events during an outage: nats.go buffers them (ReconnectBufSize,
	// 8 MB by default) and sends them after reconnecting; once that buffer
	// is full, or if it is disabled, publishing fails and is counted.
	Conn *nats.Conn
	// Prefix is the subject prefix. Empty means DefaultPrefix.
	Prefix string
	// NodeID names this node in every event. Empty means the host name.
	NodeID string
	// BufferSize is the number of events the queue holds. A violation
	// reported while the queue is full is dropped and counted. Zero means
	// 8192.
	BufferSize int
	// FlushTimeout bounds how long Close waits for queued events to reach
	// the server. Zero means 2 seconds.
	FlushTimeout time.Duration
	// Now stamps events whose violation has no time. Nil means time.Now.
	Now func() time.Time
}

func (c *PublisherConfig) setDefaults() error {
	if c.Conn == nil {
		return invalidConfig("Conn", nil, "is required")
	}
	if err := ValidatePrefix(c.Prefix); err != nil {
		return err
	}
	switch {
	case c.BufferSize < 0:
		return invalidConfig("BufferSize", c.BufferSize, "must not be negative (0 means 8192)")
	case c.FlushTimeout < 0:
		return invalidConfig("FlushTimeout", c.FlushTimeout, "must not be negative (0 means 2s)")
	}
	if c.BufferSize == 0 {
		c.BufferSize = 8192
	}
	if c.FlushTimeout == 0 {
		c.FlushTimeout = 2 * time.Second
	}
	if c.NodeID == "" {
		c.NodeID = defaultNode()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// PublisherStats counts what a Publisher did with the events it was given.
// Once the Publisher is closed, Published + Dropped + Failed is the number
// of events accepted before Close.
type PublisherStats struct {
	// Published counts events handed to the NATS connection. During an
	// outage nats.go holds them in its reconnect buffer.
	Published uint64
	// Dropped counts events refused because the queue was full or the
	// Publisher was closed.
	Dropped uint64
	// Failed counts events the NATS connection refused: closed, or its
	// reconnect buffer full, or an encoding error.
	Failed uint64
	// Queued is the number of events waiting in the queue.
	Queued int
}

// Publisher publishes events on NATS. It implements limiter.ViolationSink:
// set it as limiter.Config.Sink (or a wshandler's sink) and every violation
// becomes an event on <prefix>.violations.<type>.<clientToken>.
//
// HandleViolation never blocks and allocates nothing: it converts the
// violation and offers it to a bounded queue, dropping and counting it if
// the queue is full. One goroutine empties the queue, encodes and
// publishes, so a slow or absent NATS server never slows a decision.
//
// A Publisher is safe for concurrent use. Close flushes and stops it; it
// is idempotent. Violations reported while Close runs may be dropped, and
// are then counted in Dropped.
type Publisher struct {
	cfg      PublisherConfig
	subjects Subjects
	ids      *idGen
	w        *worker[Event]

	closed    atomic.Bool
	published atomic.Uint64
	dropped   atomic.Uint64
	failed    atomic.Uint64

	closeOnce sync.Once
}

var _ limiter.ViolationSink = (*Publisher)(nil)

// NewPublisher returns a running Publisher, or an error naming the invalid
// field of cfg.
func NewPublisher(cfg PublisherConfig) (*Publisher, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	p := &Publisher{
		cfg:      cfg,
		subjects: Subjects{Prefix: cfg.Prefix},
		ids:      newIDGen(),
	}
	p.w = startWorker(cfg.BufferSize, p.send)
	return p, nil
}

// HandleViolation queues the event for v. It never blocks.
func (p *Publisher) HandleViolation(v limiter.Violation) {
	p.publish(FromViolation(v))
}

// publish queues e for publishing and reports whether it was queued. It
// never blocks. The Publisher sets e's ID, Node (if empty), version and
// time (if zero).
func (p *Publisher) publish(e Event) bool {
	if p.closed.Load() {
		p.dropped.Add(1)
		return false
	}
	if !p.w.offer(e) {
		p.dropped.Add(1)
		return false
	}
	if p.closed.Load() {
		// Close may have emptied the queue already; what is left
		// would never be published, so count it dropped.
		p.dropQueued()
	}
	return true
}

// dropQueued empties the queue, counting each event dropped.
func (p *Publisher) dropQueued() {
	for {
		select {
		case <-p.w.queue:
			p.dropped.Add(1)
		default:
			return
		}
	}
}

// Stats returns the Publisher's counters.
func (p *Publisher) Stats() PublisherStats {
	return PublisherStats{
		Published: p.published.Load(),
		Dropped:   p.dropped.Load(),
		Failed:    p.failed.Load(),
		Queued:    len(p.w.queue),
	}
}

// Close publishes what is queued, waits up to FlushTimeout for it to reach
// the server, and stops the Publisher's goroutine. It is idempotent and
// returns the flush error, if any, the first time.
func (p *Publisher) Close() error {
	var err error
	p.closeOnce.Do(func() {
		p.closed.Store(true)
		p.w.close()
		p.dropQueued()
		if p.cfg.Conn.IsConnected() {
			err = p.cfg.Conn.FlushTimeout(p.cfg.FlushTimeout)
		}
	})
	return err
}

// send encodes and publishes one event on the Publisher's goroutine.
func (p *Publisher) send(e Event) {
	e.V = Version
	e.ID = p.ids.next()
	if e.Node == "" {
		e.Node = p.cfg.NodeID
	}
	if e.Time.IsZero() {
		e.Time = p.cfg.Now()
	}
	data, err := Encode(e)
	if err != nil {
		p.failed.Add(1)
		return
	}
	if err := p.cfg.Conn.Publish(p.subjects.Event(&e), data); err != nil {
		p.failed.Add(1)
		return
	}
	p.published.Add(1)
}
