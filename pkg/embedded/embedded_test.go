package embedded

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/ratethrottle/ratethrottle/internal/wait"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func connectJS(t *testing.T, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	return nc, js
}

func TestStartServerJetStream(t *testing.T) {
	s, err := Start(Config{})
	require.NoError(t, err)
	dir := s.Config().StoreDir
	require.DirExists(t, dir)

	_, js := connectJS(t, s.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "t"})
	require.NoError(t, err)
	_, err = kv.Put(ctx, "k", []byte("v"))
	require.NoError(t, err)
	require.Empty(t, s.ClusterURL())
	require.True(t, s.Running())

	s.Shutdown()
	s.Shutdown() // idempotent
	_, err = os.Stat(dir)
	require.True(t, os.IsNotExist(err), "temp store dir removed")
	require.False(t, s.Running())
	require.ErrorIs(t, s.Restart(), ErrClosed)
}

func TestServerRestartKeepsPortAndData(t *testing.T) {
	dir := t.TempDir()
	s, err := Start(Config{StoreDir: dir})
	require.NoError(t, err)
	defer s.Shutdown()
	url := s.ClientURL()

	nc, js := connectJS(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "t", Storage: jetstream.FileStorage})
	require.NoError(t, err)
	_, err = kv.Put(ctx, "k", []byte("before"))
	require.NoError(t, err)

	s.Stop()
	require.False(t, s.Running())
	wait.For(t, 5*time.Second, "client to notice the outage", func() bool { return !nc.IsConnected() })
	require.NoError(t, s.Restart())
	require.Equal(t, url, s.ClientURL())
	wait.For(t, 10*time.Second, "client to reconnect", nc.IsConnected)

	var e jetstream.KeyValueEntry
	wait.For(t, 10*time.Second, "the entry after restart", func() bool {
		e, err = kv.Get(ctx, "k")
		return err == nil
	})
	require.Equal(t, "before", string(e.Value()))

	// A second server on the same store dir after shutdown also sees it.
	s.Shutdown()
	s2, err := Start(Config{Port: s.Config().Port, StoreDir: dir})
	require.NoError(t, err)
	defer s2.Shutdown()
	require.Equal(t, url, s2.ClientURL())
}

func TestServerNoJetStream(t *testing.T) {
	s, err := Start(Config{NoJetStream: true})
	require.NoError(t, err)
	defer s.Shutdown()
	_, js := connectJS(t, s.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "t"})
	require.Error(t, err)
}

func TestConfigInvalid(t *testing.T) {
	for _, c := range []struct {
		cfg   Config
		field string
	}{
		{Config{Port: 70000}, "Port"},
		{Config{ClusterPort: -5}, "ClusterPort"},
		{Config{ReadyTimeout: -1}, "ReadyTimeout"},
		{Config{Routes: []string{"nats-route://127.0.0.1:1"}}, "Routes"},
		{Config{ClusterName: "c", Routes: []string{"nats-route://[::1"}}, "Routes"},
	} {
		_, err := Start(c.cfg)
		require.ErrorIs(t, err, ErrInvalidConfig)
		var fe *limiter.FieldError
		require.ErrorAs(t, err, &fe)
		require.Equal(t, c.field, fe.Field, "%v", err)
	}
	_, err := StartCluster(0, Config{})
	require.ErrorIs(t, err, ErrInvalidConfig)
	var fe *limiter.FieldError
	require.ErrorAs(t, err, &fe)
	require.Equal(t, "n", fe.Field)
}

// TestHasSubscribers: a subscription is seen, through its wildcard, once
// the client has flushed it, and not after it is gone or on a stopped
// server.
func TestHasSubscribers(t *testing.T) {
	s, err := Start(Config{NoJetStream: true})
	require.NoError(t, err)
	defer s.Shutdown()
	require.False(t, s.HasSubscribers("a.b"))
	nc, err := nats.Connect(s.ClientURL())
	require.NoError(t, err)
	defer nc.Close()
	sub, err := nc.SubscribeSync("a.*")
	require.NoError(t, err)
	require.NoError(t, nc.Flush())
	require.True(t, s.HasSubscribers("a.b"))
	require.False(t, s.HasSubscribers("b.a"))
	require.NoError(t, sub.Unsubscribe())
	require.NoError(t, nc.Flush())
	require.False(t, s.HasSubscribers("a.b"))
	_, err = nc.SubscribeSync("a.b")
	require.NoError(t, err)
	require.NoError(t, nc.Flush())
	s.Stop()
	require.False(t, s.HasSubscribers("a.b"))
}

func TestStartClusterR3(t *testing.T) {
	c, err := StartCluster(3, Config{})
	require.NoError(t, err)
	defer c.Shutdown()
	require.Len(t, c.Servers(), 3)
	urls := c.ClientURLs()
	require.Len(t, urls, 3)
	for _, s := range c.Servers() {
		require.NotEmpty(t, s.ClusterURL())
	}

	_, js1 := connectJS(t, urls[0])
	_, js3 := connectJS(t, urls[2])
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	kv, err := js1.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "r3", Replicas: 3, Storage: jetstream.MemoryStorage})
	require.NoError(t, err)
	_, err = kv.Put(ctx, "k", []byte("v"))
	require.NoError(t, err)
	kv3, err := js3.KeyValue(ctx, "r3")
	require.NoError(t, err)
	e, err := kv3.Get(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, "v", string(e.Value()))

	// One member down and back: the cluster is ready again.
	s := c.Servers()[1]
	s.Stop()
	require.NoError(t, s.Restart())
	require.NoError(t, c.WaitReady(20*time.Second))
	c.Shutdown()
	c.Shutdown()
}
