package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestSampleRing checks the ring alone: it keeps the last historyLen
// samples, oldest first, one per second however late the tick, and since
// returns those after a second.
func TestSampleRing(t *testing.T) {
	t.Parallel()
	var r sampleRing
	base := time.Unix(1_800_000_000, 0)
	for i := range historyLen + 50 {
		r.record(base.Add(time.Duration(i)*time.Second), nil)
	}
	r.record(base.Add(time.Duration(historyLen+49)*time.Second+300*time.Millisecond), nil) // a late tick of the same second
	all := r.since(0)
	if len(all) != historyLen {
		t.Fatalf("%d samples kept, want %d", len(all), historyLen)
	}
	for i, s := range all {
		if want := base.Unix() + 50 + int64(i); s.T != want {
			t.Fatalf("sample %d is of second %d, want %d", i, s.T, want)
		}
	}
	if got := r.since(base.Unix() + historyLen + 47); len(got) != 2 || got[0].T != base.Unix()+historyLen+48 {
		t.Errorf("since the last-but-two second: %+v, want the last two samples", got)
	}
	if d := delta(5, 9); d != 5 {
		t.Errorf("delta of a restarted counter = %d, want 5", d)
	}
}

// TestChartHistory checks the hub's merge of the nodes' samples: samples
// already held are not added twice, the next request asks each node for
// what follows its last sample, and samples older than the window go.
func TestChartHistory(t *testing.T) {
	t.Parallel()
	var h chartHistory
	now := time.Unix(1_800_000_000, 0)
	mk := func(from, to int64) []Sample {
		var ss []Sample
		for s := from; s <= to; s++ {
			ss = append(ss, Sample{T: now.Unix() + s, Allowed: s})
		}
		return ss
	}
	h.merge("a", mk(-700, -1), now)
	h.merge("a", mk(-5, 0), now)
	h.merge("b", mk(-3, 0), now)
	h.merge("gone", mk(-900, -650), now)
	got := h.since(0)
	if len(got["a"]) != historyLen || got["a"][0].T != now.Unix()-historyLen+1 || got["a"][historyLen-1].T != now.Unix() {
		t.Errorf("node a holds %d samples from %d, want %d up to now", len(got["a"]), got["a"][0].T-now.Unix(), historyLen)
	}
	if len(got["b"]) != 4 || got["gone"] != nil {
		t.Errorf("node b holds %d samples, want 4; a node silent for longer than the window holds %d, want none", len(got["b"]), len(got["gone"]))
	}
	if recent := h.since(now.Unix() - 2); len(recent["a"]) != 2 || len(recent["b"]) != 2 {
		t.Errorf("since 2 s ago: %d and %d samples, want 2 each", len(recent["a"]), len(recent["b"]))
	}
	var req statsRequest
	if err := json.Unmarshal(h.request(), &req); err != nil || !req.History || req.Since["a"] != now.Unix() || req.Since["b"] != now.Unix() {
		t.Errorf("request %s (%v), want history since now for a and b", h.request(), err)
	}
}

// TestDashboardHistory opens the dashboard WebSocket of a node that has
// run for a few seconds: the first frame carries the node's samples since
// its start, the next ones only the last seconds, each newer.
func TestDashboardHistory(t *testing.T) {
	t.Parallel()
	n := startInProcess(t, "--node-id", "hist-node")
	waitReady(t, n.addr, 30*time.Second)
	waitFor(t, 15*time.Second, "the node to have run for 4 s", func() bool {
		_, body := httpGet(t, "http://"+n.ops+"/stats")
		var st NodeStats
		return json.Unmarshal([]byte(body), &st) == nil && st.UptimeSeconds >= 4
	})
	ws, _, err := websocket.DefaultDialer.Dial("ws://"+n.ops+"/dashboard/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	type frame struct {
		History map[string][]Sample `json:"history"`
		Samples map[string][]Sample `json:"samples"`
	}
	read := func() (frame, string) {
		t.Helper()
		_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, b, err := ws.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		var f frame
		if err := json.Unmarshal(b, &f); err != nil {
			t.Fatalf("frame %.200s: %v", b, err)
		}
		return f, string(b)
	}
	first, raw := read()
	if h := first.History["hist-node"]; len(h) < 3 {
		t.Fatalf("first frame's history holds %d samples of a node up for 4 s, want at least 3: %.300s", len(h), raw)
	}
	if !strings.Contains(raw, `"violations_seen"`) || len(first.Samples["hist-node"]) == 0 {
		t.Errorf("first frame lacks the frame's own fields: %.300s", raw)
	}
	last := first.Samples["hist-node"][len(first.Samples["hist-node"])-1].T
	waitFor(t, 10*time.Second, "a frame with a newer sample", func() bool {
		f, raw := read()
		if f.History != nil {
			t.Fatalf("a later frame carries the history again: %.200s", raw)
		}
		ss := f.Samples["hist-node"]
		if len(ss) > frameHistory+1 {
			t.Fatalf("a frame carries %d samples, want at most %d", len(ss), frameHistory+1)
		}
		return len(ss) > 0 && ss[len(ss)-1].T > last
	})
}
