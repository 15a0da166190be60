package main

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/ratethrottle/ratethrottle/pkg/kvstore"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
	"github.com/ratethrottle/ratethrottle/pkg/policy"
)

// envPrefix starts the name of every environment variable the node reads.
const envPrefix = "RATETHROTTLE_"

// setting is one configuration value. Its key is the YAML key (dots nest);
// the flag is the key with dots and underscores turned into dashes unless
// flag says otherwise, and the environment variable is envPrefix and the key
// in upper case with dots turned into underscores.
type setting struct {
	key  string
	flag string
	// def is the default, in the text form set parses: the one statement
	// of each default, which --help shows.
	def   string
	usage string
	// typ names the value's type in --help ("duration", "host:port").
	typ string
	// secret hides the value in error messages.
	secret bool
	set    func(c *Config, v string) error
}

// Flag returns the setting's command-line flag name.
func (s setting) Flag() string {
	if s.flag != "" {
		return s.flag
	}
	return strings.NewReplacer(".", "-", "_", "-").Replace(s.key)
}

// Env returns the setting's environment variable.
func (s setting) Env() string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(s.key, ".", "_"))
}

// settings declares every setting of the node once.
var settings = buildSettings()

func buildSettings() []setting {
	s := []setting{
		str("listen", ":8080", "public HTTP listen address (chat page, /ws, /healthz, /readyz)", func(c *Config) *string { return &c.Listen }),
		hostPort("ops_listen", "127.0.0.1:9000", "operations HTTP listen address (/metrics, /stats, /dashboard, /admin); empty turns it off", func(c *Config) *string { return &c.OpsListen }),
		dur("http.read_header_timeout", "5s", "time to read a request's headers, on both listeners", func(c *Config) *time.Duration { return &c.HTTP.ReadHeaderTimeout }),
		dur("http.read_timeout", "10s", "time to read a whole request, body included, except on WebSocket routes", func(c *Config) *time.Duration { return &c.HTTP.ReadTimeout }),
		dur("http.write_timeout", "10s", "time to write a response, except on WebSocket routes", func(c *Config) *time.Duration { return &c.HTTP.WriteTimeout }),
		dur("http.idle_timeout", "60s", "how long an idle keep-alive connection stays open", func(c *Config) *time.Duration { return &c.HTTP.IdleTimeout }),
		num("http.max_header_bytes", "16384", "largest request header block in bytes", func(c *Config) *int { return &c.HTTP.MaxHeaderBytes }),
		str("node_id", "", "node ID, unique in the cluster (default: host name and HTTP port)", func(c *Config) *string { return &c.NodeID }),
		typed("dir", str("data_dir", "./data", "directory of the embedded NATS server's JetStream data (one subdirectory per node ID)", func(c *Config) *string { return &c.DataDir })),
		dur("shutdown_timeout", "10s", "how long a graceful shutdown may take", func(c *Config) *time.Duration { return &c.ShutdownTimeout }),

		list("nats.url", "", "external NATS server URLs, comma-separated; empty starts an embedded server", func(c *Config) *[]string { return &c.NATS.URLs }),
		str("nats.user", "", "NATS user name", func(c *Config) *string { return &c.NATS.User }),
		secret(str("nats.password", "", "NATS password", func(c *Config) *string { return &c.NATS.Password })),
		secret(str("nats.token", "", "NATS authentication token", func(c *Config) *string { return &c.NATS.Token })),
		typed("file", str("nats.creds", "", "NATS credentials file (JWT and NKey seed)", func(c *Config) *string { return &c.NATS.Creds })),
		typed("file", str("nats.tls_ca", "", "CA certificate file that signs the NATS servers' certificates", func(c *Config) *string { return &c.NATS.TLSCA })),
		typed("file", str("nats.tls_cert", "", "client certificate file for NATS TLS", func(c *Config) *string { return &c.NATS.TLSCert })),
		typed("file", str("nats.tls_key", "", "client key file for NATS TLS", func(c *Config) *string { return &c.NATS.TLSKey })),

		hostPort("nats.listen", "127.0.0.1:4222", "client address of the embedded NATS server (port 0: any free port)", func(c *Config) *string { return &c.Embedded.Listen }),
		str("cluster.name", "ratethrottle", "cluster name of the embedded NATS servers", func(c *Config) *string { return &c.Embedded.ClusterName }),
		withFlag("cluster-listen", hostPort("cluster.listen", "", "route address of the embedded NATS server; set it to cluster nodes", func(c *Config) *string { return &c.Embedded.ClusterListen })),
		withFlag("routes", list("cluster.routes", "", "routes to the other nodes' embedded servers, comma-separated (nats-route://host:port)", func(c *Config) *[]string { return &c.Embedded.Routes })),

		typed("file", str("identity.jwt_secret_file", "", "file holding the HMAC secret (at least 32 bytes) of users' JWTs (HS256/384/512); a connection with a valid token (Authorization: Bearer, or ?token=) is limited as user:<sub>, one without as its address, and a bad token is refused", func(c *Config) *string { return &c.Identity.SecretFile })),
		typed("file", str("identity.jwt_public_key_file", "", "PEM file of the RSA or ECDSA public keys of users' JWTs", func(c *Config) *string { return &c.Identity.PublicKeyFile })),
		typed("file", str("identity.jwks_file", "", "JSON Web Key Set file of users' JWTs", func(c *Config) *string { return &c.Identity.JWKSFile })),
		str("identity.tier_claim", "tier", "JWT claim naming the user's tier (a tier of the policy)", func(c *Config) *string { return &c.Identity.TierClaim }),
		boolean("identity.demo_tokens", "false", "development only: serve /demo-token?user=NAME&tier=TIER on the public listener, signing with a secret made at start-up (anyone can sign in as anyone); refused unless listen is a loopback address", func(c *Config) *bool { return &c.Identity.DemoTokens }),
		withFlag("policy", typed("file", str("policy_file", "", "file holding the policy document (limits, classes, tiers, rooms; see docs/POLICY.md), instead of the YAML's policy section; the cluster's stored policy replaces it once read", func(c *Config) *string { return &c.PolicyFile }))),

		str("kv.bucket", "ratethrottle", "JetStream KV bucket of the limiter's shared state", func(c *Config) *string { return &c.KVBucket }),
		num("kv.replicas", "0", "KV replicas (0: 1, or up to 3 with an embedded cluster)", func(c *Config) *int { return &c.KVReplicas }),

		{key: "limits.preset", typ: "preset", def: "moderate", usage: presetUsage(), set: func(c *Config, v string) error {
			if _, ok := limiter.Preset(v); !ok {
				return errors.New("unknown preset (want " + strings.Join(presetNames, ", ") + ")")
			}
			c.Preset = v
			return nil
		}},
		{key: "limits.message_scope", typ: "scope", def: "connection", usage: "message and byte buckets per connection or per client", set: func(c *Config, v string) error {
			switch v {
			case "connection":
				c.MessageScope = limiter.PerConnection
			case "client":
				c.MessageScope = limiter.PerClient
			default:
				return errors.New("want connection or client")
			}
			return nil
		}},
		{key: roomsKey, typ: "rules", def: "*:member_messages_per_minute=30,member_message_burst=10", usage: "deprecated: write room rules in the policy's rooms section (docs/POLICY.md); this setting gives them to a policy that has none. PATTERN:FIELD=N,FIELD=N;PATTERN:... ('*' alone: every other room; fields: " + strings.Join(roomFieldNames(), ", ") + "); in YAML also a mapping as in the policy", set: setRooms},

		{key: "consistency", typ: "mode", def: "auto", usage: "cluster consistency of shared buckets: auto, local, global or strict (auto: local for a lone embedded node, else global)", set: func(c *Config, v string) error {
			if v == "auto" {
				c.ConsistencyAuto = true
				return nil
			}
			m, err := parseMode(v)
			c.Consistency, c.ConsistencyAuto = m, false
			return err
		}},
		{key: "consistency_connections", typ: "mode", def: "", usage: "consistency of the connection-rate buckets: local, global or strict (empty: as consistency)", set: func(c *Config, v string) error {
			if v == "" {
				c.ConsistencyConnections = nil
				return nil
			}
			m, err := parseMode(v)
			c.ConsistencyConnections = &m
			return err
		}},
		{key: "fail_mode", typ: "mode", def: "open", usage: "while NATS is unreachable: open (each node enforces the full limit), share (limit divided by live nodes) or closed (deny)", set: func(c *Config, v string) error {
			switch v {
			case "open":
				c.FailMode = kvstore.FailOpenLocal
			case "share":
				c.FailMode = kvstore.FailLocalShare
			case "closed":
				c.FailMode = kvstore.FailClosed
			default:
				return errors.New("want open, share or closed")
			}
			return nil
		}},
		dur("sync_interval", "50ms", "how often global-mode consumption is flushed to the cluster", func(c *Config) *time.Duration { return &c.SyncInterval }),

		str("events.prefix", "ratethrottle", "subject prefix of violation events, bans, room messages and stats requests", func(c *Config) *string { return &c.EventPrefix }),
		secret(str("admin_token", "", "bearer token of the admin API (/admin/bans), at least 16 bytes; empty disables the API", func(c *Config) *string { return &c.AdminToken })),
		typed("file", str("admin_token_file", "", "file holding the admin API's bearer token (keeps it out of the process list); trailing newlines are ignored", func(c *Config) *string { return &c.AdminTokenFile })),

		num64("autoban.threshold", "0", "violations within autoban.window that ban a client (0: no automatic bans)", func(c *Config) *int64 { return &c.AutoBanThreshold }),
		dur("autoban.window", "1m", "window of autoban.threshold", func(c *Config) *time.Duration { return &c.AutoBanWindow }),
		dur("autoban.duration", "10m", "how long an automatic ban lasts", func(c *Config) *time.Duration { return &c.AutoBanDuration }),

		boolean("reject_with_close", "true", "refuse connections by upgrading and closing with 1008 and the reason (browsers cannot read a 429)", func(c *Config) *bool { return &c.RejectWithClose }),
		{key: "max_denials", typ: "int", def: "0", usage: "denials within a minute after which a connection is closed (0: 10, negative: never)", set: func(c *Config, v string) error {
			n, err := strconv.Atoi(v)
			if err != nil {
				return errors.New("not an integer")
			}
			c.MaxDenials = n
			return nil
		}},
		{key: "trusted_proxies", typ: "cidrs", def: "", usage: "networks (CIDR, comma-separated) whose X-Forwarded-For is believed", set: func(c *Config, v string) error {
			c.TrustedProxies = nil
			for _, p := range splitList(v) {
				pfx, err := netip.ParsePrefix(p)
				if err != nil {
					return fmt.Errorf("%q is not a CIDR network", p)
				}
				c.TrustedProxies = append(c.TrustedProxies, pfx)
			}
			return nil
		}},
		{key: "ipv6_prefix", typ: "bits", def: "64", usage: "length in bits of the IPv6 prefix that names a client, for limits and bans (128: per address)", set: func(c *Config, v string) error {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 128 {
				return errors.New("want a prefix length from 1 to 128")
			}
			c.IPv6PrefixLen = n
			return nil
		}},

		enum("log.level", "info", "log level", []string{"debug", "info", "warn", "error"}, func(c *Config) *string { return &c.LogLevel }),
		enum("log.format", "text", "log format", []string{"text", "json"}, func(c *Config) *string { return &c.LogFormat }),
	}
	for _, lf := range limitFields {
		name := lf.name
		s = append(s, setting{key: "limits." + name, typ: "int", usage: lf.usage + " (default: the preset's)", set: func(c *Config, v string) error {
			if v == "" {
				delete(c.LimitFields, name)
				return nil
			}
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return errors.New("not an integer")
			}
			if n < 0 {
				return errors.New("must not be negative (0 means unlimited)")
			}
			c.LimitFields[name] = n
			return nil
		}})
	}
	return s
}

