package wshandler

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/netip"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"github.com/ratethrottle/ratethrottle/internal/glob"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

// Defaults of the Config fields left zero.
const (
	DefaultMaxDenials             = 10
	DefaultDenialWindow           = time.Minute
	DefaultSendQueueSize          = 256
	DefaultWriteTimeout           = 10 * time.Second
	DefaultCloseTimeout           = 5 * time.Second
	DefaultPingInterval           = 30 * time.Second
	DefaultMaxRoomsPerConn        = 16
	DefaultMaxRoomsPerNode        = 10000
	DefaultMaxRoomNameLength      = 128
	DefaultMaxDrain               = 16 << 20
	DefaultControlFramesPerMinute = 60
)

// Config configures a Handler. Zero fields get the defaults named on them.
type Config struct {
	// Limiter admits connections and checks messages. Nil means a Limiter
	// with limiter.DefaultLimits and an in-memory store, which Shutdown
	// closes. The Handler takes the rest of its wiring from it: its Gate
	// (limiter.Config.Gate) is consulted on every message as well, so a
	// banned client's message closes its connection with 1008 "banned";
	// the violations of the handler's own layers (room_rate, room_full,
	// class_rate, invalid_utf8, message_size for a room's cap or the read
	// limit, message_rate for control frames) go through Limiter.Report
	// to its Sink (limiter.Config.Sink), counted like the Limiter's own.
	Limiter *limiter.Limiter
	// KeyFunc names the client of a request. Nil means PeerIPPrefix with
	// IPv6PrefixLen and TrustedProxies. Whatever KeyFunc returns, an ID
	// longer than MaxClientIDLength or not UTF-8 is refused with HTTP 400.
	KeyFunc KeyFunc
	// IPv6PrefixLen is the length of the IPv6 prefix that identifies a
	// client for the default KeyFunc: its limits and bans apply to the
	// whole network, whose client ID is the prefix in CIDR notation
	// ("2001:db8:1:2::/64"). 128 identifies each address. Zero means
	// DefaultIPv6PrefixLen (64). IPv4 clients are always one address.
	IPv6PrefixLen int
	// TrustedProxies are the networks whose X-Forwarded-For and X-Real-IP
	// headers the default KeyFunc believes.
	TrustedProxies []netip.Prefix
	// Metadata, if set, returns the metadata registered with a connection
	// (it appears in violations). It must not keep the request.
	Metadata func(r *http.Request) map[string]string
	// Upgrader upgrades admitted requests. Nil means a websocket.Upgrader
	// with its defaults (which refuse cross-origin requests) and a shared
	// write buffer pool, so that idle connections hold no write buffer.
	Upgrader *websocket.Upgrader
	// RejectWithClose makes a refused connection upgrade, receive the
	// error frame of its refusal (with retry_after_ms) and then close with
	// 1008 and the reason, for browser clients that cannot read an HTTP
	// status, instead of getting HTTP 429 or 403.
	RejectWithClose bool

	// OnConnect, if set, is called on the connection's goroutine once it is
	// open. An error closes the connection with 1008 and the error's text.
	OnConnect func(c *Conn) error
	// OnMessage, if set, receives every message that passes the limits, on
	// the connection's goroutine, and replaces the built-in room protocol.
	// data is valid only until OnMessage returns.
	OnMessage func(c *Conn, messageType int, data []byte)
	// Classify, if set with OnMessage and Policy, names the class of a
	// message that passed the Limiter's checks, before OnMessage sees it.
	// The class's cost is taken from its buckets per connection, user and
	// address (not room: OnMessage has no rooms), as for the room
	// protocol's classes; a denied message gets an error frame naming the
	// class and the layer (class_rate_exceeded), is reported as a
	// class_rate violation, consumes nothing and never reaches OnMessage.
	// A name the policy does not define (including "") counts as its
	// default class, or, without one, takes no class tokens. data is
	// valid only until Classify returns; it runs on the connection's
	// goroutine and must be quick.
	Classify func(c *Conn, messageType int, data []byte) string
	// OnClose, if set, is called once the connection has ended and left its
	// rooms, with the error that ended it (a *websocket.CloseError when the
	// client closed).
	OnClose func(c *Conn, err error)

	// MaxDenials closes a connection with 1008 when it is denied more than
	// this many times within DenialWindow (the denials refill evenly over
	// the window). Zero means DefaultMaxDenials; negative never closes.
	MaxDenials int
	// DenialWindow is the window of MaxDenials. Zero means
	// DefaultDenialWindow.
	DenialWindow time.Duration
	// SendQueueSize is the number of frames a connection's send queue
	// holds. Zero means DefaultSendQueueSize.
	SendQueueSize int
	// WriteTimeout bounds one frame's write. Zero means DefaultWriteTimeout.
	WriteTimeout time.Duration
	// CloseTimeout is how long a closing connection waits for the client's
	// close frame. Zero means DefaultCloseTimeout.
	CloseTimeout time.Duration
	// ControlFramesPerMinute bounds the pings and pongs a client may send:
	// a bucket of this many, refilled evenly over a minute, per
	// connection. A ping beyond it gets no pong, and each frame beyond it
	// is reported as a message_rate violation and counted as a denial
	// (see MaxDenials). Zero means DefaultControlFramesPerMinute (60); negative
	// means unlimited.
	ControlFramesPerMinute int
	// MaxDrain bounds what the handler reads and discards of a message
	// refused for exceeding the Limiter's MaxMessageSize, after sending the
	// 1009 close frame and for at most CloseTimeout, so that a client still
	// writing the message receives the close frame instead of a reset
	// connection. Zero means DefaultMaxDrain (16 MiB); negative drains
	// nothing.
	MaxDrain int64
	// PingInterval is how often the server pings; a connection that sends
	// no pong for two intervals is dropped. Zero means DefaultPingInterval;
	// negative sends no pings and sets no read deadline.
	PingInterval time.Duration

	// Rooms sets the limits of rooms by exact name. Rooms, RoomPatterns
	// and DefaultRoom are the rules the Handler starts with;
	// Handler.SetRoomLimits replaces them at run time.
	Rooms map[string]RoomLimits
	// RoomPatterns sets the limits of rooms whose names match a pattern, for
	// rooms not in Rooms; the first match wins.
	RoomPatterns []RoomPattern
	// DefaultRoom are the limits of every other room.
	DefaultRoom RoomLimits
	// MaxRoomsPerConn caps the rooms one connection is in. Zero means
	// DefaultMaxRoomsPerConn.
	MaxRoomsPerConn int
	// MaxRoomsPerNode caps the rooms with members on this node. Zero means
	// DefaultMaxRoomsPerNode.
	MaxRoomsPerNode int
	// MaxRoomNameLength caps a room name, in bytes. Zero means
	// DefaultMaxRoomNameLength.
	MaxRoomNameLength int
	// RoomSlots, if set, counts room members for MaxMembers across every
	// node that shares it; nil counts the members on this node. It counts
	// the members of every room, capped or not, so that a cap set at run
	// time (Handler.SetRoomLimits) counts those who joined before it: each
	// join is one Acquire, each leave one Release. When Acquire fails, a
	// room with a cap refuses the join (store_unavailable) and one without
	// admits it uncounted. Give it its
	// own instance (not the Limiter's connection slots): rooms are counted
	// under the key "room:" + subject.Token(name).
	RoomSlots limiter.Slots
	// Broker, if set, carries room messages to the other nodes. Nil serves
	// rooms on this node only.
	Broker Broker
	// Policy, if set, supplies the message classes of the built-in room
	// protocol (a *policy.Watcher satisfies it): a message frame, or a
	// frame whose type names a class of the policy, takes its class's cost
	// from the class buckets per connection, user, address and room (see
	// docs/POLICY.md), in the Limiter's Store. A frame of a type only the
	// server sends (joined, left, error) is never a class: it is refused
	// as unknown_type. With OnMessage, Classify names the classes. Nil
	// charges no classes.
	Policy PolicySource

	// NodeID prefixes the IDs of this node's connections. Empty means a
	// random ID.
	NodeID string
	// Now returns the current time. Nil means the Limiter's clock
	// (Limiter.Now). The message checks the handler asks of the Limiter
	// are made at this time (Limiter.CheckMessageAt), so that one clock
	// read serves a message's every layer.
	Now func() time.Time
}

