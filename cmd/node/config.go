package main

import (
	"errors"
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
	"github.com/ratethrottle/ratethrottle/pkg/policy"
)

// Config is the node's resolved configuration. Every field is declared once,
// as a setting in settings.go, which gives it its flag, environment variable,
// YAML key and default: the comments here do not repeat the defaults, which
// --help shows from that table.
type Config struct {
	// Listen is the public HTTP listen address (host:port): the chat page
	// and its assets, /ws, /healthz and /readyz.
	Listen string
	// OpsListen is the operations HTTP listen address: /metrics, /stats,
	// /dashboard, /dashboard/ws and /admin/*, besides /healthz and /readyz.
	// Empty turns the operations endpoints off.
	OpsListen string
	// HTTP holds the timeouts and header limit of both listeners.
	HTTP HTTPConfig
	// NodeID is the node's ID, unique in the cluster; only letters, digits,
	// '-' and '_'. Empty means ResolvedNodeID derives one from
	// the host name and the Listen port.
	NodeID string
	// DataDir is the directory of the embedded NATS server's JetStream
	// data; each node stores under DataDir/<node ID>.
	DataDir string
	// ShutdownTimeout bounds a graceful shutdown.
	ShutdownTimeout time.Duration

	// NATS is how to reach an external NATS cluster; with no URLs the node
	// starts an embedded server configured by Embedded.
	NATS NATSConfig
	// Embedded configures the embedded NATS server, used when NATS.URLs is
	// empty.
	Embedded EmbeddedConfig

	// KVBucket is the JetStream KV bucket of the limiter's shared state;
	// the room and ban buckets are named after it with "_rooms" and "_bans"
	// appended.
	KVBucket string
	// KVReplicas is the KV replica count. 0 means 1, or with
	// an embedded cluster one per server up to 3; see Replicas.
	KVReplicas int

	// Preset names the limiter preset the limits start from: "default",
	// "strict", "moderate" or "generous".
	Preset string
	// LimitFields are the limit fields set explicitly, keyed by setting
	// name without "limits." (such as "messages_per_minute"); they override
	// the preset's values.
	LimitFields map[string]int64
	// MessageScope selects message and byte buckets per connection
	// ("connection") or per client ("client").
	MessageScope limiter.Scope
	// Rooms are the room rules of the deprecated rooms setting, by pattern.
	// They become the rooms section of a Policy that has none (or of the
	// node's own policy when none is configured).
	Rooms map[string]policy.Room

	// Consistency is the cluster consistency mode of the shared buckets
	// when ConsistencyAuto is false.
	Consistency kvstore.Mode
	// ConsistencyConnections, when not nil, overrides the mode of the
	// connection-rate buckets.
	ConsistencyConnections *kvstore.Mode
	// ConsistencyAuto makes Modes pick the mode: local for a lone embedded
	// node, global otherwise. It is set by consistency "auto".
	ConsistencyAuto bool
	// FailMode is what the limiter does while NATS is unreachable: each
	// node enforces the full limit ("open"), the limit divided
	// by the live nodes ("share"), or denies ("closed").
	FailMode kvstore.FailMode
	// SyncInterval is how often global-mode consumption is flushed to the
	// cluster.
	SyncInterval time.Duration

	// EventPrefix is the NATS subject prefix of violation events, bans,
	// room messages and stats requests.
	EventPrefix string
	// Policy is the policy document of the YAML's policy section or of
	// PolicyFile; nil when neither is set, and the node's limits apply
	// until the cluster holds a policy.
	Policy *policy.Document
	// PolicyFile is the file Policy is read from.
	PolicyFile string
	// Identity says who a connection is: a user with a verified JWT, else
	// its address.
	Identity IdentityConfig
	// CheckConfig is the file --check-config names: the node validates
	// its configuration and exits instead of starting.
	CheckConfig string
	// AdminToken is the bearer token of the admin API (/admin/bans), at
	// least MinAdminTokenLen bytes; empty disables the API.
	// After loading it holds the token read from AdminTokenFile, if set.
	AdminToken string
	// AdminTokenFile is the path of a file holding AdminToken, so that the
	// token need not appear on the command line; trailing line breaks are
	// dropped.
	AdminTokenFile string

	// AutoBanThreshold is the number of violations within AutoBanWindow
	// that bans a client; 0 turns automatic bans off.
	AutoBanThreshold int64
	// AutoBanWindow is the window AutoBanThreshold counts over.
	AutoBanWindow time.Duration
	// AutoBanDuration is how long an automatic ban lasts.
	AutoBanDuration time.Duration

	// RejectWithClose makes a refused connection upgrade and then close
	// with 1008 and the reason instead of getting an HTTP status, for
	// browsers that cannot read a 429.
	RejectWithClose bool
	// MaxDenials is the number of denials within a minute after which a
	// connection is closed. 0 means 10; negative never
	// closes.
	MaxDenials int
	// TrustedProxies are the networks whose X-Forwarded-For and X-Real-IP
	// headers are believed when naming a request's client.
	TrustedProxies []netip.Prefix
	// IPv6PrefixLen is the length in bits of the IPv6 prefix that names a
	// client (wshandler.Config.IPv6PrefixLen): limits and bans apply to the
	// whole prefix; 128 means per address.
	IPv6PrefixLen int

	// LogLevel is the log level: "debug", "info", "warn" or
	// "error".
	LogLevel string
	// LogFormat is the log format: "text" or "json".
	LogFormat string
}