func str(key, def, usage string, p func(*Config) *string) setting {
	return setting{key: key, def: def, usage: usage, typ: "string", set: func(c *Config, v string) error { *p(c) = v; return nil }}
}

func secret(s setting) setting { s.secret = true; return s }

func withFlag(name string, s setting) setting { s.flag = name; return s }

// typed gives s the type name typ, for a value more specific than its
// constructor's (a file rather than a string).
func typed(typ string, s setting) setting { s.typ = typ; return s }

func enum(key, def, usage string, values []string, p func(*Config) *string) setting {
	return setting{key: key, def: def, usage: usage + ": " + strings.Join(values, ", "), typ: "name", set: func(c *Config, v string) error {
		for _, ok := range values {
			if v == ok {
				*p(c) = v
				return nil
			}
		}
		return fmt.Errorf("want one of %s", strings.Join(values, ", "))
	}}
}

func hostPort(key, def, usage string, p func(*Config) *string) setting {
	return setting{key: key, def: def, usage: usage, typ: "host:port", set: func(c *Config, v string) error {
		if v != "" {
			if _, _, err := parseHostPort(v); err != nil {
				return err
			}
		}
		*p(c) = v
		return nil
	}}
}

func num(key, def, usage string, p func(*Config) *int) setting {
	return setting{key: key, def: def, usage: usage, typ: "int", set: func(c *Config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil {
			return errors.New("not an integer")
		}
		if n < 0 {
			return errors.New("must not be negative")
		}
		*p(c) = n
		return nil
	}}
}