// RoomLimits are the limits of one room. Zero fields mean unlimited.
type RoomLimits struct {
	// MaxMembers caps the room's members (see Config.RoomSlots).
	MaxMembers int64
	// MessagesPerMinute caps the messages of all members together.
	MessagesPerMinute int64
	// MessageBurst is that bucket's capacity; zero means MessagesPerMinute.
	MessageBurst int64
	// MemberMessagesPerMinute caps each member's messages in the room,
	// counted per client.
	MemberMessagesPerMinute int64
	// MemberMessageBurst is that bucket's capacity; zero means
	// MemberMessagesPerMinute.
	MemberMessageBurst int64
	// MaxMessageSize caps a room message's frame, in bytes; it is useful
	// only below the Limiter's MaxMessageSize, which applies to every frame.
	MaxMessageSize int64
}

// RoomPattern gives the rooms whose names match Pattern their limits. In
// Pattern, '*' matches any run of bytes (including none); every other byte
// matches itself.
type RoomPattern struct {
	// Pattern is matched against the whole room name.
	Pattern string
	// Limits are the limits of the rooms that match.
	Limits RoomLimits
}

func (rl RoomLimits) totalSpec() limiter.Spec {
	return limiter.Spec{Limit: rl.MessagesPerMinute, Per: time.Minute, Burst: rl.MessageBurst}
}

