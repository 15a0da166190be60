package main

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/ratethrottle/ratethrottle/pkg/events"
	"github.com/ratethrottle/ratethrottle/pkg/kvstore"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
	"github.com/ratethrottle/ratethrottle/pkg/wshandler"
)

// Config is the node's resolved configuration. Every field is declared once,
// as a setting in settings.go, which gives it its flag, environment variable,
// YAML key and default.
type Config struct {
	Listen          string
	NodeID          string
	DataDir         string
	ShutdownTimeout time.Duration

	NATS     NATSConfig
	Embedded EmbeddedConfig

	KVBucket   string
	KVReplicas int

	Preset string
	// LimitFields are the limit fields set explicitly; they override the
	// preset's values.
	LimitFields  map[string]int64
	MessageScope limiter.Scope
	Rooms        []RoomRule

	Consistency            kvstore.Mode
	ConsistencyConnections *kvstore.Mode
	ConsistencyAuto        bool
	FailMode               kvstore.FailMode
	SyncInterval           time.Duration

	EventPrefix string
	AdminToken  string

	AutoBanThreshold int64
	AutoBanWindow    time.Duration
	AutoBanDuration  time.Duration

	RejectWithClose bool
	MaxDenials      int
	TrustedProxies  []netip.Prefix

	LogLevel  string
	LogFormat string
}

// NATSConfig is how the node reaches an external NATS cluster. With no URLs
// the node starts its own embedded server.
type NATSConfig struct {
	URLs     []string
	User     string
	Password string
	Token    string
	Creds    string
	TLSCA    string
	TLSCert  string
	TLSKey   string
}

// EmbeddedConfig configures the embedded NATS server.
type EmbeddedConfig struct {
	Listen        string
	ClusterName   string
	ClusterListen string
	Routes        []string
}

// RoomRule gives the rooms named Pattern their limits. A Pattern of "*"
// sets the limits of every room no other rule names.
type RoomRule struct {
	Pattern string
	Limits  wshandler.RoomLimits
}

// ConfigError reports an invalid setting: the setting's key, where its value
// came from, the value and why it is rejected.
type ConfigError struct {
	Key    string
	Source string
	Value  string
	Reason string
}

// Error implements error.
func (e *ConfigError) Error() string {
	src := ""
	if e.Source != "" {
		src = " (" + e.Source + ")"
	}
	return fmt.Sprintf("invalid configuration: %s%s = %q: %s", e.Key, src, e.Value, e.Reason)
}

// Limits returns the limits of the preset with the explicitly set fields
// applied.
func (c *Config) Limits() limiter.Limits {
	l, _ := limiter.Preset(c.Preset)
	for name, v := range c.LimitFields {
		*limitField(&l, name) = v
	}
	l.MessageScope = c.MessageScope
	return l
}

// limitFields maps the setting names of limits to their Limits fields.
var limitFields = []struct {
	name  string
	field string
	usage string
}{
	{"connections_per_minute", "ConnectionsPerMinute", "new connections a minute per client"},
	{"connection_burst", "ConnectionBurst", "connection bucket capacity (0: the rate)"},
	{"messages_per_minute", "MessagesPerMinute", "messages a minute per connection or client"},
	{"message_burst", "MessageBurst", "message bucket capacity (0: the rate)"},
	{"bytes_per_minute", "BytesPerMinute", "payload bytes a minute per connection or client"},
	{"byte_burst", "ByteBurst", "byte bucket capacity (0: the rate)"},
	{"max_concurrent_connections", "MaxConcurrentConnections", "open connections per client, cluster-wide"},
	{"max_message_size", "MaxMessageSize", "largest message in bytes"},
}

func limitField(l *limiter.Limits, name string) *int64 {
	switch name {
	case "connections_per_minute":
		return &l.ConnectionsPerMinute
	case "connection_burst":
		return &l.ConnectionBurst
	case "messages_per_minute":
		return &l.MessagesPerMinute
	case "message_burst":
		return &l.MessageBurst
	case "bytes_per_minute":
		return &l.BytesPerMinute
	case "byte_burst":
		return &l.ByteBurst
	case "max_concurrent_connections":
		return &l.MaxConcurrentConnections
	case "max_message_size":
		return &l.MaxMessageSize
	}
	panic("unknown limit field " + name)
}

// EmbeddedNATS reports whether the node runs its own NATS server.
func (c *Config) EmbeddedNATS() bool { return len(c.NATS.URLs) == 0 }

// Clustered reports whether the embedded server routes to other nodes.
func (c *Config) Clustered() bool { return c.EmbeddedNATS() && c.Embedded.ClusterListen != "" }

// Replicas returns the KV replica count: the configured one, or, when the
// embedded servers form a cluster, one per server up to three.
func (c *Config) Replicas() int {
	if c.KVReplicas > 0 || !c.Clustered() {
		return max(c.KVReplicas, 1)
	}
	n := 1
	for _, r := range c.Embedded.Routes {
		if !sameHostPort(r, c.Embedded.ClusterListen) {
			n++
		}
	}
	return min(n, 3)
}