// HTTPConfig bounds the HTTP connections of both listeners. WebSocket
// routes are exempt from ReadTimeout and WriteTimeout: a WebSocket lives as
// long as its connection.
type HTTPConfig struct {
	// ReadHeaderTimeout bounds reading a request's headers.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request, body included, on
	// routes other than WebSockets; 0 means none.
	ReadTimeout time.Duration
	// WriteTimeout bounds writing a response on routes other than
	// WebSockets; 0 means none.
	WriteTimeout time.Duration
	// IdleTimeout closes a keep-alive connection idle for this long.
	IdleTimeout time.Duration
	// MaxHeaderBytes caps a request's header block.
	MaxHeaderBytes int
}

// NATSConfig is how the node reaches an external NATS cluster. With no URLs
// the node starts its own embedded server.
type NATSConfig struct {
	// URLs are the external NATS server URLs; empty starts
	// an embedded server.
	URLs []string
	// User and Password authenticate with a user name and password; a
	// Password needs a User.
	User     string
	Password string
	// Token is an authentication token, used instead of User and Password.
	Token string
	// Creds is the path of a credentials file (JWT and NKey seed).
	Creds string
	// TLSCA is the path of the CA certificate file that signs the NATS
	// servers' certificates.
	TLSCA string
	// TLSCert and TLSKey are the paths of the client certificate and key
	// files for NATS TLS; set both or neither.
	TLSCert string
	TLSKey  string
}

// EmbeddedConfig configures the embedded NATS server.
type EmbeddedConfig struct {
	// Listen is the host:port of the embedded server's client listener;
	// port 0 picks any free port and an empty host listens on every
	// interface.
	Listen string
	// ClusterName is the cluster name of the embedded servers, used when
	// ClusterListen is set.
	ClusterName string
	// ClusterListen is the host:port of the embedded server's route
	// listener; setting it clusters the node.
	ClusterListen string
	// Routes are the route URLs (nats-route://host:port) of the other
	// nodes' embedded servers; a route to ClusterListen itself is skipped.
	// They need ClusterListen.
	Routes []string
}

// errInvalidConfig is what every configuration error of the node unwraps
// to: a *limiter.FieldError (the module's one configuration error) whose
// Field is the setting's YAML key (such as "limits.preset", "limits" for
// the limits as a whole, "config" for the file, "arguments", or the name
// of an unknown environment variable), whose Source says where the value
// came from ("flag --listen", "env RATETHROTTLE_LISTEN", "yaml PATH"; empty
// for a default or a combination) and whose Value is "(hidden)" for a
// secret.
var errInvalidConfig = errors.New("invalid configuration")

// configError returns the node's error for the setting key.
func configError(key, source string, value any, reason string) *limiter.FieldError {
	return &limiter.FieldError{Field: key, Source: source, Value: value, Reason: reason, Err: errInvalidConfig}
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

// presetNames are the names limiter.Preset knows, in order of strictness
// after the default.
var presetNames = []string{"default", "strict", "moderate", "generous"}

// presetUsage describes the limits.preset setting with every preset's
// values, read from the limiter, so that the help cannot drift from them.
func presetUsage() string {
	var b strings.Builder
	b.WriteString("limits preset, whose fields the limits.* settings override one by one (0: unlimited; a burst not shown equals its rate)")
	for _, name := range presetNames {
		l, _ := limiter.Preset(name)
		fmt.Fprintf(&b, "\n  %-8s", name)
		for _, lf := range limitFields {
			if v := *limitField(&l, lf.name); v != 0 || !strings.HasSuffix(lf.name, "_burst") {
				fmt.Fprintf(&b, " %s=%d", lf.name, v)
			}
		}
	}
	return b.String()
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
		return configError(key, src(key), value, reason)
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
	if err := c.resolveAdminToken(bad); err != nil {
		return err
	}
	if err := c.validateIdentity(bad); err != nil {
		return err
	}
	if err := c.resolvePolicy(bad); err != nil {
		return err
	}
	if err := c.resolveRooms(src); err != nil {
		return err
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

// MinAdminTokenLen is the shortest admin token the node accepts, in bytes.
const MinAdminTokenLen = 16

// resolveAdminToken reads AdminTokenFile into AdminToken and refuses a
// token too short to resist guessing.
func (c *Config) resolveAdminToken(bad func(key, value, reason string) error) error {
	key := "admin_token"
	if c.AdminTokenFile != "" {
		key = "admin_token_file"
		if c.AdminToken != "" {
			return bad(key, c.AdminTokenFile, "set either admin_token or admin_token_file, not both")
		}
		b, err := os.ReadFile(c.AdminTokenFile)
		if err != nil {
			return bad(key, c.AdminTokenFile, "cannot read the file: "+err.Error())
		}
		c.AdminToken = strings.TrimRight(string(b), "\r\n")
		if c.AdminToken == "" {
			return bad(key, c.AdminTokenFile, "the file holds no token")
		}
	}
	if c.AdminToken != "" && len(c.AdminToken) < MinAdminTokenLen {
		value := "(hidden)"
		if key == "admin_token_file" {
			value = c.AdminTokenFile
		}
		return bad(key, value, fmt.Sprintf("the admin token has %d bytes; it needs at least %d so that it cannot be guessed (make one with: openssl rand -hex 16)", len(c.AdminToken), MinAdminTokenLen))
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