func (rl RoomLimits) memberSpec() limiter.Spec {
	return limiter.Spec{Limit: rl.MemberMessagesPerMinute, Per: time.Minute, Burst: rl.MemberMessageBurst}
}

func (rl RoomLimits) validate(field string) error {
	checks := []struct {
		name string
		v    int64
	}{
		{"MaxMembers", rl.MaxMembers}, {"MessagesPerMinute", rl.MessagesPerMinute},
		{"MessageBurst", rl.MessageBurst}, {"MemberMessagesPerMinute", rl.MemberMessagesPerMinute},
		{"MemberMessageBurst", rl.MemberMessageBurst}, {"MaxMessageSize", rl.MaxMessageSize},
	}
	for _, c := range checks {
		if c.v < 0 {
			return invalid(field+"."+c.name, c.v, "must not be negative (0 means unlimited)")
		}
	}
	if rl.MessagesPerMinute == 0 && rl.MessageBurst != 0 {
		return invalid(field+".MessageBurst", rl.MessageBurst, "is set but MessagesPerMinute is 0 (unlimited)")
	}
	if rl.MemberMessagesPerMinute == 0 && rl.MemberMessageBurst != 0 {
		return invalid(field+".MemberMessageBurst", rl.MemberMessageBurst, "is set but MemberMessagesPerMinute is 0 (unlimited)")
	}
	return nil
}

