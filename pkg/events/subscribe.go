package events

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ratethrottle/ratethrottle/pkg/subject"
)

// Filter selects events by type and client. The zero Filter selects every
// event under DefaultPrefix.
type Filter struct {
	// Prefix is the subject prefix. Empty means DefaultPrefix.
	Prefix string
	// Types selects event types; empty means every type, violations and
	// bans alike.
	Types []Type
	// Clients selects client IDs; empty means every client. Clients are
	// matched by their subject token, so the server does the filtering.
	Clients []string
}

// Subjects returns the subjects that cover f, at most one per type and
// client pair, with wildcards where f selects everything.
func (f Filter) Subjects() ([]string, error) {
	if err := ValidatePrefix(f.Prefix); err != nil {
		return nil, err
	}
	s := Subjects{Prefix: f.Prefix}
	p := s.prefix()
	var violations []string // type tokens, or "*"
	bans := false
	if len(f.Types) == 0 {
		violations, bans = []string{"*"}, true
	}
	for _, t := range f.Types {
		if t.IsViolation() {
			violations = append(violations, typeToken(t))
		} else {
			bans = true
		}
	}
	clients := []string{"*"}
	if len(f.Clients) > 0 {
		clients = clients[:0]
		for _, c := range f.Clients {
			clients = append(clients, subject.Token(c))
		}
	}
	var out []string
	for _, t := range violations {
		for _, c := range clients {
			out = append(out, p+".violations."+t+"."+c)
		}
	}
	if bans {
		for _, c := range clients {
			out = append(out, p+".bans."+c)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// Match reports whether e passes f's type and client filters. Subscribe
// applies it after decoding, since ban and unban events share a subject and
// hashed client tokens could in principle collide.
func (f Filter) Match(e *Event) bool {
	if len(f.Types) > 0 && !slices.Contains(f.Types, e.Type) {
		return false
	}
	if len(f.Clients) > 0 && !slices.Contains(f.Clients, e.Client) {
		return false
	}
	return true
}

// subscribeBuffer is the number of messages a Subscription holds before
// the NATS client drops them as a slow consumer.
const subscribeBuffer = 4096

// Subscription delivers decoded events to a handler until its context ends
// or Close is called. Close is idempotent and waits until the handler has
// returned for the last time.
type Subscription struct {
	subs    []*nats.Subscription
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once
	invalid atomic.Uint64
}

// Subscribe subscribes nc to the events f selects and calls fn with each,
// decoded, on one goroutine, in the order received. Messages that do not
// decode as a version-1 event are skipped and counted (Invalid). The
// subscription ends when ctx ends or Close is called.
//
// Up to 4096 messages wait for fn; beyond that the NATS client drops them
// and reports a slow consumer to the connection's error handler. Core NATS
// subscriptions receive only what is published while they exist;
// use EnsureStream and SubscribeDurable to replay what was missed.
func Subscribe(ctx context.Context, nc *nats.Conn, f Filter, fn func(Event)) (*Subscription, error) {
	if nc == nil {
		return nil, invalidConfig("nc", nil, "is required")
	}
	if fn == nil {
		return nil, invalidConfig("fn", nil, "is required")
	}
	subjects, err := f.Subjects()
	if err != nil {
		return nil, err
	}
	ch := make(chan *nats.Msg, subscribeBuffer)
	s := newSubscription()
	for _, subj := range subjects {
		sub, err := nc.ChanSubscribe(subj, ch)
		if err != nil {
			s.unsubscribe()
			return nil, err
		}
		s.subs = append(s.subs, sub)
	}
	// Make sure the server has the interest before returning, so that an
	// event published after Subscribe returns is delivered.
	if err := flush(ctx, nc); err != nil {
		s.unsubscribe()
		return nil, err
	}
	go s.run(ctx, ch, f, fn)
	return s, nil
}

func newSubscription() *Subscription {
	return &Subscription{stop: make(chan struct{}), done: make(chan struct{})}
}

func (s *Subscription) run(ctx context.Context, ch chan *nats.Msg, f Filter, fn func(Event)) {
	defer close(s.done)
	defer s.unsubscribe()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.stop:
			return
		case m := <-ch:
			e, err := Decode(m.Data)
			if err != nil {
				s.invalid.Add(1)
				continue
			}
			if f.Match(&e) {
				fn(e)
			}
		}
	}
}

func (s *Subscription) unsubscribe() {
	for _, sub := range s.subs {
		_ = sub.Unsubscribe()
	}
}

// Invalid returns the number of messages skipped because they did not
// decode as events.
func (s *Subscription) Invalid() uint64 { return s.invalid.Load() }

// Done is closed when the subscription has ended.
func (s *Subscription) Done() <-chan struct{} { return s.done }

// Close ends the subscription and waits for its goroutine. It is
// idempotent.
func (s *Subscription) Close() error {
	s.once.Do(func() { close(s.stop) })
	<-s.done
	return nil
}

// flush waits for the server to process what nc has sent, for as long as
// ctx allows, or 5 seconds if ctx has no deadline.
func flush(ctx context.Context, nc *nats.Conn) error {
	if _, ok := ctx.Deadline(); ok {
		return nc.FlushWithContext(ctx)
	}
	return nc.FlushTimeout(5 * time.Second)
}
