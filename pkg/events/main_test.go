package events_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ratethrottle/ratethrottle/internal/natstest"
	"github.com/ratethrottle/ratethrottle/internal/wait"
	"github.com/ratethrottle/ratethrottle/pkg/embedded"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/ratethrottle/ratethrottle/pkg/events"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitFor polls a condition with a deadline (internal/wait).
var waitFor = wait.For

// startServer starts an embedded NATS server with JetStream on loopback and
// shuts it down when the test ends.
func startServer(t testing.TB) *embedded.Server { return natstest.Server(t, embedded.Config{}) }

// connect opens a NATS connection that reconnects quickly and forever, and
// closes it when the test ends.
func connect(t testing.TB, srv *embedded.Server, opts ...nats.Option) *nats.Conn {
	return natstest.Dial(t, srv.ClientURL(), opts...)
}

func newJS(t testing.TB, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return js
}

// banned reports whether b bans client now.
func banned(b *events.Bans, client string) bool {
	_, ok := b.BannedUntil(client, time.Now())
	return ok
}

// wantFieldError checks that err is the module's configuration error on
// field, refused by this package: a *limiter.FieldError that unwraps to
// events.ErrInvalidConfig and says so in its text.
func wantFieldError(t testing.TB, call string, err error, field string) {
	t.Helper()
	var fe *limiter.FieldError
	if !errors.As(err, &fe) || fe.Field != field || !errors.Is(err, events.ErrInvalidConfig) ||
		!strings.HasPrefix(err.Error(), "events: invalid config: "+field) {
		t.Errorf("%s = %v, want a *limiter.FieldError on %s wrapping events.ErrInvalidConfig", call, err, field)
	}
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// collector gathers events from a handler for later inspection.
type collector struct {
	mu  sync.Mutex
	evs []events.Event
}

func (c *collector) add(e events.Event) {
	c.mu.Lock()
	c.evs = append(c.evs, e)
	c.mu.Unlock()
}

func (c *collector) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.evs)
}

func (c *collector) all() []events.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]events.Event(nil), c.evs...)
}

// find returns the first event that matches, if any.
func (c *collector) find(match func(events.Event) bool) (events.Event, bool) {
	for _, e := range c.all() {
		if match(e) {
			return e, true
		}
	}
	return events.Event{}, false
}