// withDefaults validates c and returns it with defaults filled in.
func (c Config) withDefaults() (Config, error) {
	type intField struct {
		name string
		p    *int
		def  int
	}
	for _, f := range []intField{
		{"SendQueueSize", &c.SendQueueSize, DefaultSendQueueSize},
		{"MaxRoomsPerConn", &c.MaxRoomsPerConn, DefaultMaxRoomsPerConn},
		{"MaxRoomsPerNode", &c.MaxRoomsPerNode, DefaultMaxRoomsPerNode},
		{"MaxRoomNameLength", &c.MaxRoomNameLength, DefaultMaxRoomNameLength},
	} {
		if *f.p < 0 {
			return c, invalid(f.name, *f.p, "must not be negative (0 means the default)")
		}
		if *f.p == 0 {
			*f.p = f.def
		}
	}
	if c.MaxDenials == 0 {
		c.MaxDenials = DefaultMaxDenials
	}
	if c.ControlFramesPerMinute == 0 {
		c.ControlFramesPerMinute = DefaultControlFramesPerMinute
	}
	type durField struct {
		name string
		p    *time.Duration
		def  time.Duration
	}
	for _, f := range []durField{
		{"DenialWindow", &c.DenialWindow, DefaultDenialWindow},
		{"WriteTimeout", &c.WriteTimeout, DefaultWriteTimeout},
		{"CloseTimeout", &c.CloseTimeout, DefaultCloseTimeout},
	} {
		if *f.p < 0 {
			return c, invalid(f.name, *f.p, "must not be negative (0 means the default)")
		}
		if *f.p == 0 {
			*f.p = f.def
		}
	}
	if c.MaxDrain == 0 {
		c.MaxDrain = DefaultMaxDrain
	}
	if c.PingInterval == 0 {
		c.PingInterval = DefaultPingInterval
	}
	if c.MaxRoomNameLength > 1024 {
		return c, invalid("MaxRoomNameLength", c.MaxRoomNameLength, "must be at most 1024")
	}
	if err := validateRooms(c.Rooms, c.RoomPatterns, c.DefaultRoom, c.MaxRoomNameLength); err != nil {
		return c, err
	}
	if c.IPv6PrefixLen == 0 {
		c.IPv6PrefixLen = DefaultIPv6PrefixLen
	}
	if c.IPv6PrefixLen < 1 || c.IPv6PrefixLen > 128 {
		return c, invalid("IPv6PrefixLen", c.IPv6PrefixLen, "must be 1 to 128 (0 means the default, 64)")
	}
	if c.KeyFunc == nil {
		c.KeyFunc = PeerIPPrefix(c.IPv6PrefixLen, c.TrustedProxies...)
	}
	if c.NodeID == "" {
		var b [6]byte
		_, _ = rand.Read(b[:])
		c.NodeID = hex.EncodeToString(b[:])
	}
	return c, nil
}

// validateRooms checks room rules, naming the first bad field as New
// does: Rooms["name"].Field, RoomPatterns[i].Limits.Field, DefaultRoom.Field.
func validateRooms(rooms map[string]RoomLimits, patterns []RoomPattern, def RoomLimits, maxNameLen int) error {
	for name, rl := range rooms {
		field := fmt.Sprintf("Rooms[%q]", name)
		if err := checkRoomName(name, maxNameLen); err != nil {
			return invalid(field, name, err.Error())
		}
		if err := rl.validate(field); err != nil {
			return err
		}
	}
	for i, p := range patterns {
		field := fmt.Sprintf("RoomPatterns[%d]", i)
		if p.Pattern == "" || !utf8.ValidString(p.Pattern) {
			return invalid(field+".Pattern", p.Pattern, "must be non-empty UTF-8")
		}
		if err := p.Limits.validate(field + ".Limits"); err != nil {
			return err
		}
	}
	return def.validate("DefaultRoom")
}

// roomRules are one rule's limits with the Specs of its two buckets, made
// once per rule and shared by the rooms it applies to.
type roomRules struct {
	limits RoomLimits
	total  limiter.Spec
	member limiter.Spec
}

func newRoomRules(rl RoomLimits) *roomRules {
	return &roomRules{limits: rl, total: rl.totalSpec(), member: rl.memberSpec()}
}

// roomTable is a validated set of room rules, never changed once made.
type roomTable struct {
	exact    map[string]*roomRules
	patterns []string
	rules    []*roomRules // of patterns, by index
	def      *roomRules
}

// newRoomTable copies the rules, so that the caller's map and slice may
// change afterwards.
func newRoomTable(rooms map[string]RoomLimits, patterns []RoomPattern, def RoomLimits) *roomTable {
	t := &roomTable{exact: make(map[string]*roomRules, len(rooms)), def: newRoomRules(def)}
	for name, rl := range rooms {
		t.exact[name] = newRoomRules(rl)
	}
	for _, p := range patterns {
		t.patterns = append(t.patterns, p.Pattern)
		t.rules = append(t.rules, newRoomRules(p.Limits))
	}
	return t
}

// lookup returns the rules of the room name: by exact name, then the
// first matching pattern, then the default.
func (t *roomTable) lookup(name string) *roomRules {
	if r, ok := t.exact[name]; ok {
		return r
	}
	for i, p := range t.patterns {
		if glob.Match(p, name) {
			return t.rules[i]
		}
	}
	return t.def
}

// limitsFor returns the limits of the room name under c's rules.
func (c *Config) limitsFor(name string) RoomLimits {
	return newRoomTable(c.Rooms, c.RoomPatterns, c.DefaultRoom).lookup(name).limits
}
