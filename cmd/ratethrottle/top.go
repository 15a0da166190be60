package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ratethrottle/ratethrottle/pkg/events"
)

const topUsage = `top [--interval 1s] [--limit 10] [--count N | --once] [--json] [flags]

A live view of the cluster, redrawn every --interval: the nodes' totals
(from the stats request; messages allowed and violations per second), the
clients with the most denials (from the violation events, room layers
included) and the busiest rooms (from the room messages the nodes relay
over NATS), per second over the last interval and in total since top
started. --count and --once stop after that many views; --json prints
each view as one JSON object a line.`

// maxTracked bounds the clients and rooms top keeps counts of; beyond it
// new names are counted under "(other)".
const maxTracked = 10000

// counter counts events per name: in the current interval and in total.
type counter struct {
	now, total int64
	last       string
	seen       time.Time
}

// tally is the counts of one kind (clients or rooms), safe for the
// subscription goroutines and the drawing loop.
type tally struct {
	mu    sync.Mutex
	m     map[string]*counter
	since time.Time // start of the current interval
}

func newTally() *tally { return &tally{m: map[string]*counter{}, since: time.Now()} }

func (t *tally) add(name, last string, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	c := t.m[name]
	if c == nil {
		if len(t.m) >= maxTracked {
			name = "(other)"
			c = t.m[name]
		}
		if c == nil {
			c = &counter{}
			t.m[name] = c
		}
	}
	c.now++
	c.total++
	c.last, c.seen = last, at
}

// row is one line of a top table.
type row struct {
	Name      string  `json:"name"`
	PerSecond float64 `json:"per_second"`
	Total     int64   `json:"total"`
	Last      string  `json:"last,omitempty"`
}

// take returns the limit rows with the most counts in the interval that
// ends now (then in total), starts a new interval and forgets names not
// seen for forget.
func (t *tally) take(limit int, now time.Time, forget time.Duration) []row {
	t.mu.Lock()
	defer t.mu.Unlock()
	secs := max(now.Sub(t.since).Seconds(), 0.001)
	t.since = now
	rows := make([]row, 0, len(t.m))
	for name, c := range t.m {
		rows = append(rows, row{Name: name, PerSecond: float64(c.now) / secs, Total: c.total, Last: c.last})
		c.now = 0
		if now.Sub(c.seen) > forget {
			delete(t.m, name)
		}
	}
	slices.SortFunc(rows, func(a, b row) int {
		switch {
		case a.PerSecond != b.PerSecond:
			if a.PerSecond > b.PerSecond {
				return -1
			}
			return 1
		case a.Total != b.Total:
			if a.Total > b.Total {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Name, b.Name)
	})
	if len(rows) > limit {
		rows = rows[:limit]
	}
	return rows
}

// view is one redraw of top.
type view struct {
	Time                time.Time `json:"time"`
	Nodes               int       `json:"nodes"`
	Ready               int       `json:"ready"`
	Connections         float64   `json:"connections"`
	Rooms               float64   `json:"rooms"`
	Bans                float64   `json:"bans"`
	StoreDown           int       `json:"store_down"`
	SyncLagMS           float64   `json:"sync_lag_ms"`
	MessagesPerSecond   float64   `json:"messages_per_second"`
	ViolationsPerSecond float64   `json:"violations_per_second"`
	Clients             []row     `json:"clients"`
	BusiestRooms        []row     `json:"busiest_rooms"`
}

// roomName decodes a room subject token (subject.Token) back to the name
// when it holds it, or shows the hashed token.
func roomName(token string) string {
	if strings.HasPrefix(token, "=") {
		return "(hashed) " + token
	}
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil {
		return "(token) " + token
	}
	return string(b)
}

func runTop(ctx context.Context, e env, args []string) error {
	fs := newFlags(e, "top", topUsage)
	var c connFlags
	c.register(fs, e)
	interval := fs.Duration("interval", time.Second, "how often the view is redrawn")
	limit := fs.Int("limit", 10, "rows per table")
	count := fs.Int("count", 0, "stop after this many views (0: until interrupted)")
	once := fs.Bool("once", false, "print one view and stop (as --count 1)")
	asJSON := fs.Bool("json", false, "print each view as one JSON object a line")
	pos, err := parse(fs, e, args)
	if err != nil {
		return err
	}
	if err := wantArgs("top", pos); err != nil {
		return err
	}
	switch {
	case *interval < 100*time.Millisecond:
		return usageErr("top: --interval %v: must be at least 100ms", *interval)
	case *limit < 1:
		return usageErr("top: --limit %d: must be positive", *limit)
	case *count < 0:
		return usageErr("top: --count %d: must not be negative", *count)
	}
	if *once {
		*count = 1
	}
	nc, err := c.connect(ctx)
	if err != nil {
		return err
	}
	defer nc.Close()

	clients, rooms := newTally(), newTally()
	sub, err := events.Subscribe(ctx, nc, events.Filter{Prefix: c.prefix}, func(ev events.Event) {
		if ev.Type.IsViolation() {
			clients.add(ev.Client, string(ev.Type), time.Now())
		}
	})
	if err != nil {
		return classify("subscribe to events", err)
	}
	defer func() { _ = sub.Close() }()
	roomPrefix := c.prefix + ".rooms."
	rsub, err := nc.Subscribe(roomPrefix+"*", func(m *nats.Msg) {
		rooms.add(roomName(strings.TrimPrefix(m.Subject, roomPrefix)), "", time.Now())
	})
	if err != nil {
		return classify("subscribe to rooms", err)
	}
	defer func() { _ = rsub.Unsubscribe() }()
	if err := nc.FlushTimeout(c.timeout); err != nil {
		return classify("subscribe", err)
	}

	var prev nodeReply
	var prevAt time.Time
	known := 0
	ticker := time.NewTicker(*interval)
	defer ticker.Stop()
	for n := 0; *count == 0 || n < *count; n++ {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ticker.C:
		}
		now := time.Now()
		// The tables' interval ends now, as the stats request goes out.
		clientRows := clients.take(*limit, now, time.Minute)
		roomRows := rooms.take(*limit, now, time.Minute)
		// Wait for the nodes that answered last time, but never longer
		// than 40% of the interval.
		replies, err := askStats(ctx, nc, c.prefix, *interval*4/10, known, nil)
		if err != nil {
			return err
		}
		known = len(replies)
		t := total(replies)
		v := view{Time: now.UTC(), Nodes: len(replies), Connections: t.num("active_connections"), Rooms: t.num("rooms"),
			Bans: t.num("bans"), SyncLagMS: t.num("sync_lag_ms")}
		for _, r := range replies {
			if r.flag("ready") {
				v.Ready++
			}
			if r.flag("store_down") {
				v.StoreDown++
			}
		}
		if prev != nil && len(replies) > 0 {
			secs := now.Sub(prevAt).Seconds()
			v.MessagesPerSecond = max(t.num("total_messages")-prev.num("total_messages"), 0) / secs
			v.ViolationsPerSecond = max(t.sumMap("violations")-prev.sumMap("violations"), 0) / secs
		}
		if len(replies) > 0 {
			prev, prevAt = t, now
		}
		v.Clients, v.BusiestRooms = clientRows, roomRows
		if err := drawTop(e, v, *asJSON); err != nil {
			return err
		}
	}
	return nil
}

