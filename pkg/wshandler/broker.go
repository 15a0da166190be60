package wshandler

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

// Broker carries room messages between the nodes of a cluster. The Handler
// subscribes to a room while the node has members in it and publishes every
// room message once. A Broker must not deliver a node's own publications
// back to it, and must deliver the publications of one node to a
// subscription in the order they were published.
type Broker interface {
	// Subscribe starts delivering the room's messages from other nodes to
	// deliver, which must not block, until unsubscribe is called. When
	// Subscribe returns, the subscription is in place: a message published
	// afterwards by any node is delivered. While the broker's backend is
	// unreachable, Subscribe should not wait for it: it returns at once
	// (so that the room still works on this node) and puts the
	// subscription in place when the backend is back. An error means the
	// subscription will never be made.
	Subscribe(ctx context.Context, room string, deliver func(frame []byte)) (unsubscribe func() error, err error)
	// Publish sends frame to the room's subscribers on other nodes. It
	// must not wait for them.
	Publish(ctx context.Context, room string, frame []byte) error
}

// Flusher is implemented by a Broker that buffers publications; Shutdown
// calls Flush.
type Flusher interface {
	Flush(ctx context.Context) error
}

// HeaderOrigin is the NATS header that carries the ID of the node that
// published a room message.
const HeaderOrigin = "Ratethrottle-Origin"

// DefaultSubjectPrefix is the prefix of NATSBroker subjects.
const DefaultSubjectPrefix = "ratethrottle"

// RoomToken returns the NATS subject token and key fragment of a room name:
// limiter.Token(room), which no name can break.
func RoomToken(room string) string { return limiter.Token(room) }

// RoomSubject returns the subject of a room's messages: prefix + ".rooms." +
// RoomToken(room).
func RoomSubject(prefix, room string) string {
	return prefix + ".rooms." + RoomToken(room)
}

// NATSBrokerConfig configures a NATSBroker.
type NATSBrokerConfig struct {
	// Conn is the NATS connection. Required; the broker does not close it.
	Conn *nats.Conn
	// Prefix is the subject prefix. Empty means DefaultSubjectPrefix.
	Prefix string
	// NodeID names this node in HeaderOrigin. Required, and distinct for
	// every node sharing the subjects.
	NodeID string
	// SubscribeTimeout bounds the round trip that confirms a subscription.
	// Zero means 5 seconds.
	SubscribeTimeout time.Duration
}

// NATSBroker is a Broker on core NATS: a room's messages are published on
// RoomSubject(prefix, room) with HeaderOrigin set, and each subscription
// drops the messages its own node published. NATS keeps the order of one
// connection's publications to one subscription, which gives each sender's
// messages to every member in order.
//
// A NATSBroker is safe for concurrent use.
type NATSBroker struct {
	nc      *nats.Conn
	prefix  string
	node    string
	timeout time.Duration
	hdr     nats.Header // read-only after New
}

var _ Broker = (*NATSBroker)(nil)
var _ Flusher = (*NATSBroker)(nil)

// NewNATSBroker returns a NATSBroker for cfg.
func NewNATSBroker(cfg NATSBrokerConfig) (*NATSBroker, error) {
	if cfg.Conn == nil {
		return nil, &FieldError{Field: "Conn", Value: nil, Reason: "is required"}
	}
	if cfg.NodeID == "" {
		return nil, &FieldError{Field: "NodeID", Value: `""`, Reason: "is required"}
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultSubjectPrefix
	}
	if cfg.SubscribeTimeout < 0 {
		return nil, &FieldError{Field: "SubscribeTimeout", Value: cfg.SubscribeTimeout, Reason: "must not be negative"}
	}
	if cfg.SubscribeTimeout == 0 {
		cfg.SubscribeTimeout = 5 * time.Second
	}
	return &NATSBroker{
		nc: cfg.Conn, prefix: cfg.Prefix, node: cfg.NodeID, timeout: cfg.SubscribeTimeout,
		hdr: nats.Header{HeaderOrigin: []string{cfg.NodeID}},
	}, nil
}

// Subject returns the subject of room's messages.
func (b *NATSBroker) Subject(room string) string { return RoomSubject(b.prefix, room) }

// Publish implements Broker.
func (b *NATSBroker) Publish(_ context.Context, room string, frame []byte) error {
	return b.nc.PublishMsg(&nats.Msg{Subject: b.Subject(room), Header: b.hdr, Data: frame})
}

// Subscribe implements Broker. While connected it waits for the server to
// confirm the subscription, for at most SubscribeTimeout. While the
// connection is reconnecting it returns at once: the NATS client sends its
// subscriptions again when it reconnects, so the room's members hear the
// other nodes once NATS is back. It fails only on a closed connection.
func (b *NATSBroker) Subscribe(ctx context.Context, room string, deliver func([]byte)) (func() error, error) {
	sub, err := b.nc.Subscribe(b.Subject(room), func(m *nats.Msg) {
		if o := m.Header[HeaderOrigin]; len(o) == 1 && o[0] == b.node {
			return
		}
		deliver(m.Data)
	})
	if err != nil {
		return nil, fmt.Errorf("wshandler: subscribe room: %w", err)
	}
	unsub := func() error {
		err := sub.Unsubscribe()
		if errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrBadSubscription) {
			return nil
		}
		return err
	}
	if !b.nc.IsConnected() {
		return unsub, nil
	}
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	if err := b.nc.FlushWithContext(ctx); err != nil && b.nc.IsClosed() {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("wshandler: subscribe room: %w", err)
	}
	// Any other failure is a connection lost or slow during the round
	// trip: the subscription stays and is sent again on reconnect.
	return unsub, nil
}

// Flush implements Flusher: it waits until the server has every message
// published so far.
func (b *NATSBroker) Flush(ctx context.Context) error {
	if b.nc.IsClosed() {
		return nil
	}
	return b.nc.FlushWithContext(ctx)
}
