package policy

import (
	"time"

	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

// SchemaVersion is the document schema version this package reads and writes.
const SchemaVersion = 1

// Document is a policy: connection limits, message classes, tiers and room
// rules. Its YAML form uses the keys in the field tags; Parse reads it and
// Marshal writes it. The zero Document is valid and limits nothing.
type Document struct {
	// Version is the schema version; 0 means SchemaVersion.
	Version int `yaml:"version,omitempty"`
	// DefaultTier names the tier of identities with no tier, or with a
	// tier the document does not define. Empty means the document's own
	// Limits and Classes, with no tier applied.
	DefaultTier string `yaml:"default_tier,omitempty"`
	// DefaultClass names the class of messages whose class the document
	// does not define. Empty means such messages meet only the connection
	// Limits.
	DefaultClass string `yaml:"default_class,omitempty"`
	// Limits are the connection limits of every tier that does not set its
	// own.
	Limits Limits `yaml:"limits,omitempty"`
	// Classes are the message classes by name, such as "message", "typing"
	// and "file".
	Classes map[string]Class `yaml:"classes,omitempty"`
	// Tiers are named limit sets by name, such as "free" and "pro".
	Tiers map[string]Tier `yaml:"tiers,omitempty"`
	// Rooms are the room rules by pattern: an exact room name, a pattern
	// where '*' matches any run of bytes, or "*" alone for every other
	// room. An exact name wins over patterns, and the longest matching
	// pattern wins over shorter ones.
	Rooms map[string]Room `yaml:"rooms,omitempty"`
}

// Limits are the connection limits of limiter.Limits under the node's YAML
// keys. A zero field means unlimited; a zero burst equals the rate.
type Limits struct {
	ConnectionsPerMinute     int64 `yaml:"connections_per_minute,omitempty"`
	ConnectionBurst          int64 `yaml:"connection_burst,omitempty"`
	MessagesPerMinute        int64 `yaml:"messages_per_minute,omitempty"`
	MessageBurst             int64 `yaml:"message_burst,omitempty"`
	BytesPerMinute           int64 `yaml:"bytes_per_minute,omitempty"`
	ByteBurst                int64 `yaml:"byte_burst,omitempty"`
	MaxConcurrentConnections int64 `yaml:"max_concurrent_connections,omitempty"`
	MaxMessageSize           int64 `yaml:"max_message_size,omitempty"`
	// MessageScope is "connection" (the default) or "client".
	MessageScope string `yaml:"message_scope,omitempty"`
}

// LimitsOf returns l as the document's Limits, the inverse of
// Limits.Limiter.
func LimitsOf(l limiter.Limits) Limits {
	scope := ""
	if l.MessageScope == limiter.PerClient {
		scope = "client"
	}
	return Limits{
		ConnectionsPerMinute:     l.ConnectionsPerMinute,
		ConnectionBurst:          l.ConnectionBurst,
		MessagesPerMinute:        l.MessagesPerMinute,
		MessageBurst:             l.MessageBurst,
		BytesPerMinute:           l.BytesPerMinute,
		ByteBurst:                l.ByteBurst,
		MaxConcurrentConnections: l.MaxConcurrentConnections,
		MaxMessageSize:           l.MaxMessageSize,
		MessageScope:             scope,
	}
}

// Limiter returns l as limiter.Limits. An unknown MessageScope (which
// Validate refuses) is returned as PerConnection.
func (l Limits) Limiter() limiter.Limits {
	scope := limiter.PerConnection
	if l.MessageScope == "client" {
		scope = limiter.PerClient
	}
	return limiter.Limits{
		ConnectionsPerMinute:     l.ConnectionsPerMinute,
		ConnectionBurst:          l.ConnectionBurst,
		MessagesPerMinute:        l.MessagesPerMinute,
		MessageBurst:             l.MessageBurst,
		BytesPerMinute:           l.BytesPerMinute,
		ByteBurst:                l.ByteBurst,
		MaxConcurrentConnections: l.MaxConcurrentConnections,
		MaxMessageSize:           l.MaxMessageSize,
		MessageScope:             scope,
	}
}

// Rate is one token bucket: Rate tokens refill evenly over Per and the
// bucket holds at most Burst. A zero Rate means unlimited, a zero Burst
// equals Rate and a zero Per is one minute.
type Rate struct {
	Rate  int64         `yaml:"rate,omitempty"`
	Burst int64         `yaml:"burst,omitempty"`
	Per   time.Duration `yaml:"per,omitempty"`
}

// Spec returns the rate as a limiter.Spec.
func (r Rate) Spec() limiter.Spec {
	return limiter.Spec{Limit: r.Rate, Per: r.Per, Burst: r.Burst}
}

// Class is a message class: what one message of the class costs, and the
// buckets it is taken from. The rate, burst and per written directly under
// the class are its bucket per connection; User, Address and Room add a
// bucket per signed-in user (across their connections and nodes), per
// client address (signed in or not) and per room (all members together).
// Every bucket that is set must allow the message: the layers apply at
// once.
type Class struct {
	// Cost is the tokens one message takes from each of the class's
	// buckets. Zero means 1.
	Cost int64 `yaml:"cost,omitempty"`
	// Connection is the bucket per connection, written inline.
	Connection Rate  `yaml:",inline"`
	User       *Rate `yaml:"user,omitempty"`
	Address    *Rate `yaml:"address,omitempty"`
	Room       *Rate `yaml:"room,omitempty"`
}

// Tier is a named limit set. What it does not set is the document's.
type Tier struct {
	// Limits, if set, replace the document's Limits for the tier.
	Limits *Limits `yaml:"limits,omitempty"`
	// Classes replace the document's class entries of the same name for
	// the tier, as a whole: the buckets of every layer, and the cost if the
	// entry sets one. Every name must be a class of the document.
	Classes map[string]Class `yaml:"classes,omitempty"`
}

// Room is the rule of the rooms its pattern names: the room limits the
// handler knows, under the node's YAML keys, and per-class room buckets
// that replace the classes' Room layer in these rooms.
type Room struct {
	MaxMembers              int64 `yaml:"max_members,omitempty"`
	MessagesPerMinute       int64 `yaml:"messages_per_minute,omitempty"`
	MessageBurst            int64 `yaml:"message_burst,omitempty"`
	MemberMessagesPerMinute int64 `yaml:"member_messages_per_minute,omitempty"`
	MemberMessageBurst      int64 `yaml:"member_message_burst,omitempty"`
	MaxMessageSize          int64 `yaml:"max_message_size,omitempty"`
	// Classes are room buckets per class name for the matching rooms.
	Classes map[string]Rate `yaml:"classes,omitempty"`
}
