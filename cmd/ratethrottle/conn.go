package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ratethrottle/ratethrottle/internal/natsauth"
	"github.com/ratethrottle/ratethrottle/pkg/events"
)

// envPrefix starts the environment variables the tool shares with the
// node.
const envPrefix = "RATETHROTTLE_"

// connFlags are the connection settings, named as the node names them.
type connFlags struct {
	url, user, password, token, creds string
	tlsCA, tlsCert, tlsKey            string
	prefix, bucket                    string
	timeout                           time.Duration
	// The secrets from the environment, applied by check when no flag
	// sets them, so that --help never prints them.
	envPassword, envToken string
}

// register adds the connection flags to fs, with defaults from the
// environment.
func (c *connFlags) register(fs *flag.FlagSet, e env) {
	def := func(key, fallback string) string {
		if v := e.getenv(envPrefix + key); v != "" {
			return v
		}
		return fallback
	}
	fs.StringVar(&c.url, "nats-url", def("NATS_URL", "nats://127.0.0.1:4222"), "NATS server URLs, comma-separated (env RATETHROTTLE_NATS_URL)")
	fs.StringVar(&c.user, "nats-user", def("NATS_USER", ""), "NATS user name (env RATETHROTTLE_NATS_USER)")
	fs.StringVar(&c.password, "nats-password", "", "NATS password (env RATETHROTTLE_NATS_PASSWORD, which keeps it out of the process list)")
	fs.StringVar(&c.token, "nats-token", "", "NATS authentication token (env RATETHROTTLE_NATS_TOKEN, which keeps it out of the process list)")
	c.envPassword, c.envToken = e.getenv(envPrefix+"NATS_PASSWORD"), e.getenv(envPrefix+"NATS_TOKEN")
	fs.StringVar(&c.creds, "nats-creds", def("NATS_CREDS", ""), "NATS credentials file (env RATETHROTTLE_NATS_CREDS)")
	fs.StringVar(&c.tlsCA, "nats-tls-ca", def("NATS_TLS_CA", ""), "CA certificate file of the NATS servers (env RATETHROTTLE_NATS_TLS_CA)")
	fs.StringVar(&c.tlsCert, "nats-tls-cert", def("NATS_TLS_CERT", ""), "client certificate file for NATS TLS (env RATETHROTTLE_NATS_TLS_CERT)")
	fs.StringVar(&c.tlsKey, "nats-tls-key", def("NATS_TLS_KEY", ""), "client key file for NATS TLS (env RATETHROTTLE_NATS_TLS_KEY)")
	fs.StringVar(&c.prefix, "events-prefix", def("EVENTS_PREFIX", "ratethrottle"), "the nodes' subject prefix (env RATETHROTTLE_EVENTS_PREFIX)")
	fs.StringVar(&c.bucket, "kv-bucket", def("KV_BUCKET", "ratethrottle"), "the nodes' KV bucket; bans are in <kv-bucket>_bans (env RATETHROTTLE_KV_BUCKET)")
	fs.DurationVar(&c.timeout, "timeout", 5*time.Second, "how long to wait for NATS and for each request")
}

// check reports conflicting settings, naming the flag.
func (c *connFlags) check() error {
	if c.password == "" {
		c.password = c.envPassword
	}
	if c.token == "" {
		c.token = c.envToken
	}
	switch {
	case strings.TrimSpace(c.url) == "":
		return usageErr("--nats-url is empty")
	case c.token != "" && c.user != "":
		return usageErr("--nats-token: use either --nats-token or --nats-user and --nats-password")
	case c.password != "" && c.user == "":
		return usageErr("--nats-password is set without --nats-user")
	case (c.tlsCert == "") != (c.tlsKey == ""):
		return usageErr("--nats-tls-cert and --nats-tls-key: set both or neither")
	case c.timeout <= 0:
		return usageErr("--timeout %v: must be positive", c.timeout)
	case c.prefix == "" || events.ValidatePrefix(c.prefix) != nil:
		return usageErr("--events-prefix %q: must be dot-separated tokens without spaces or wildcards", c.prefix)
	}
	return nil
}

// connect opens the NATS connection. A failure is exitUnreachable.
func (c *connFlags) connect(ctx context.Context) (*nats.Conn, error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	opts := []nats.Option{nats.Name("ratethrottle-cli"), nats.Timeout(c.timeout), nats.MaxReconnects(-1), nats.ReconnectWait(250 * time.Millisecond)}
	opts = append(opts, natsauth.Credentials{User: c.user, Password: c.password, Token: c.token, Creds: c.creds,
		TLSCA: c.tlsCA, TLSCert: c.tlsCert, TLSKey: c.tlsKey}.Options()...)
	nc, err := nats.Connect(c.url, opts...)
	if err != nil {
		return nil, &exitError{exitUnreachable, fmt.Errorf("connect to NATS at %s: %w", redact(c.url), err)}
	}
	if err := ctx.Err(); err != nil {
		nc.Close()
		return nil, err
	}
	return nc, nil
}

// jetStream opens JetStream on nc.
func jetStream(nc *nats.Conn) (jetstream.JetStream, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, failed(err)
	}
	return js, nil
}

// redact drops user information from URLs, for messages.
func redact(urls string) string {
	var out []string
	for _, u := range strings.Split(urls, ",") {
		u = strings.TrimSpace(u)
		if at := strings.LastIndex(u, "@"); at >= 0 {
			scheme := ""
			if i := strings.Index(u, "://"); i >= 0 && i < at {
				scheme = u[:i+3]
			}
			u = scheme + "***@" + u[at+1:]
		}
		out = append(out, u)
	}
	return strings.Join(out, ",")
}

// classify turns a NATS or JetStream error into an exit code.
func classify(what string, err error) error {
	var xe *exitError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &xe):
		return err
	case errors.Is(err, jetstream.ErrBucketNotFound), errors.Is(err, jetstream.ErrStreamNotFound):
		return &exitError{exitNotFound, fmt.Errorf("%s: %w", what, err)}
	case errors.Is(err, jetstream.ErrJetStreamNotEnabled), errors.Is(err, nats.ErrNoResponders),
		errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrAuthorization):
		return &exitError{exitUnreachable, fmt.Errorf("%s: %w", what, err)}
	}
	return failed(fmt.Errorf("%s: %w", what, err))
}
