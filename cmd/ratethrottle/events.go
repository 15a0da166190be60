package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ratethrottle/ratethrottle/pkg/events"
)

const eventsUsage = `events tail [--type T,…] [--client ID]… [--since 10m] [--json] [--count N] [flags]
       ratethrottle events keep [--max-age 24h] [--replicas N] [flags]

tail prints violation and ban events as they happen, one a line; with
--since it first prints the events of that past period from the history
stream, then follows. keep creates (or updates) the history stream, which
captures every event the nodes publish.`

// multi is a repeatable string flag; each use adds one value.
type multi []string

func (m *multi) String() string { return strings.Join(*m, ",") }

func (m *multi) Set(v string) error {
	*m = append(*m, v)
	return nil
}

func runEvents(ctx context.Context, e env, args []string) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fs := newFlags(e, "events", eventsUsage)
		var c connFlags
		c.register(fs, e)
		if _, err := parse(fs, e, args); err != nil {
			return err
		}
		return usageErr("events: missing sub-verb (tail or keep)")
	}
	switch args[0] {
	case "tail":
		return runTail(ctx, e, args[1:])
	case "keep":
		return runKeep(ctx, e, args[1:])
	}
	return usageErr("events: unknown sub-verb %q (want tail or keep)", args[0])
}

func runTail(ctx context.Context, e env, args []string) error {
	fs := newFlags(e, "events tail", eventsUsage)
	var c connFlags
	c.register(fs, e)
	var types, clients multi
	fs.Var(&types, "type", "event types, comma-separated or repeated: "+typeNames())
	fs.Var(&clients, "client", "a client ID to follow (repeatable; an ID may hold commas)")
	since := fs.Duration("since", 0, "first print the events of this past period, from the history stream")
	stream := fs.String("stream", events.DefaultStream, "the history stream")
	asJSON := fs.Bool("json", false, "print each event as its JSON, one a line")
	count := fs.Int("count", 0, "exit after this many events (0: follow until interrupted)")
	pos, err := parse(fs, e, args)
	if err != nil {
		return err
	}
	if err := wantArgs("events tail", pos); err != nil {
		return err
	}
	if *since < 0 {
		return usageErr("events tail: --since %v: must not be negative", *since)
	}
	if *count < 0 {
		return usageErr("events tail: --count %d: must not be negative", *count)
	}
	f := events.Filter{Prefix: c.prefix, Clients: clients}
	for _, t := range types {
		for _, name := range strings.Split(t, ",") {
			name = strings.TrimSpace(name)
			if !slices.Contains(events.Types(), events.Type(name)) {
				return usageErr("events tail: --type %q: unknown type (want %s)", name, typeNames())
			}
			f.Types = append(f.Types, events.Type(name))
		}
	}
	if err := c.check(); err != nil {
		return err
	}
	nc, err := c.connect(ctx)
	if err != nil {
		return err
	}
	defer nc.Close()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	out := make(chan events.Event, 256)
	var stop func()
	if *since > 0 {
		stop, err = tailHistory(ctx, &c, nc, *stream, f, time.Now().Add(-*since), out)
	} else {
		stop, err = tailLive(ctx, nc, f, out)
	}
	if err != nil {
		return err
	}
	defer stop()
	n := 0
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev := <-out:
			if *asJSON {
				b, err := events.Encode(ev)
				if err != nil {
					return failed(err)
				}
				fmt.Fprintf(e.stdout, "%s\n", b)
			} else {
				fmt.Fprintln(e.stdout, eventLine(ev))
			}
			n++
			if *count > 0 && n >= *count {
				return nil
			}
		}
	}
}

func typeNames() string {
	var names []string
	for _, t := range events.Types() {
		names = append(names, string(t))
	}
	return strings.Join(names, ", ")
}

// tailLive subscribes to the events f selects as they are published.
func tailLive(ctx context.Context, nc *nats.Conn, f events.Filter, out chan<- events.Event) (func(), error) {
	sub, err := events.Subscribe(ctx, nc, f, func(ev events.Event) {
		select {
		case out <- ev:
		case <-ctx.Done():
		}
	})
	if err != nil {
		return nil, classify("subscribe", err)
	}
	return func() { _ = sub.Close() }, nil
}