// Modes returns the default consistency mode and the per-kind modes.
func (c *Config) Modes() (kvstore.Mode, map[limiter.Kind]kvstore.Mode) {
	def := c.Consistency
	if c.ConsistencyAuto {
		def = kvstore.Global
		if c.EmbeddedNATS() && !c.Clustered() {
			def = kvstore.Local
		}
	}
	var modes map[limiter.Kind]kvstore.Mode
	if c.ConsistencyConnections != nil {
		modes = map[limiter.Kind]kvstore.Mode{limiter.KindConnectionRate: *c.ConsistencyConnections}
	}
	return def, modes
}

// ResolvedNodeID returns the node ID, or one made of the host name and the
// listen port, stable across restarts, when none is configured.
func (c *Config) ResolvedNodeID() string {
	if c.NodeID != "" {
		return c.NodeID
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "node"
	}
	_, port, _ := net.SplitHostPort(c.Listen)
	id := host + "-" + port
	return sanitizeID(id)
}

// sanitizeID keeps the characters a NATS server name and a KV key accept.
func sanitizeID(s string) string {
	b := []byte(s)
	for i, ch := range b {
		ok := ch == '-' || ch == '_' || ch >= '0' && ch <= '9' || ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z'
		if !ok {
			b[i] = '_'
		}
	}
	return string(b)
}

// validate checks what single settings cannot: combinations, and the
// limits as a whole.
func (c *Config) validate(src func(key string) string) error {
	bad := func(key, value, reason string) error {
		return &ConfigError{Key: key, Source: src(key), Value: value, Reason: reason}
	}
	if c.NodeID != "" && sanitizeID(c.NodeID) != c.NodeID {
		return bad("node_id", c.NodeID, "use only letters, digits, '-' and '_'")
	}
	if !c.EmbeddedNATS() {
		if c.Embedded.ClusterListen != "" {
			return bad("cluster.listen", c.Embedded.ClusterListen, "the embedded cluster cannot be used with nats.url")
		}
		if len(c.Embedded.Routes) > 0 {
			return bad("cluster.routes", strings.Join(c.Embedded.Routes, ","), "routes cannot be used with nats.url")
		}
	}
	if len(c.Embedded.Routes) > 0 && c.Embedded.ClusterListen == "" {
		return bad("cluster.routes", strings.Join(c.Embedded.Routes, ","), "routes need cluster.listen")
	}
	if (c.NATS.TLSCert == "") != (c.NATS.TLSKey == "") {
		if c.NATS.TLSCert == "" {
			return bad("nats.tls_cert", "", "nats.tls_key is set without nats.tls_cert")
		}
		return bad("nats.tls_key", "", "nats.tls_cert is set without nats.tls_key")
	}
	if c.NATS.User == "" && c.NATS.Password != "" {
		return bad("nats.user", "", "nats.password is set without nats.user")
	}
	if c.NATS.Token != "" && c.NATS.User != "" {
		return bad("nats.token", "(hidden)", "use either nats.token or nats.user and nats.password")
	}
	for _, f := range []struct{ key, path string }{
		{"nats.creds", c.NATS.Creds}, {"nats.tls_ca", c.NATS.TLSCA},
		{"nats.tls_cert", c.NATS.TLSCert}, {"nats.tls_key", c.NATS.TLSKey},
	} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			return bad(f.key, f.path, "cannot read the file")
		}
	}
	if err := c.Limits().Validate(); err != nil {
		if fe, ok := err.(*limiter.FieldError); ok {
			for _, lf := range limitFields {
				if lf.field == fe.Field {
					key := "limits." + lf.name
					return bad(key, fmt.Sprint(fe.Value), fe.Reason)
				}
			}
		}
		return bad("limits", c.Preset, err.Error())
	}
	if c.AutoBanThreshold > 0 && c.AutoBanWindow <= 0 {
		return bad("autoban.window", c.AutoBanWindow.String(), "must be positive when autoban.threshold is set")
	}
	if err := events.ValidatePrefix(c.EventPrefix); err != nil || c.EventPrefix == "" {
		return bad("events.prefix", c.EventPrefix, "must be dot-separated tokens without spaces or wildcards")
	}
	return nil
}

// sameHostPort reports whether a route URL points at the host:port addr.
func sameHostPort(route, addr string) bool {
	u := route
	if i := strings.Index(u, "://"); i >= 0 {
		u = u[i+3:]
	}
	if i := strings.LastIndex(u, "@"); i >= 0 {
		u = u[i+1:]
	}
	u = strings.TrimSuffix(u, "/")
	h1, p1, err1 := net.SplitHostPort(u)
	h2, p2, err2 := net.SplitHostPort(addr)
	if err1 != nil || err2 != nil || p1 != p2 {
		return false
	}
	norm := func(h string) string {
		if h == "" || h == "0.0.0.0" || h == "::" || h == "localhost" {
			return "127.0.0.1"
		}
		return h
	}
	return norm(h1) == norm(h2)
}

// parseHostPort splits a listen address into a host and a port number.
func parseHostPort(s string) (string, int, error) {
	host, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, fmt.Errorf("want host:port")
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("port must be a number from 0 to 65535")
	}
	return host, port, nil
}
