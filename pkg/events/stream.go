package events

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// DefaultStream is the name of the event history stream when a
// StreamConfig leaves it empty.
const DefaultStream = "RATETHROTTLE_EVENTS"

// StreamConfig configures the JetStream stream that keeps event history.
// Zero fields get defaults; the history is always bounded.
type StreamConfig struct {
	// Name is the stream name. Empty means DefaultStream.
	Name string
	// Prefix is the subject prefix of the events to keep. Empty means
	// DefaultPrefix.
	Prefix string
	// MaxAge is how long events are kept. Zero means 24 hours.
	MaxAge time.Duration
	// MaxMsgs is the most events kept; the oldest go first. Zero means
	// one million.
	MaxMsgs int64
	// MaxBytes is the most bytes kept; the oldest go first. Zero means
	// 256 MiB.
	MaxBytes int64
	// Replicas is the stream's replication factor. Zero means 1.
	Replicas int
	// Storage is file (the zero value) or memory storage.
	Storage jetstream.StorageType
}

func (c *StreamConfig) setDefaults() error {
	if err := ValidatePrefix(c.Prefix); err != nil {
		return err
	}
	switch {
	case c.MaxAge < 0:
		return invalidConfig("MaxAge", c.MaxAge, "must not be negative (0 means 24h)")
	case c.MaxMsgs < 0:
		return invalidConfig("MaxMsgs", c.MaxMsgs, "must not be negative (0 means 1000000)")
	case c.MaxBytes < 0:
		return invalidConfig("MaxBytes", c.MaxBytes, "must not be negative (0 means 256 MiB)")
	case c.Replicas < 0:
		return invalidConfig("Replicas", c.Replicas, "must not be negative (0 means 1)")
	}
	if c.Name == "" {
		c.Name = DefaultStream
	}
	if c.MaxAge == 0 {
		c.MaxAge = 24 * time.Hour
	}
	if c.MaxMsgs == 0 {
		c.MaxMsgs = 1_000_000
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = 256 << 20
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	return nil
}

// EnsureStream creates the event history stream, or updates it to cfg if
// it exists. It captures every violation and ban event under the prefix,
// "<prefix>.violations.>" and "<prefix>.bans.*", so nothing changes for
// publishers: a Publisher's core NATS publishes are stored as they pass.
// When a limit is reached the oldest events are discarded. nc is a
// connection to the stream's JetStream.
func EnsureStream(ctx context.Context, nc *nats.Conn, cfg StreamConfig) (jetstream.Stream, error) {
	if nc == nil {
		return nil, invalidConfig("nc", nil, "is required")
	}
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("events: jetstream: %w", err)
	}
	s := Subjects{Prefix: cfg.Prefix}
	return js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        cfg.Name,
		Description: "RateThrottle violation and ban events",
		Subjects:    []string{s.AllViolations(), s.AllBans()},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      cfg.MaxAge,
		MaxMsgs:     cfg.MaxMsgs,
		MaxBytes:    cfg.MaxBytes,
		Replicas:    cfg.Replicas,
		Storage:     cfg.Storage,
	})
}

// DurableConfig configures SubscribeDurable.
type DurableConfig struct {
	// Stream is the history stream. Empty means DefaultStream.
	Stream string
	// Durable names the consumer. Required: a later SubscribeDurable with
	// the same name resumes after the last event this one acknowledged.
	Durable string
	// Filter selects the events, on the stream's prefix. A durable
	// consumer keeps the filter it was created with until it is changed
	// by a later call.
	Filter Filter
	// AckWait is how long the server waits for an acknowledgement before
	// it delivers an event again. Zero means 30 seconds.
	AckWait time.Duration
}

// ackTimeout bounds how long SubscribeDurable waits for the server to
// confirm an acknowledgement.
const ackTimeout = 5 * time.Second

// SubscribeDurable consumes the history stream through the durable
// consumer cfg.Durable, over nc, creating it if needed: on first use from the
// oldest event kept, afterwards from the first event not acknowledged. fn
// is called with each event, in stream order, on one goroutine; the event
// is acknowledged, and the acknowledgement confirmed, when fn returns.
// Delivery is at least once: an event whose acknowledgement is lost is
// delivered again.
//
// The subscription ends when ctx ends or Close is called.
func SubscribeDurable(ctx context.Context, nc *nats.Conn, cfg DurableConfig, fn func(Event)) (*Subscription, error) {
	switch {
	case nc == nil:
		return nil, invalidConfig("nc", nil, "is required")
	case fn == nil:
		return nil, invalidConfig("fn", nil, "is required")
	case cfg.Durable == "":
		return nil, invalidConfig("Durable", "", "is required")
	case cfg.AckWait < 0:
		return nil, invalidConfig("AckWait", cfg.AckWait, "must not be negative (0 means 30s)")
	}
	if cfg.Stream == "" {
		cfg.Stream = DefaultStream
	}
	if cfg.AckWait == 0 {
		cfg.AckWait = 30 * time.Second
	}
	subjects, err := cfg.Filter.Subjects()
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("events: jetstream: %w", err)
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, cfg.Stream, jetstream.ConsumerConfig{
		Durable:        cfg.Durable,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        cfg.AckWait,
		FilterSubjects: subjects,
		MaxAckPending:  1024,
	})
	if err != nil {
		return nil, err
	}
	s := newSubscription()
	cc, err := cons.Consume(func(m jetstream.Msg) {
		e, err := Decode(m.Data())
		if err != nil {
			s.invalid.Add(1)
		} else if cfg.Filter.Match(&e) {
			fn(e)
		}
		actx, cancel := context.WithTimeout(context.Background(), ackTimeout)
		_ = m.DoubleAck(actx)
		cancel()
	})
	if err != nil {
		return nil, err
	}
	go func() {
		defer close(s.done)
		select {
		case <-ctx.Done():
		case <-s.stop:
		}
		cc.Stop()
		<-cc.Closed()
		// Make sure the server has seen the unsubscribe before Close
		// returns: a pull request it still thought live would take the
		// next events and hold them for AckWait, away from the durable's
		// next subscriber.
		_ = nc.FlushTimeout(ackTimeout)
	}()
	return s, nil
}
