package wshandler

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/ratethrottle/ratethrottle/pkg/subject"
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

// HeaderPresence is the NATS header of a presence message on a room's
// PresenceSubject: PresenceProbe, PresenceHello or PresenceHere.
const HeaderPresence = "Ratethrottle-Presence"

// The presence messages a NATSBroker exchanges about a room (see
// NATSBroker).
const (
	// PresenceProbe is a request from a node about to subscribe: every
	// node with the room answers it, after it has started publishing.
	PresenceProbe = "probe"
	// PresenceHello announces a node that has subscribed; every node with
	// the room answers it with PresenceHere.
	PresenceHello = "hello"
	// PresenceHere tells the room's nodes that the sender has the room.
	PresenceHere = "here"
)

// DefaultLocalAfter is the default NATSBrokerConfig.LocalAfter.
const DefaultLocalAfter = time.Second

// PresenceSubject returns the subject of a room's presence messages:
// prefix + ".roomnodes." + subject.Token(room).
func PresenceSubject(prefix, room string) string {
	return prefix + ".roomnodes." + subject.Token(room)
}

// DefaultSubjectPrefix is the prefix of NATSBroker subjects.
const DefaultSubjectPrefix = "ratethrottle"

// RoomSubject returns the subject of a room's messages: prefix + ".rooms." +
// subject.Token(room).
func RoomSubject(prefix, room string) string {
	return prefix + ".rooms." + subject.Token(room)
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
	// SubscribeTimeout bounds the round trip that confirms a subscription,
	// and the wait for the answer to a room's presence probe. Zero means
	// 5 seconds.
	SubscribeTimeout time.Duration
	// LocalAfter is how long a room must go without hearing of another
	// node that has it before the node stops publishing its messages (see
	// NATSBroker). Zero means DefaultLocalAfter; negative means always
	// publish.
	LocalAfter time.Duration
}

// NATSBroker is a Broker on core NATS: a room's messages are published on
// RoomSubject(prefix, room) with HeaderOrigin set, and each subscription
// drops the messages its own node published. NATS keeps the order of one
// connection's publications to one subscription, which gives each sender's
// messages to every member in order.
//
// A room whose members are all on this node costs no NATS message: the
// broker publishes a room's messages only while it knows, or cannot rule
// out, that another node has the room. The nodes learn of each other on
// the room's PresenceSubject. Subscribe first asks the nodes that have the
// room with a PresenceProbe request; each answers after it has started
// publishing the room's messages, so the joiner's members miss none of
// them, and NATS answers at once when no node has the room. Subscribe then
// subscribes to the presence subject and publishes a PresenceHello, which
// every node with the room answers with a PresenceHere (this settles two
// nodes getting their first members at the same time: at least one hears
// the other's hello). A room that has heard of no other node for
// LocalAfter after its hello stops publishing; any presence message from
// another node starts it again, and a reconnection of the NATS connection
// makes it publish and say hello again. Until then, and whenever NATS cannot be asked, the
// broker publishes. Only nodes count: a plain NATS subscriber of a room
// subject does not see the messages of a room that no other node has.
//
// A NATSBroker is safe for concurrent use.
type NATSBroker struct {
	nc         *nats.Conn
	prefix     string
	node       string
	timeout    time.Duration
	localAfter time.Duration
	hdr        nats.Header // read-only after New

	// epoch counts the changes of the connection's status (disconnected,
	// reconnecting, connected, closed) that the watcher has seen: a local
	// room whose epoch is still the broker's has been connected all along
	// since it went local, which Publish checks without a lock.
	epoch atomic.Uint64

	mu    sync.RWMutex
	rooms map[string]*roomPresence // guarded by mu
	stop  chan struct{}            // stops the running watcher; nil when none runs; guarded by mu
}

// roomPresence is what a node knows of a room's other nodes.
type roomPresence struct {
	room    string
	subject string
	// local is set while no other node is known to have the room: its
	// messages are not published. epoch is the broker's epoch when local
	// was set.
	local  atomic.Bool
	epoch  atomic.Uint64
	heard  atomic.Bool // another node has answered or announced itself
	gen    atomic.Uint64
	closed atomic.Bool
	// mu orders going local against hearing another node: a room never
	// goes local after another node was heard (Publish reads local alone).
	mu sync.Mutex
}

var _ Broker = (*NATSBroker)(nil)
var _ Flusher = (*NATSBroker)(nil)