func num64(key, def, usage string, p func(*Config) *int64) setting {
	return setting{key: key, def: def, usage: usage, typ: "int", set: func(c *Config, v string) error {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return errors.New("not an integer")
		}
		if n < 0 {
			return errors.New("must not be negative")
		}
		*p(c) = n
		return nil
	}}
}

func dur(key, def, usage string, p func(*Config) *time.Duration) setting {
	return setting{key: key, def: def, usage: usage, typ: "duration", set: func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil {
			return errors.New("not a duration (such as 500ms, 10s, 5m)")
		}
		if d < 0 {
			return errors.New("must not be negative")
		}
		*p(c) = d
		return nil
	}}
}

func boolean(key, def, usage string, p func(*Config) *bool) setting {
	return setting{key: key, def: def, usage: usage, typ: "bool", set: func(c *Config, v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return errors.New("want true or false")
		}
		*p(c) = b
		return nil
	}}
}

func list(key, def, usage string, p func(*Config) *[]string) setting {
	return setting{key: key, def: def, usage: usage, typ: "list", set: func(c *Config, v string) error {
		*p(c) = splitList(v)
		return nil
	}}
}

func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func parseMode(v string) (kvstore.Mode, error) {
	switch v {
	case "local":
		return kvstore.Local, nil
	case "global":
		return kvstore.Global, nil
	case "strict":
		return kvstore.Strict, nil
	}
	return 0, errors.New("want local, global or strict")
}

