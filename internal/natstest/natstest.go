// Package natstest starts the real NATS servers and connections that the
// module's tests run against: an embedded server with JetStream on a
// loopback port chosen by the kernel, and a client connection that
// reconnects quickly and forever, both ended when the test ends.
package natstest

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ratethrottle/ratethrottle/pkg/embedded"
)

// ReconnectWait is the pause between a Dial connection's reconnect
// attempts.
const ReconnectWait = 25 * time.Millisecond

// Server starts an embedded NATS server configured by cfg (the zero Config:
// JetStream on a random loopback port, in a temporary directory) and shuts
// it down when t ends.
func Server(t testing.TB, cfg embedded.Config) *embedded.Server {
	t.Helper()
	s, err := embedded.Start(cfg)
	if err != nil {
		t.Fatalf("start NATS: %v", err)
	}
	t.Cleanup(s.Shutdown)
	return s
}

// Dial connects to url with a connection that, like a node's, retries in
// the background while the server is down and reconnects forever, every
// ReconnectWait; opts come after those settings and may override them.
// The connection is closed when t ends.
func Dial(t testing.TB, url string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	opts = append([]nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(ReconnectWait),
		nats.RetryOnFailedConnect(true)}, opts...)
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatalf("connect to NATS: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// Cluster starts n routed embedded NATS servers with JetStream, as
// embedded.StartCluster does, and shuts them down when t ends.
func Cluster(t testing.TB, n int) *embedded.Cluster {
	t.Helper()
	c, err := embedded.StartCluster(n, embedded.Config{})
	if err != nil {
		t.Fatalf("start NATS cluster: %v", err)
	}
	t.Cleanup(c.Shutdown)
	return c
}
