package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"

	"github.com/ratethrottle/ratethrottle/internal/wait"
	"github.com/ratethrottle/ratethrottle/pkg/events"
	"github.com/ratethrottle/ratethrottle/pkg/wshandler"
)

// admitted dials the node's /ws as 127.0.0.1 and reports whether the
// node admits the connection, or the error code it refuses it with.
func admitted(t *testing.T, n *node) (bool, string) {
	t.Helper()
	c, resp, err := websocket.DefaultDialer.Dial("ws://"+n.http+"/ws", nil)
	if err != nil {
		if resp != nil {
			return false, resp.Status
		}
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	// A refused connection gets an error frame and a close; an admitted one
	// answers a join.
	_ = c.WriteJSON(map[string]string{"type": "join", "room": "probe"})
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var f struct {
		Type  string `json:"type"`
		Error string `json:"error"`
	}
	if err := c.ReadJSON(&f); err != nil {
		return false, err.Error()
	}
	return f.Type == "joined", f.Error
}

// TestBansVerb bans the loopback client through the tool and checks that a
// real node refuses it, lists the ban, lifts it and lets the client in.
func TestBansVerb(t *testing.T) {
	t.Parallel()
	n := startNode(t, "bans-node")
	envs := natsEnv(n.nats)
	if r := cli(t, envs, "bans", "list"); r.code != 0 || !strings.Contains(r.stdout, "no bans in force") {
		t.Fatalf("empty list: %+v", r)
	}
	if ok, why := admitted(t, n); !ok {
		t.Fatalf("refused before the ban: %s", why)
	}
	r := cli(t, envs, "bans", "add", "127.0.0.1", "--for", "10m", "--reason", "cli test")
	if r.code != 0 || !strings.Contains(r.stdout, "banned 127.0.0.1 until 20") {
		t.Fatalf("add: %+v", r)
	}
	wait.For(t, 2*time.Second, "the node to refuse the banned client", func() bool {
		ok, why := admitted(t, n)
		return !ok && strings.Contains(why, "banned")
	})
	r = cli(t, envs, "bans", "list", "--json")
	var bans []events.Ban
	if err := json.Unmarshal([]byte(r.stdout), &bans); err != nil || r.code != 0 {
		t.Fatalf("list --json: %v %+v", err, r)
	}
	if len(bans) != 1 || bans[0].Client != "127.0.0.1" || bans[0].Reason != "cli test" || !strings.HasPrefix(bans[0].Node, "cli@") ||
		time.Until(bans[0].Until) < 9*time.Minute {
		t.Errorf("bans %+v", bans)
	}
	r = cli(t, envs, "bans", "list")
	if !strings.Contains(r.stdout, "127.0.0.1") || !strings.Contains(r.stdout, "cli test") {
		t.Errorf("list:\n%s", r.stdout)
	}
	// A hostile client ID is quoted on the terminal, not printed raw.
	if r := cli(t, envs, "bans", "add", "--", "-evil\x1b[2J\n"); r.code != 0 || strings.Contains(r.stdout, "\x1b") {
		t.Errorf("hostile add: %+v", r)
	}
	if r := cli(t, envs, "bans", "list"); strings.Contains(r.stdout, "\x1b") || !strings.Contains(r.stdout, `"-evil\x1b[2J\n"`) {
		t.Errorf("hostile list:\n%s", r.stdout)
	}
	// An IPv6 address names its /64, the client the nodes see at it
	// (ipv6_prefix); --ipv6-prefix 128 names the address alone.
	if r := cli(t, envs, "bans", "add", "2001:db8:1:2::7"); r.code != 0 || !strings.Contains(r.stdout, "banned 2001:db8:1:2::/64 until lifted") {
		t.Errorf("IPv6 add: %+v", r)
	}
	if r := cli(t, envs, "bans", "rm", "2001:db8:1:2::99"); r.code != 0 || !strings.Contains(r.stdout, "lifted the ban of 2001:db8:1:2::/64") {
		t.Errorf("IPv6 rm of another address in the /64: %+v", r)
	}
	if r := cli(t, envs, "bans", "add", "--ipv6-prefix", "128", "::ffff:192.0.2.1"); r.code != 0 || !strings.Contains(r.stdout, "banned 192.0.2.1 until lifted") {
		t.Errorf("IPv4-mapped add: %+v", r)
	}
	if r := cli(t, envs, "bans", "rm", "192.0.2.1"); r.code != 0 {
		t.Errorf("rm 192.0.2.1: %+v", r)
	}
	if r := cli(t, envs, "bans", "add", "--ipv6-prefix", "129", "2001:db8::1"); r.code != exitUsage {
		t.Errorf("--ipv6-prefix 129: %+v, want usage exit", r)
	}
	if r := cli(t, envs, "bans", "rm", "127.0.0.1"); r.code != 0 || !strings.Contains(r.stdout, "lifted") {
		t.Fatalf("rm: %+v", r)
	}
	wait.For(t, 2*time.Second, "the node to admit the client again", func() bool {
		ok, _ := admitted(t, n)
		return ok
	})
	if r := cli(t, envs, "bans", "rm", "127.0.0.1"); r.code != exitNotFound || !strings.Contains(r.stderr, "not banned") {
		t.Errorf("rm again: %+v", r)
	}
	// A ban until lifted.
	if r := cli(t, envs, "bans", "add", "198.51.100.1"); r.code != 0 || !strings.Contains(r.stdout, "until lifted") {
		t.Errorf("add until lifted: %+v", r)
	}
	// --json prints the ban as stored.
	r = cli(t, envs, "bans", "add", "198.51.100.2", "--for", "1h", "--reason", "json", "--json")
	var ban events.Ban
	if err := json.Unmarshal([]byte(r.stdout), &ban); err != nil || r.code != 0 || ban.Client != "198.51.100.2" || ban.Reason != "json" ||
		ban.Since.IsZero() || ban.Until.Sub(ban.Since) != time.Hour {
		t.Errorf("add --json: %v %+v", err, r)
	}
	// Another bucket: no node uses it.
	if r := cli(t, envs, "bans", "list", "--kv-bucket", "other"); r.code != exitNotFound || !strings.Contains(r.stderr, `"other_bans"`) {
		t.Errorf("missing bucket: %+v", r)
	}
}

// TestBansVerbWithoutNode: against NATS with no node the bucket does not
// exist, and the tool says so rather than create it.
func TestBansVerbWithoutNode(t *testing.T) {
	t.Parallel()
	srv := startNATS(t)
	r := cli(t, natsEnv(srv.ClientURL()), "bans", "add", "x")
	if r.code != exitNotFound || !strings.Contains(r.stderr, "ratethrottle_bans") {
		t.Errorf("add without a node: %+v", r)
	}
}

// tailer runs "events tail" in the background.
type tailer struct {
	done   chan result
	cancel context.CancelFunc
}

func startTail(envs []string, args ...string) *tailer {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	tl := &tailer{done: make(chan result, 1), cancel: cancel}
	go func() { tl.done <- cliCtx(ctx, envs, append([]string{"events", "tail"}, args...)...) }()
	return tl
}

// untilDone calls poke every 50 ms until the tail exits, for at most 10 s.
func (tl *tailer) untilDone(t *testing.T, poke func(i int)) result {
	t.Helper()
	defer tl.cancel()
	for i := range 200 {
		select {
		case r := <-tl.done:
			return r
		case <-time.After(50 * time.Millisecond):
			poke(i)
		}
	}
	t.Fatal("events tail did not exit within 10s")
	return result{}
}

// TestEventsVerb follows a real node's ban events live, filtered by type
// and client, as text and JSON, then reads them back from the history
// stream with --since.
func TestEventsVerb(t *testing.T) {
	t.Parallel()
	n := startNode(t, "events-node")
	envs := natsEnv(n.nats)
	if r := cli(t, envs, "events", "tail", "--since", "1m"); r.code != exitNotFound || !strings.Contains(r.stderr, "events keep") {
		t.Fatalf("tail --since without a stream: %+v", r)
	}
	if r := cli(t, envs, "events", "keep", "--max-age", "1h"); r.code != 0 || !strings.Contains(r.stdout, "RATETHROTTLE_EVENTS") {
		t.Fatalf("keep: %+v", r)
	}

	tl := startTail(envs, "--type", "ban", "--client", "target", "--count", "1", "--json")
	r := tl.untilDone(t, func(i int) {
		// Another client, and an unban, that the filters drop; then the one.
		cli(t, envs, "bans", "add", fmt.Sprint("other-", i), "--for", "1m")
		cli(t, envs, "bans", "add", "target", "--for", "1m", "--reason", fmt.Sprint("poke ", i))
		cli(t, envs, "bans", "rm", "target")
	})
	var ev events.Event
	if err := json.Unmarshal([]byte(r.stdout), &ev); err != nil || r.code != 0 {
		t.Fatalf("tail --json: %v %+v", err, r)
	}
	if ev.Type != events.TypeBan || ev.Client != "target" || !strings.HasPrefix(ev.Reason, "poke ") || ev.Until.IsZero() {
		t.Errorf("event %+v", ev)
	}

	tl = startTail(envs, "--type", "unban", "--count", "1")
	r = tl.untilDone(t, func(i int) {
		cli(t, envs, "bans", "add", "text-target")
		cli(t, envs, "bans", "rm", "text-target")
	})
	if r.code != 0 || !strings.Contains(r.stdout, " unban ") || !strings.Contains(r.stdout, "client=text-target") || strings.Count(r.stdout, "\n") != 1 {
		t.Errorf("tail text: %+v", r)
	}

	// The history: every ban of "target" within the last minute, at once.
	r = cli(t, envs, "events", "tail", "--since", "1m", "--client", "target", "--type", "ban,unban", "--count", "2", "--json")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if r.code != 0 || len(lines) != 2 {
		t.Fatalf("tail --since: %+v", r)
	}
	var first, second events.Event
	_ = json.Unmarshal([]byte(lines[0]), &first)
	_ = json.Unmarshal([]byte(lines[1]), &second)
	if first.Type != events.TypeBan || second.Type != events.TypeUnban || first.Client != "target" || second.Client != "target" {
		t.Errorf("history %+v then %+v", first, second)
	}
}

// TestStatsVerb asks a real node for its statistics.
func TestStatsVerb(t *testing.T) {
	t.Parallel()
	n := startNode(t, "stats-node")
	envs := natsEnv(n.nats)
	r := cli(t, envs, "stats", "--json", "--expect", "1")
	var got struct {
		Nodes []map[string]any `json:"nodes"`
		Total map[string]any   `json:"total"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || r.code != 0 {
		t.Fatalf("stats --json: %v %+v", err, r)
	}
	if len(got.Nodes) != 1 || got.Nodes[0]["node"] != "stats-node" || got.Nodes[0]["ready"] != true ||
		got.Total["node"] != "*" || got.Total["live_nodes"] != float64(1) {
		t.Errorf("stats %+v", got)
	}
	if _, ok := got.Nodes[0]["limits"].(map[string]any); !ok {
		t.Errorf("the node's limits were not kept: %+v", got.Nodes[0])
	}
	r = cli(t, envs, "stats", "--node", "stats-node")
	if r.code != 0 || !strings.Contains(r.stdout, "stats-node") || !strings.Contains(r.stdout, "\n*  ") || !strings.Contains(r.stdout, "SYNC LAG") {
		t.Errorf("stats:\n%s\n%s", r.stdout, r.stderr)
	}
	if r := cli(t, envs, "stats", "--node", "nosuch", "--wait", "300ms"); r.code != exitNotFound || !strings.Contains(r.stderr, "nosuch") {
		t.Errorf("stats --node nosuch: %+v", r)
	}
}

func TestTotal(t *testing.T) {
	t.Parallel()
	a := nodeReply{"node": "a", "ready": true, "store_down": false, "active_connections": 3.0, "sync_lag_ms": 4.0,
		"denied": map[string]any{"banned": 2.0}, "limits": map[string]any{"message_scope": "connection"}, "new_counter": 1.0}
	b := nodeReply{"node": "b", "ready": false, "store_down": true, "active_connections": 5.0, "sync_lag_ms": 9.0,
		"denied": map[string]any{"banned": 1.0, "rate_limit_exceeded": 7.0}, "new_counter": 2.0}
	tot := total([]nodeReply{a, b})
	if tot.num("active_connections") != 8 || tot.num("sync_lag_ms") != 9 || tot.flag("ready") || !tot.flag("store_down") ||
		tot.sumMap("denied") != 10 || tot.num("new_counter") != 3 {
		t.Errorf("total %+v", tot)
	}
}

// TestTopVerb runs two connections of one client on a real node: one
// sends steadily to a room with room for it, the other floods a room that
// allows one message a minute. top's views name the client among the
// denials and the first room among the busiest.
func TestTopVerb(t *testing.T) {
	t.Parallel()
	n := startNode(t, "top-node", "--limits-preset", "generous", "--max-denials", "-1",
		"--rooms", "lobby/main:member_messages_per_minute=100000,member_message_burst=1000;*:member_messages_per_minute=1,member_message_burst=1")
	envs := natsEnv(n.nats)
	// top sees the rooms whose messages the nodes relay over NATS: rooms
	// with members on more than one node. A second node that has both
	// rooms answers the node's presence messages, as in a cluster.
	secondNodeHas(t, n.nats, "lobby/main", "tight")
	traffic := func() (stop func()) {
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); send(ctx, n, "lobby/main", 100*time.Millisecond) }()
		go func() { defer wg.Done(); send(ctx, n, "tight", 10*time.Millisecond) }()
		return func() { cancel(); wg.Wait() }
	}
	stop := traffic()
	r := cli(t, envs, "top", "--json", "--count", "5", "--interval", "300ms")
	stop()
	if r.code != 0 {
		t.Fatalf("top: %+v", r)
	}
	var sawClient, sawRoom bool
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 5 {
		t.Fatalf("%d views, want 5:\n%s", len(lines), r.stdout)
	}
	for _, l := range lines {
		var v view
		if err := json.Unmarshal([]byte(l), &v); err != nil {
			t.Fatalf("view %q: %v", l, err)
		}
		if v.Nodes != 1 || v.Ready != 1 {
			t.Errorf("view nodes %d ready %d", v.Nodes, v.Ready)
		}
		if len(v.Clients) > 0 && v.Clients[0].Name == "127.0.0.1" && v.Clients[0].Total > 0 && v.Clients[0].Last == "room_rate" {
			sawClient = true
		}
		if len(v.BusiestRooms) > 0 && v.BusiestRooms[0].Name == "lobby/main" && v.BusiestRooms[0].Total > 0 {
			sawRoom = true
		}
	}
	if !sawClient || !sawRoom {
		t.Errorf("client seen %v, room seen %v:\n%s", sawClient, sawRoom, r.stdout)
	}
	// The text view.
	stop = traffic()
	r = cli(t, envs, "top", "--count", "2", "--interval", "500ms")
	stop()
	t.Logf("top:\n%s", r.stdout)
	if r.code != 0 || !strings.Contains(r.stdout, "nodes 1 (1 ready)") || !strings.Contains(r.stdout, "DENIALS/s") || !strings.Contains(r.stdout, "MESSAGES/s") {
		t.Errorf("top:\n%s\n%s", r.stdout, r.stderr)
	}
}

// send joins room as 127.0.0.1 and sends a message every period until ctx
// ends, reconnecting if the node closes the connection; at most 20,000
// frames.
func send(ctx context.Context, n *node, room string, period time.Duration) {
	tick := time.NewTicker(period)
	defer tick.Stop()
	for sent := 0; sent < 20000 && ctx.Err() == nil; {
		c, _, err := websocket.DefaultDialer.DialContext(ctx, "ws://"+n.http+"/ws", nil)
		if err != nil {
			select {
			case <-ctx.Done():
			case <-tick.C:
			}
			continue
		}
		go func() { // drain
			for {
				if _, _, err := c.NextReader(); err != nil {
					return
				}
			}
		}()
		_ = c.WriteJSON(map[string]string{"type": "join", "room": room})
		for ; sent < 20000; sent++ {
			select {
			case <-ctx.Done():
			case <-tick.C:
			}
			if ctx.Err() != nil || c.WriteJSON(map[string]any{"type": "message", "room": room, "data": map[string]int{"n": sent}}) != nil {
				break
			}
		}
		c.Close()
	}
}

// TestBansVerbLongBan sets, through the tool, a ban longer than the NATS
// server's expiry clock holds (issue: such a ban answered success and was
// gone within a second) and a one-second ban. Once the short ban's expiry
// event shows the server's expiry pass has run, a real node still refuses
// the long-banned client, and the tool lists the ban as until lifted.
func TestBansVerbLongBan(t *testing.T) {
	t.Parallel()
	n := startNode(t, "long-ban-node")
	envs := natsEnv(n.nats)
	tl := startTail(envs, "--type", "unban", "--client", "short", "--count", "1", "--json")
	// The tail subscribes asynchronously: set the short ban again until its
	// expiry is seen (each ban of "short" replaces the last).
	var long result
	r := tl.untilDone(t, func(i int) {
		if i == 0 {
			long = cli(t, envs, "bans", "add", "127.0.0.1", "--for", "2100000h")
		}
		if i%40 == 0 {
			cli(t, envs, "bans", "add", "short", "--for", "1s")
		}
	})
	if long.code != 0 {
		t.Fatalf("long ban: %+v", long)
	}
	var ev events.Event
	if err := json.Unmarshal([]byte(r.stdout), &ev); err != nil || ev.Reason != "expired" {
		t.Fatalf("short ban's expiry: %v %+v", err, r)
	}
	if ok, why := admitted(t, n); ok || !strings.Contains(why, "banned") {
		t.Errorf("long-banned client after the expiry pass: admitted %v (%s)", ok, why)
	}
	var bans []events.Ban
	r = cli(t, envs, "bans", "list", "--json")
	if err := json.Unmarshal([]byte(r.stdout), &bans); err != nil || len(bans) != 1 || bans[0].Client != "127.0.0.1" || !bans[0].Until.IsZero() {
		t.Errorf("list after the expiry pass: %v %s", err, r.stdout)
	}
	if !strings.Contains(long.stdout, "until lifted") {
		t.Errorf("long ban: %s", long.stdout)
	}
}

// secondNodeHas answers the presence messages of rooms on the NATS server
// at url as a node that has those rooms would, so that the node under test
// keeps relaying their messages over NATS (a room with members on one node
// only is not published; wshandler.NATSBroker).
func secondNodeHas(t *testing.T, url string, rooms ...string) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	here := func(subject string) *nats.Msg {
		return &nats.Msg{Subject: subject, Header: nats.Header{
			wshandler.HeaderOrigin: []string{"second-node"}, wshandler.HeaderPresence: []string{wshandler.PresenceHere}}}
	}
	for _, room := range rooms {
		_, err := nc.Subscribe(wshandler.PresenceSubject(wshandler.DefaultSubjectPrefix, room), func(m *nats.Msg) {
			if m.Header.Get(wshandler.HeaderOrigin) == "second-node" {
				return
			}
			switch m.Header.Get(wshandler.HeaderPresence) {
			case wshandler.PresenceProbe:
				if m.Reply != "" {
					_ = nc.PublishMsg(here(m.Reply))
				}
			case wshandler.PresenceHello:
				_ = nc.PublishMsg(here(m.Subject))
			}
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}