// tailHistory reads the history stream from start and goes on with new
// events, in stream order, through an ordered consumer.
func tailHistory(ctx context.Context, c *connFlags, nc *nats.Conn, stream string, f events.Filter, start time.Time, out chan<- events.Event) (func(), error) {
	subjects, err := f.Subjects()
	if err != nil {
		return nil, usageErr("events tail: %v", err)
	}
	js, err := jetStream(nc)
	if err != nil {
		return nil, err
	}
	octx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	cons, err := js.OrderedConsumer(octx, stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: subjects,
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy,
		OptStartTime:   &start,
	})
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, notFound("events tail --since: no history stream %q (create it with \"ratethrottle events keep\")", stream)
	}
	if err != nil {
		return nil, classify("history stream", err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		ev, err := events.Decode(m.Data())
		if err != nil || !f.Match(&ev) {
			return
		}
		select {
		case out <- ev:
		case <-ctx.Done():
		}
	})
	if err != nil {
		return nil, classify("history stream", err)
	}
	return func() {
		cc.Stop()
		<-cc.Closed()
	}, nil
}

// eventLine is an event for humans: time, node, type, client and the
// fields that apply.
func eventLine(ev events.Event) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %-12s %-22s client=%s", ev.Time.UTC().Format("2006-01-02T15:04:05.000Z"), clean(ev.Node), ev.Type, clean(ev.Client))
	if ev.Room != "" {
		fmt.Fprintf(&b, " room=%s", clean(ev.Room))
	}
	if ev.Connection != "" {
		fmt.Fprintf(&b, " conn=%s", clean(ev.Connection))
	}
	if ev.Limit != 0 || ev.Observed != 0 {
		fmt.Fprintf(&b, " limit=%d observed=%d", ev.Limit, ev.Observed)
	}
	switch {
	case ev.Type == events.TypeBan && ev.Until.IsZero():
		b.WriteString(" until=lifted")
	case !ev.Until.IsZero():
		fmt.Fprintf(&b, " until=%s", ev.Until.UTC().Format(time.RFC3339))
	case ev.RetryAfterMS > 0:
		fmt.Fprintf(&b, " retry=%v", time.Duration(ev.RetryAfterMS)*time.Millisecond)
	}
	if ev.Reason != "" {
		fmt.Fprintf(&b, " reason=%s", clean(ev.Reason))
	}
	if s := ev.Metadata["source"]; s != "" {
		fmt.Fprintf(&b, " source=%s", clean(s))
	}
	return b.String()
}

func runKeep(ctx context.Context, e env, args []string) error {
	fs := newFlags(e, "events keep", eventsUsage)
	var c connFlags
	c.register(fs, e)
	stream := fs.String("stream", events.DefaultStream, "the history stream")
	maxAge := fs.Duration("max-age", 24*time.Hour, "how long events are kept")
	maxMsgs := fs.Int64("max-msgs", 1_000_000, "the most events kept")
	maxBytes := fs.Int64("max-bytes", 256<<20, "the most bytes kept")
	replicas := fs.Int("replicas", 1, "the stream's replicas (up to the number of NATS servers, at most 5)")
	pos, err := parse(fs, e, args)
	if err != nil {
		return err
	}
	if err := wantArgs("events keep", pos); err != nil {
		return err
	}
	switch {
	case *maxAge <= 0:
		return usageErr("events keep: --max-age %v: must be positive", *maxAge)
	case *maxMsgs <= 0:
		return usageErr("events keep: --max-msgs %d: must be positive", *maxMsgs)
	case *maxBytes <= 0:
		return usageErr("events keep: --max-bytes %d: must be positive", *maxBytes)
	case *replicas < 1 || *replicas > 5:
		return usageErr("events keep: --replicas %d: want 1 to 5", *replicas)
	}
	nc, err := c.connect(ctx)
	if err != nil {
		return err
	}
	defer nc.Close()
	octx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	s, err := events.EnsureStream(octx, nc, events.StreamConfig{Name: *stream, Prefix: c.prefix, MaxAge: *maxAge,
		MaxMsgs: *maxMsgs, MaxBytes: *maxBytes, Replicas: *replicas})
	if err != nil {
		return classify("history stream", err)
	}
	info := s.CachedInfo()
	fmt.Fprintf(e.stdout, "stream %s keeps %s for %v (at most %d events, %d bytes, %d replicas); %d events now\n",
		info.Config.Name, strings.Join(info.Config.Subjects, " and "), info.Config.MaxAge, info.Config.MaxMsgs,
		info.Config.MaxBytes, info.Config.Replicas, info.State.Msgs)
	return nil
}
