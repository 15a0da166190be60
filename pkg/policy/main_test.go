package policy

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/ratethrottle/ratethrottle/internal/natstest"
	"github.com/ratethrottle/ratethrottle/pkg/embedded"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func startServer(t *testing.T) *embedded.Server { return natstest.Server(t, embedded.Config{}) }

// dial connects to url, retrying in the background while it is down, as a
// node's connection does.
func dial(t *testing.T, url string) *nats.Conn { return natstest.Dial(t, url) }

func newStore(t *testing.T, nc *nats.Conn, cfg StoreConfig) *Store {
	t.Helper()
	cfg.Conn = nc
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := NewStore(ctx, cfg)
	require.NoError(t, err)
	return s
}

func newWatcher(t *testing.T, cfg WatcherConfig) *Watcher {
	t.Helper()
	w, err := NewWatcher(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { w.Close() })
	return w
}

func contextWithTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}