// NewNATSBroker returns a NATSBroker for cfg.
func NewNATSBroker(cfg NATSBrokerConfig) (*NATSBroker, error) {
	if cfg.Conn == nil {
		return nil, invalid("Conn", nil, "is required")
	}
	if cfg.NodeID == "" {
		return nil, invalid("NodeID", nil, "is required")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultSubjectPrefix
	}
	if cfg.SubscribeTimeout < 0 {
		return nil, invalid("SubscribeTimeout", cfg.SubscribeTimeout, "must not be negative")
	}
	if cfg.SubscribeTimeout == 0 {
		cfg.SubscribeTimeout = 5 * time.Second
	}
	if cfg.LocalAfter == 0 {
		cfg.LocalAfter = DefaultLocalAfter
	}
	return &NATSBroker{
		nc: cfg.Conn, prefix: cfg.Prefix, node: cfg.NodeID, timeout: cfg.SubscribeTimeout,
		localAfter: cfg.LocalAfter, hdr: nats.Header{HeaderOrigin: []string{cfg.NodeID}},
		rooms: make(map[string]*roomPresence),
	}, nil
}

// Subject returns the subject of room's messages.
func (b *NATSBroker) Subject(room string) string { return RoomSubject(b.prefix, room) }

// Publish implements Broker. It publishes nothing for a room no other
// node has (see NATSBroker).
func (b *NATSBroker) Publish(_ context.Context, room string, frame []byte) error {
	b.mu.RLock()
	p := b.rooms[room]
	b.mu.RUnlock()
	subject := ""
	if p != nil {
		// Two atomic loads and no lock on the shared connection: a local
		// room whose connection has not changed status since it went
		// local publishes nothing. After a change it publishes (into the
		// client's reconnect buffer while NATS is away) until the
		// watcher, on the reconnection, makes it say hello again.
		if p.local.Load() && p.epoch.Load() == b.epoch.Load() {
			return nil
		}
		subject = p.subject
	} else {
		subject = b.Subject(room)
	}
	return b.nc.PublishMsg(&nats.Msg{Subject: subject, Header: b.hdr, Data: frame})
}

// hello announces the node in p's room and, unless another node answers
// or the connection changes status within LocalAfter, makes the room
// local. The watcher is running (Subscribe starts it first), so the epoch
// read before the hello goes out changes with any later change of status.
func (b *NATSBroker) hello(p *roomPresence) {
	if p.heard.Load() || p.closed.Load() || !b.nc.IsConnected() {
		return
	}
	epoch := b.epoch.Load()
	gen := p.gen.Add(1)
	if err := b.presence(PresenceSubject(b.prefix, p.room), PresenceHello); err != nil {
		return
	}
	time.AfterFunc(b.localAfter, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.gen.Load() != gen || p.heard.Load() || p.closed.Load() ||
			b.epoch.Load() != epoch || !b.nc.IsConnected() {
			return
		}
		p.epoch.Store(epoch)
		p.local.Store(true)
	})
}

// presence publishes a presence message of kind on subject.
func (b *NATSBroker) presence(subject, kind string) error {
	return b.nc.PublishMsg(&nats.Msg{Subject: subject,
		Header: nats.Header{HeaderOrigin: []string{b.node}, HeaderPresence: []string{kind}}})
}

// watchLocked starts the watcher unless it runs; requires b.mu held. The
// watcher runs while the broker has rooms: it counts the connection's
// status changes in epoch and, on every reconnection, makes the rooms no
// other node is known to have publish and say hello again, so that two
// nodes that each went local while apart find each other.
func (b *NATSBroker) watchLocked() {
	if b.stop != nil {
		return
	}
	stop := make(chan struct{})
	b.stop = stop
	ch := b.nc.StatusChanged(nats.CONNECTED, nats.DISCONNECTED, nats.RECONNECTING, nats.CLOSED)
	go b.runWatch(ch, stop)
}

// runWatch is the watcher's loop; it ends when stop is closed (the last
// room is gone) or the connection is closed.
func (b *NATSBroker) runWatch(ch chan nats.Status, stop chan struct{}) {
	defer b.nc.RemoveStatusListener(ch)
	for {
		select {
		case <-stop:
			return
		case s, ok := <-ch:
			b.epoch.Add(1)
			switch {
			case !ok || s == nats.CLOSED:
				b.mu.Lock()
				if b.stop == stop {
					b.stop = nil
				}
				b.mu.Unlock()
				return
			case s == nats.CONNECTED:
				b.reconnected()
			}
		}
	}
}