func drawTop(e env, v view, asJSON bool) error {
	if asJSON {
		b, err := json.Marshal(v)
		if err != nil {
			return failed(err)
		}
		_, err = fmt.Fprintf(e.stdout, "%s\n", b)
		return err
	}
	var b strings.Builder
	if e.tty {
		b.WriteString("\x1b[H\x1b[2J")
	}
	store := "ok"
	if v.StoreDown > 0 {
		store = fmt.Sprintf("DOWN on %d", v.StoreDown)
	}
	fmt.Fprintf(&b, "ratethrottle top  %s  nodes %d (%d ready)  connections %s  rooms %s  bans %s  store %s  sync lag %.1fms\n",
		v.Time.Format("15:04:05"), v.Nodes, v.Ready, num(v.Connections), num(v.Rooms), num(v.Bans), store, v.SyncLagMS)
	fmt.Fprintf(&b, "messages allowed %.1f/s  violations %.1f/s\n\n", v.MessagesPerSecond, v.ViolationsPerSecond)
	var ct table
	ct.add("CLIENT", "DENIALS/s", "TOTAL", "LAST")
	for _, r := range v.Clients {
		ct.add(short(clean(r.Name), 48), fmt.Sprintf("%.1f", r.PerSecond), fmt.Sprint(r.Total), r.Last)
	}
	b.WriteString(ct.String())
	b.WriteString("\n")
	var rt table
	rt.add("ROOM", "MESSAGES/s", "TOTAL")
	for _, r := range v.BusiestRooms {
		rt.add(short(clean(r.Name), 48), fmt.Sprintf("%.1f", r.PerSecond), fmt.Sprint(r.Total))
	}
	b.WriteString(rt.String())
	if !e.tty {
		b.WriteString("\n")
	}
	_, err := fmt.Fprint(e.stdout, b.String())
	return err
}
