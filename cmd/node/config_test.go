package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ratethrottle/ratethrottle/pkg/kvstore"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
	"github.com/ratethrottle/ratethrottle/pkg/policy"
	"github.com/ratethrottle/ratethrottle/pkg/wshandler"
)

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigDefaults(t *testing.T) {
	t.Parallel()
	c, err := loadConfig(nil, nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != ":8080" || c.DataDir != "./data" || c.Embedded.Listen != "127.0.0.1:4222" || !c.EmbeddedNATS() {
		t.Errorf("defaults: listen %q data %q nats %q embedded %v", c.Listen, c.DataDir, c.Embedded.Listen, c.EmbeddedNATS())
	}
	if got, want := c.Limits(), limiter.Moderate(); got != want {
		t.Errorf("limits %+v, want the moderate preset %+v", got, want)
	}
	if def, _ := c.Modes(); def != kvstore.Local {
		t.Errorf("a lone embedded node's mode is %v, want local", def)
	}
	if c.Replicas() != 1 || c.AdminToken != "" || !c.RejectWithClose || c.EventPrefix != "ratethrottle" || c.IPv6PrefixLen != wshandler.DefaultIPv6PrefixLen {
		t.Errorf("replicas %d token %q reject %v prefix %q ipv6_prefix %d", c.Replicas(), c.AdminToken, c.RejectWithClose, c.EventPrefix, c.IPv6PrefixLen)
	}
	want := policy.Room{MemberMessagesPerMinute: 30, MemberMessageBurst: 10}
	if len(c.Rooms) != 1 || !reflect.DeepEqual(c.Rooms["*"], want) {
		t.Errorf("rooms %+v, want * %+v", c.Rooms, want)
	}
}

// TestConfigPrecedence sets each value in several places: the flag beats
// the environment, which beats the YAML file, which beats the default.
func TestConfigPrecedence(t *testing.T) {
	t.Parallel()
	yml := writeFile(t, "node.yaml", `
listen: 127.0.0.1:9001
node_id: from-yaml
limits:
  preset: strict
  messages_per_minute: 70
  max_message_size: 2048
events:
  prefix: yaml.prefix
fail_mode: closed
sync_interval: 200ms
ipv6_prefix: 56
rooms:
  lobby: {max_members: 50, messages_per_minute: 600}
  "game-*": {member_messages_per_minute: 20}
nats:
  url: [nats://a:4222, nats://b:4222]
`)
	env := []string{
		"RATETHROTTLE_NODE_ID=from-env",
		"RATETHROTTLE_LIMITS_MESSAGES_PER_MINUTE=80",
		"RATETHROTTLE_EVENTS_PREFIX=env.prefix",
		"RATETHROTTLE_CONFIG=" + yml,
		"UNRELATED=1",
	}
	args := []string{"--node-id", "from-flag", "--limits-messages-per-minute", "90", "--consistency", "strict"}
	c, err := loadConfig(args, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"listen (yaml over default)", c.Listen, "127.0.0.1:9001"},
		{"node_id (flag over env over yaml)", c.NodeID, "from-flag"},
		{"messages_per_minute (flag)", c.Limits().MessagesPerMinute, int64(90)},
		{"max_message_size (yaml field over preset)", c.Limits().MaxMessageSize, int64(2048)},
		{"connections_per_minute (preset from yaml)", c.Limits().ConnectionsPerMinute, limiter.Strict().ConnectionsPerMinute},
		{"events.prefix (env over yaml)", c.EventPrefix, "env.prefix"},
		{"fail_mode (yaml)", c.FailMode, kvstore.FailClosed},
		{"sync_interval (yaml)", c.SyncInterval, 200 * time.Millisecond},
		{"nats.url (yaml list)", strings.Join(c.NATS.URLs, ","), "nats://a:4222,nats://b:4222"},
		{"rooms (yaml mapping)", len(c.Rooms), 2},
		{"ipv6_prefix (yaml)", c.IPv6PrefixLen, 56},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %v, want %v", ch.name, ch.got, ch.want)
		}
	}
	if def, _ := c.Modes(); def != kvstore.Strict {
		t.Errorf("consistency = %v, want strict", def)
	}
	if rooms := c.Rooms; rooms["lobby"].MaxMembers != 50 || rooms["lobby"].MessagesPerMinute != 600 || rooms["game-*"].MemberMessagesPerMinute != 20 {
		t.Errorf("rooms = %+v", rooms)
	}

	// Without the flag the environment wins, without both the YAML file.
	c, err = loadConfig([]string{"--config", yml}, env[:2], io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.NodeID != "from-env" || c.Limits().MessagesPerMinute != 80 {
		t.Errorf("env: node_id %q messages %d", c.NodeID, c.Limits().MessagesPerMinute)
	}
	c, err = loadConfig([]string{"--config", yml}, nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.NodeID != "from-yaml" || c.Limits().MessagesPerMinute != 70 {
		t.Errorf("yaml: node_id %q messages %d", c.NodeID, c.Limits().MessagesPerMinute)
	}
}

// TestConfigDerived checks the values computed from several settings.
func TestConfigDerived(t *testing.T) {
	t.Parallel()
	c, err := loadConfig([]string{"--listen", "127.0.0.1:8081", "--cluster-listen", "127.0.0.1:6222",
		"--routes", "nats-route://127.0.0.1:6222,nats-route://127.0.0.1:6223,nats-route://localhost:6224",
		"--consistency-connections", "strict"}, nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Clustered() || c.Replicas() != 3 {
		t.Errorf("clustered %v replicas %d, want true 3", c.Clustered(), c.Replicas())
	}
	def, modes := c.Modes()
	if def != kvstore.Global || modes[limiter.KindConnectionRate] != kvstore.Strict {
		t.Errorf("modes %v %v, want global with strict connections", def, modes)
	}
	if id := c.ResolvedNodeID(); !strings.HasSuffix(id, "-8081") || sanitizeID(id) != id {
		t.Errorf("node ID %q, want the host name and -8081", id)
	}
	if _, err := loadConfig([]string{"-help"}, nil, io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-help: %v, want flag.ErrHelp", err)
	}
}

// TestConfigErrors covers every validation error: each is a
// *limiter.FieldError whose Field is the first wanted text, and names the setting,
// the value and where it came from.
func TestConfigErrors(t *testing.T) {
	t.Parallel()
	missing := filepath.Join(t.TempDir(), "missing.pem")
	badYAML := writeFile(t, "bad.yaml", "limits: [1, 2\n")
	unknownYAML := writeFile(t, "unknown.yaml", "limits:\n  messages_per_hour: 5\n")
	typeYAML := writeFile(t, "type.yaml", "limits:\n  max_message_size: big\n")
	scalarYAML := writeFile(t, "scalar.yaml", "nats: 5\n")
	cert := writeFile(t, "cert.pem", "x")
	shortToken := writeFile(t, "short.token", "tooshort\n")
	emptyToken := writeFile(t, "empty.token", "\n")
	tests := []struct {
		name string
		args []string
		env  []string
		want []string // substrings of the error
	}{
		{"not an integer", []string{"--limits-messages-per-minute", "lots"}, nil, []string{"limits.messages_per_minute", `"lots"`, "flag --limits-messages-per-minute", "not an integer"}},
		{"negative limit", []string{"--limits-max-message-size", "-1"}, nil, []string{"limits.max_message_size", `"-1"`, "negative"}},
		{"burst without rate", []string{"--limits-preset", "default", "--limits-bytes-per-minute", "0", "--limits-byte-burst", "5"}, nil, []string{"limits.byte_burst", `"5"`}},
		{"unknown preset", nil, []string{"RATETHROTTLE_LIMITS_PRESET=lenient"}, []string{"limits.preset", `"lenient"`, "env RATETHROTTLE_LIMITS_PRESET", "unknown preset"}},
		{"message scope", []string{"--limits-message-scope", "room"}, nil, []string{"limits.message_scope", `"room"`}},
		{"consistency", []string{"--consistency", "eventual"}, nil, []string{"consistency", `"eventual"`, "local, global or strict"}},
		{"consistency connections", []string{"--consistency-connections", "fast"}, nil, []string{"consistency_connections", `"fast"`}},
		{"fail mode", []string{"--fail-mode", "panic"}, nil, []string{"fail_mode", `"panic"`, "open, share or closed"}},
		{"duration", []string{"--sync-interval", "soon"}, nil, []string{"sync_interval", `"soon"`, "duration"}},
		{"negative duration", []string{"--shutdown-timeout", "-1s"}, nil, []string{"shutdown_timeout", `"-1s"`, "negative"}},
		{"listen address", []string{"--nats-listen", "4222"}, nil, []string{"nats.listen", `"4222"`, "host:port"}},
		{"port range", []string{"--cluster-listen", "127.0.0.1:70000"}, nil, []string{"cluster.listen", `"127.0.0.1:70000"`, "0 to 65535"}},
		{"replicas", []string{"--kv-replicas", "-3"}, nil, []string{"kv.replicas", `"-3"`}},
		{"boolean", []string{"--reject-with-close", "maybe"}, nil, []string{"reject_with_close", `"maybe"`, "true or false"}},
		{"max denials", []string{"--max-denials", "x"}, nil, []string{"max_denials", `"x"`}},
		{"proxy", []string{"--trusted-proxies", "10.0.0.0/8,proxy"}, nil, []string{"trusted_proxies", `"proxy"`, "CIDR"}},
		{"ipv6 prefix", []string{"--ipv6-prefix", "129"}, nil, []string{"ipv6_prefix", `"129"`, "1 to 128"}},
		{"ipv6 prefix env", nil, []string{"RATETHROTTLE_IPV6_PREFIX=/64"}, []string{"ipv6_prefix", `"/64"`, "env RATETHROTTLE_IPV6_PREFIX"}},
		{"ipv6 prefix zero", []string{"--ipv6-prefix", "0"}, nil, []string{"ipv6_prefix", `"0"`}},
		{"log level", []string{"--log-level", "loud"}, nil, []string{"log.level", `"loud"`}},
		{"log format", []string{"--log-format", "xml"}, nil, []string{"log.format", `"xml"`}},
		{"autoban threshold", []string{"--autoban-threshold", "many"}, nil, []string{"autoban.threshold", `"many"`}},
		{"autoban window", []string{"--autoban-threshold", "5", "--autoban-window", "0s"}, nil, []string{"autoban.window", `"0s"`}},
		{"room rule syntax", []string{"--rooms", "lobby"}, nil, []string{"rooms", `"lobby"`, "PATTERN:FIELD=N"}},
		{"room field", []string{"--rooms", "lobby:max_people=5"}, nil, []string{"rooms", "max_people"}},
		{"room value", []string{"--rooms", "lobby:max_members=-5"}, nil, []string{"rooms", "max_members"}},
		{"node id", []string{"--node-id", "a.b"}, nil, []string{"node_id", `"a.b"`}},
		{"event prefix", []string{"--events-prefix", "a.>"}, nil, []string{"events.prefix", `"a.>"`}},
		{"routes without listen", []string{"--routes", "nats-route://127.0.0.1:6222"}, nil, []string{"cluster.routes", "cluster.listen"}},
		{"cluster with external", []string{"--nats-url", "nats://x:4222", "--cluster-listen", "127.0.0.1:6222"}, nil, []string{"cluster.listen", "nats.url"}},
		{"routes with external", []string{"--nats-url", "nats://x:4222", "--routes", "nats-route://a:1"}, nil, []string{"cluster.routes", "nats.url"}},
		{"cert without key", []string{"--nats-tls-cert", cert}, nil, []string{"nats.tls_key", "without"}},
		{"key without cert", []string{"--nats-tls-key", cert}, nil, []string{"nats.tls_cert", "without"}},
		{"password without user", []string{"--nats-password", "pw"}, nil, []string{"nats.user", "nats.password"}},
		{"token and user", []string{"--nats-user", "u", "--nats-token", "tok"}, nil, []string{"nats.token"}},
		{"missing file", []string{"--nats-creds", missing}, nil, []string{"nats.creds", missing, "cannot read"}},
		{"missing CA", []string{"--nats-tls-ca", missing}, nil, []string{"nats.tls_ca", missing}},
		{"config file missing", []string{"--config", missing}, nil, []string{"config", missing}},
		{"config file syntax", []string{"--config", badYAML}, nil, []string{"config", badYAML}},
		{"config file unknown key", []string{"--config", unknownYAML}, nil, []string{"limits.messages_per_hour", "unknown setting"}},
		{"config file bad value", []string{"--config", typeYAML}, nil, []string{"limits.max_message_size", `"big"`, "yaml " + typeYAML}},
		{"config file shape", []string{"--config", scalarYAML}, nil, []string{"nats", `"5"`}},
		{"unknown env", nil, []string{"RATETHROTTLE_LIMIT_PRESET=strict"}, []string{"RATETHROTTLE_LIMIT_PRESET", `"strict"`, "unknown environment variable"}},
		{"positional argument", []string{"serve"}, nil, []string{"arguments", `"serve"`}},
		{"short admin token", []string{"--admin-token", "s3cret"}, nil, []string{"admin_token", "(hidden)", "has 6 bytes", "at least 16"}},
		{"short admin token in env", nil, []string{"RATETHROTTLE_ADMIN_TOKEN=s3cret"}, []string{"admin_token", "env RATETHROTTLE_ADMIN_TOKEN", "at least 16"}},
		{"short admin token file", []string{"--admin-token-file", shortToken}, nil, []string{"admin_token_file", shortToken, "has 8 bytes", "at least 16"}},
		{"empty admin token file", []string{"--admin-token-file", emptyToken}, nil, []string{"admin_token_file", "no token"}},
		{"missing admin token file", []string{"--admin-token-file", missing}, nil, []string{"admin_token_file", missing, "cannot read"}},
		{"admin token twice", []string{"--admin-token", testAdminToken, "--admin-token-file", shortToken}, nil, []string{"admin_token_file", "not both"}},
		{"ops listen address", []string{"--ops-listen", "9000"}, nil, []string{"ops_listen", `"9000"`, "host:port"}},
		{"http timeout", []string{"--http-idle-timeout", "long"}, nil, []string{"http.idle_timeout", `"long"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := loadConfig(tt.args, tt.env, io.Discard)
			if err == nil {
				t.Fatal("no error")
			}
			var fe *limiter.FieldError
			if !errors.As(err, &fe) || !errors.Is(err, errInvalidConfig) {
				t.Fatalf("error %v is not a *limiter.FieldError unwrapping to errInvalidConfig", err)
			}
			if fe.Field != tt.want[0] {
				t.Errorf("Field = %q, want %q", fe.Field, tt.want[0])
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
	// A secret's value is not repeated.
	_, err := loadConfig([]string{"--nats-user", "u", "--nats-token", "s3cret"}, nil, io.Discard)
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("error %v shows the token", err)
	}
	_, err = loadConfig([]string{"--admin-token", "s3cret"}, nil, io.Discard)
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("error %v shows the admin token", err)
	}
}

// TestAdminTokenSources reads the admin token from a file, without its
// trailing newline, and from the environment.
func TestAdminTokenSources(t *testing.T) {
	t.Parallel()
	f := writeFile(t, "admin.token", testAdminToken+"\n")
	c, err := loadConfig([]string{"--admin-token-file", f}, nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.AdminToken != testAdminToken {
		t.Errorf("token from file = %q, want %q", c.AdminToken, testAdminToken)
	}
	c, err = loadConfig(nil, []string{"RATETHROTTLE_ADMIN_TOKEN=" + testAdminToken}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.AdminToken != testAdminToken {
		t.Errorf("token from the environment = %q, want %q", c.AdminToken, testAdminToken)
	}
	c, err = loadConfig(nil, []string{"RATETHROTTLE_ADMIN_TOKEN_FILE=" + f}, io.Discard)
	if err != nil || c.AdminToken != testAdminToken {
		t.Errorf("token from the file named in the environment = %q, %v", c.AdminToken, err)
	}
}

// TestSettingsDeclaredOnce checks that flags and environment variables
// are unique and that every setting's default parses.
func TestSettingsDeclaredOnce(t *testing.T) {
	t.Parallel()
	flags, envs := map[string]bool{}, map[string]bool{}
	for _, s := range settings {
		if flags[s.Flag()] || envs[s.Env()] {
			t.Errorf("setting %s: duplicate flag or env", s.key)
		}
		flags[s.Flag()], envs[s.Env()] = true, true
		if s.usage == "" {
			t.Errorf("setting %s has no usage", s.key)
		}
	}
	for _, f := range []string{"cluster-listen", "routes", "nats-url", "admin-token", "admin-token-file", "ops-listen", "ipv6-prefix", "limits-preset", "fail-mode", "events-prefix", "node-id", "rooms", "consistency"} {
		if !flags[f] {
			t.Errorf("no flag --%s", f)
		}
	}
}

// TestPresetsDocumented checks that --help and README.md show every
// preset's values as pkg/limiter defines them.
func TestPresetsDocumented(t *testing.T) {
	t.Parallel()
	var help strings.Builder
	if _, err := loadConfig([]string{"--help"}, nil, &help); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: %v", err)
	}
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range presetNames {
		l, ok := limiter.Preset(name)
		if !ok {
			t.Fatalf("limiter knows no preset %q", name)
		}
		line := fmt.Sprintf("  %-8s connections_per_minute=%d messages_per_minute=%d bytes_per_minute=%d max_concurrent_connections=%d max_message_size=%d",
			name, l.ConnectionsPerMinute, l.MessagesPerMinute, l.BytesPerMinute, l.MaxConcurrentConnections, l.MaxMessageSize)
		if !strings.Contains(help.String(), line) {
			t.Errorf("--help lacks the line %q", line)
		}
		if l.ConnectionBurst != 0 || l.MessageBurst != 0 || l.ByteBurst != 0 {
			t.Errorf("preset %s sets a burst; README.md says every burst equals its rate", name)
		}
		bytes := "unlimited"
		if l.BytesPerMinute > 0 {
			bytes = grouped(l.BytesPerMinute)
		}
		row := fmt.Sprintf("| `%s` | %s | %s | %s | %s | %s |", name, grouped(l.ConnectionsPerMinute), grouped(l.MessagesPerMinute),
			bytes, grouped(l.MaxConcurrentConnections), grouped(l.MaxMessageSize))
		if !strings.Contains(string(readme), row) {
			t.Errorf("README.md lacks the row %s", row)
		}
	}
}

// grouped formats n with commas between groups of three digits.
func grouped(n int64) string {
	s := strconv.FormatInt(n, 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// TestHelpShowsDefaultsAndTypes: --help names each flag's value by its type,
// never the flag package's "value", and states each setting's default from
// the settings table, its one statement.
func TestHelpShowsDefaultsAndTypes(t *testing.T) {
	t.Parallel()
	var help strings.Builder
	if _, err := loadConfig([]string{"--help"}, nil, &help); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: %v", err)
	}
	out := help.String()
	if strings.Contains(out, " value\n") {
		t.Errorf("a flag shows its type as value:\n%s", out)
	}
	for _, s := range settings {
		if s.typ == "" {
			t.Errorf("setting %s has no type name", s.key)
			continue
		}
		head := "  -" + s.Flag() + " " + s.typ + "\n"
		i := strings.Index(out, head)
		if i < 0 {
			t.Errorf("--help lacks %q", head)
			continue
		}
		entry := out[i+len(head):]
		if j := strings.Index(entry, "\n  -"); j >= 0 {
			entry = entry[:j]
		}
		if s.def != "" && !s.secret && !strings.Contains(entry, fmt.Sprintf("(default %q)", s.def)) {
			t.Errorf("--help of --%s does not state the default %q:\n%s", s.Flag(), s.def, entry)
		}
		if !strings.Contains(entry, "env "+s.Env()) || !strings.Contains(entry, "yaml "+s.key) {
			t.Errorf("--help of --%s does not name env %s and yaml %s", s.Flag(), s.Env(), s.key)
		}
	}
}

// TestReadmeDefaults: the README's configuration table states each
// setting's default as the settings table does.
func TestReadmeDefaults(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	rows := 0
	for _, line := range strings.Split(string(readme), "\n") {
		cells := strings.Split(line, " | ")
		if len(cells) < 4 || !strings.HasPrefix(cells[0], "| `") {
			continue
		}
		key := strings.Trim(strings.TrimPrefix(cells[0], "| "), "`")
		for _, s := range settings {
			if s.key != key || s.secret {
				continue
			}
			rows++
			want := ""
			if s.def != "" {
				want = "`" + s.def + "`"
			}
			if got := strings.TrimSpace(cells[2]); got != want && s.def != "" {
				t.Errorf("README.md states the default of %s as %s, the settings table as %q", key, got, s.def)
			}
		}
	}
	if rows < 20 {
		t.Errorf("found %d settings in README.md's table, want most of them", rows)
	}
}