// roomFields are the limit fields of a room rule, by their YAML keys (those
// of the policy's rooms section).
var roomFields = []struct {
	name string
	p    func(*policy.Room) *int64
}{
	{"max_members", func(r *policy.Room) *int64 { return &r.MaxMembers }},
	{"messages_per_minute", func(r *policy.Room) *int64 { return &r.MessagesPerMinute }},
	{"message_burst", func(r *policy.Room) *int64 { return &r.MessageBurst }},
	{"member_messages_per_minute", func(r *policy.Room) *int64 { return &r.MemberMessagesPerMinute }},
	{"member_message_burst", func(r *policy.Room) *int64 { return &r.MemberMessageBurst }},
	{"max_message_size", func(r *policy.Room) *int64 { return &r.MaxMessageSize }},
}

func roomFieldNames() []string {
	names := make([]string, len(roomFields))
	for i, f := range roomFields {
		names[i] = f.name
	}
	return names
}

// setRooms parses the deprecated rooms setting's text form,
// PATTERN:FIELD=N,FIELD=N;PATTERN:..., into room rules of the policy.
func setRooms(c *Config, v string) error {
	c.Rooms = nil
	for _, rule := range strings.Split(v, ";") {
		rule = strings.TrimSpace(rule)
		if rule == "" {
			continue
		}
		i := strings.LastIndex(rule, ":")
		if i <= 0 {
			return fmt.Errorf("rule %q: want PATTERN:FIELD=N[,FIELD=N]", rule)
		}
		var r policy.Room
		for _, kv := range splitList(rule[i+1:]) {
			name, val, ok := strings.Cut(kv, "=")
			if !ok {
				return fmt.Errorf("rule %q: %q is not FIELD=N", rule, kv)
			}
			var p *int64
			for _, f := range roomFields {
				if f.name == strings.TrimSpace(name) {
					p = f.p(&r)
				}
			}
			if p == nil {
				return fmt.Errorf("rule %q: unknown field %q (want %s)", rule, name, strings.Join(roomFieldNames(), ", "))
			}
			n, err := strconv.ParseInt(strings.TrimSpace(val), 10, 64)
			if err != nil || n < 0 {
				return fmt.Errorf("rule %q: %s=%q is not a non-negative integer", rule, name, val)
			}
			*p = n
		}
		if c.Rooms == nil {
			c.Rooms = map[string]policy.Room{}
		}
		c.Rooms[strings.TrimSpace(rule[:i])] = r
	}
	return nil
}