// reconnected makes every room that no other node is known to have
// publish again and say hello.
func (b *NATSBroker) reconnected() {
	b.mu.RLock()
	rooms := make([]*roomPresence, 0, len(b.rooms))
	for _, p := range b.rooms {
		if !p.heard.Load() {
			rooms = append(rooms, p)
		}
	}
	b.mu.RUnlock()
	for _, p := range rooms {
		p.local.Store(false)
		b.hello(p)
	}
}

// onPresence handles a presence message about p's room from another node.
func (b *NATSBroker) onPresence(p *roomPresence, m *nats.Msg) {
	o := m.Header[HeaderOrigin]
	if len(o) != 1 {
		return
	}
	if o[0] == b.node {
		// This node's own probe, for the room's next life on this node
		// while this one is being released: answered, so that it does
		// not wait, and it then publishes, which is always safe.
		if m.Header.Get(HeaderPresence) == PresenceProbe && m.Reply != "" {
			_ = b.nc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{HeaderOrigin: []string{b.node}}})
		}
		return
	}
	p.mu.Lock()
	p.heard.Store(true)
	p.local.Store(false)
	p.mu.Unlock()
	// Answer once publishing is on: whoever asked sees every message
	// published from now on.
	switch m.Header.Get(HeaderPresence) {
	case PresenceProbe:
		if m.Reply != "" {
			_ = b.nc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{HeaderOrigin: []string{b.node}}})
		}
	case PresenceHello:
		_ = b.presence(m.Subject, PresenceHere)
	}
}

// probe asks the nodes that have room whether any does; it reports true
// when one answered, or when the answer is unknown. It uses an inbox of
// its own, unsubscribed when done, rather than the connection's shared
// one, which would stay subscribed for the connection's life.
func (b *NATSBroker) probe(ctx context.Context, room string) bool {
	if !b.nc.IsConnected() {
		return true
	}
	inbox := b.nc.NewRespInbox()
	sub, err := b.nc.SubscribeSync(inbox)
	if err != nil {
		return true
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := b.nc.PublishMsg(&nats.Msg{Subject: PresenceSubject(b.prefix, room), Reply: inbox,
		Header: nats.Header{HeaderOrigin: []string{b.node}, HeaderPresence: []string{PresenceProbe}}}); err != nil {
		return true
	}
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	// With no subscriber the server answers at once with a status that
	// NextMsg returns as ErrNoResponders.
	_, err = sub.NextMsgWithContext(ctx)
	return !errors.Is(err, nats.ErrNoResponders)
}

// Subscribe implements Broker. While connected it waits for the server to
// confirm the subscription, for at most SubscribeTimeout. While the
// connection is reconnecting it returns at once: the NATS client sends its
// subscriptions again when it reconnects, so the room's members hear the
// other nodes once NATS is back. It fails only on a closed connection.
func (b *NATSBroker) Subscribe(ctx context.Context, room string, deliver func([]byte)) (func() error, error) {
	if b.localAfter < 0 {
		return b.subscribe(ctx, room, deliver)
	}
	p := &roomPresence{room: room, subject: b.Subject(room)}
	unsubRoom, err := b.subscribe(ctx, room, deliver)
	if err != nil {
		return nil, err
	}
	if b.probe(ctx, room) {
		p.heard.Store(true)
	}
	psub, err := b.nc.Subscribe(PresenceSubject(b.prefix, room), func(m *nats.Msg) { b.onPresence(p, m) })
	if err != nil {
		_ = unsubRoom()
		return nil, fmt.Errorf("wshandler: subscribe room presence: %w", err)
	}
	b.mu.Lock()
	b.rooms[room] = p
	b.watchLocked()
	b.mu.Unlock()
	// The hello goes out after the presence subscription, on the same
	// connection, so the server has the subscription first: of two nodes
	// saying hello at once, at least one hears the other.
	b.hello(p)
	return func() error {
		p.closed.Store(true)
		b.mu.Lock()
		if b.rooms[room] == p {
			delete(b.rooms, room)
		}
		if len(b.rooms) == 0 && b.stop != nil {
			close(b.stop)
			b.stop = nil
		}
		b.mu.Unlock()
		err := unsubRoom()
		// Drained, not dropped: a probe the server has already routed
		// here is still answered, or its sender would wait for
		// SubscribeTimeout.
		if perr := psub.Drain(); perr != nil && err == nil &&
			!errors.Is(perr, nats.ErrConnectionClosed) && !errors.Is(perr, nats.ErrBadSubscription) {
			err = perr
		}
		return err
	}, nil
}

// subscribe subscribes to room's messages.
func (b *NATSBroker) subscribe(ctx context.Context, room string, deliver func([]byte)) (func() error, error) {
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
