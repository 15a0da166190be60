package main

import (
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/ratethrottle/ratethrottle/pkg/wshandler"
)

// TestBinaryDefaults runs the built node with no flags, with only its
// ports moved through the environment, and checks the health endpoint,
// the page, the limiting of a flood and the graceful shutdown.
func TestBinaryDefaults(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := startProc(t, dir, []string{"RATETHROTTLE_LISTEN=127.0.0.1:0", "RATETHROTTLE_OPS_LISTEN=127.0.0.1:0", "RATETHROTTLE_NATS_LISTEN=127.0.0.1:0"})
	base := "http://" + p.addr

	if code, body := httpGet(t, base+"/healthz"); code != 200 || !strings.Contains(body, `"ok"`) {
		t.Fatalf("/healthz = %d %s", code, body)
	}
	code, body := httpGet(t, base+"/")
	if code != 200 || !strings.Contains(body, "RateThrottle chat") || !strings.Contains(body, "chat.js") {
		t.Fatalf("/ = %d %.200s", code, body)
	}
	if code, body := httpGet(t, base+"/chat.js"); code != 200 || !strings.Contains(body, "rate_limit_exceeded") {
		t.Fatalf("/chat.js = %d", code)
	}
	waitReady(t, p.addr, 30*time.Second)
	if _, err := os.Stat(filepath.Join(dir, "data")); err != nil {
		t.Errorf("no ./data directory in the working directory: %v", err)
	}

	// A flood: the default room rule allows a burst of 10 messages per
	// member; the rest are denied with retry_after_ms, and the connection
	// is closed with 1008 after too many denials.
	c, err := dialWS(t, p.addr)
	if err != nil {
		t.Fatal(err)
	}
	c.join("lobby")
	const flood = 40
	for i := range flood {
		if err := c.send(map[string]any{"type": "message", "room": "lobby", "data": map[string]any{"name": "f", "text": i}}); err != nil {
			break // closed by the server
		}
	}
	var delivered, denied int
	var closeErr *websocket.CloseError
	for range flood + 2 {
		f, err := c.read(10 * time.Second)
		if err != nil {
			if !errors.As(err, &closeErr) {
				t.Fatalf("read: %v", err)
			}
			break
		}
		switch f["type"] {
		case "message":
			delivered++
		case "error":
			denied++
			if f["retry_after_ms"] == nil {
				t.Errorf("denial without retry_after_ms: %v", f)
			}
		}
	}
	if delivered != 10 || denied == 0 {
		t.Errorf("flood of %d: %d delivered, %d denied; want 10 delivered and the rest denied", flood, delivered, denied)
	}
	if closeErr == nil || closeErr.Code != websocket.ClosePolicyViolation || closeErr.Text != "too_many_denials" {
		t.Errorf("flood ended with %v, want close 1008 too_many_denials", closeErr)
	}
	_, stats := httpGet(t, "http://"+p.ops+"/stats")
	if !strings.Contains(stats, `"room_rate"`) {
		t.Errorf("/stats does not count the room_rate violations: %s", stats)
	}
	_, metrics := httpGet(t, "http://"+p.ops+"/metrics")
	for _, m := range []string{"ratethrottle_decisions_total{reason=\"ok\"}", "ratethrottle_connections ", "ratethrottle_events_published_total", "ratethrottle_kv_writes_total", "ratethrottle_sync_lag_seconds", `ratethrottle_violations_total{type="room_rate"}`} {
		if !strings.Contains(metrics, m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}

	// SIGTERM closes open connections with 1001 and exits cleanly.
	c2, err := dialWS(t, p.addr)
	if err != nil {
		t.Fatal(err)
	}
	c2.join("lobby")
	if err := p.stop(t); err != nil {
		t.Fatalf("exit: %v\n%s", err, p.out.String())
	}
	_, err = c2.read(5 * time.Second)
	if !websocket.IsCloseError(err, websocket.CloseGoingAway) {
		t.Errorf("open connection at shutdown got %v, want close 1001", err)
	}
	if len(lines(p.out.String(), "embedded NATS server stopped")) != 1 {
		t.Errorf("embedded server not stopped:\n%s", p.out.String())
	}
}

// TestBinaryNoFlagsPort8080 runs the node with no flags and no
// environment at all, when :8080, the operations port 9000 and the NATS
// port 4222 are free.
func TestBinaryNoFlagsPort8080(t *testing.T) {
	for _, addr := range []string{":8080", "127.0.0.1:9000", "127.0.0.1:4222"} {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Skipf("%s is in use: %v", addr, err)
		}
		ln.Close()
	}
	p := startProc(t, t.TempDir(), nil)
	if p.addr != "localhost:8080" || p.ops != "127.0.0.1:9000" {
		t.Fatalf("printed addresses %q and %q, want localhost:8080 and 127.0.0.1:9000", p.addr, p.ops)
	}
	waitReady(t, "127.0.0.1:8080", 30*time.Second)
	if code, _ := httpGet(t, "http://127.0.0.1:8080/healthz"); code != 200 {
		t.Fatalf("/healthz = %d", code)
	}
}

// TestBinaryInvalidConfig checks that the binary exits non-zero and names
// the field and the value.
func TestBinaryInvalidConfig(t *testing.T) {
	t.Parallel()
	out, err := runBinary(t, "--limits-messages-per-minute", "lots")
	if err == nil {
		t.Fatalf("exit 0 for an invalid value:\n%s", out)
	}
	if !strings.Contains(out, "limits.messages_per_minute") || !strings.Contains(out, `"lots"`) {
		t.Errorf("message does not name the field and the value:\n%s", out)
	}
}

// TestBinaryOpsPortBusy starts a node whose operations port is taken: it
// exits non-zero and says which setting to change.
func TestBinaryOpsPortBusy(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	out, err := runBinary(t, "--listen", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0", "--ops-listen", ln.Addr().String())
	if err == nil {
		t.Fatalf("exit 0 with the operations port taken:\n%s", out)
	}
	if !strings.Contains(out, "ops_listen") || !strings.Contains(out, ln.Addr().String()) || !strings.Contains(out, "own ops_listen port") {
		t.Errorf("message does not name ops_listen, the address and the remedy:\n%s", out)
	}
}

// TestInvalidUTF8Counted sends a text frame that is not UTF-8 from a
// client and one from a foreign publisher on the room's subject: the first
// is counted as an invalid_utf8 violation (not "other") in /stats and
// /metrics, the second in ratethrottle_remote_frames_dropped_total.
func TestInvalidUTF8Counted(t *testing.T) {
	t.Parallel()
	n := startInProcess(t)
	waitReady(t, n.addr, 30*time.Second)
	member, err := dialWS(t, n.addr)
	if err != nil {
		t.Fatal(err)
	}
	member.join("lobby")
	nc := n.natsConn(t)
	if err := nc.Publish(wshandler.RoomSubject("ratethrottle", "lobby"), []byte("{\"type\":\"message\",\"room\":\"lobby\",\"data\":\"\xff\xfe\"}")); err != nil {
		t.Fatal(err)
	}
	bad, err := dialWS(t, n.addr)
	if err != nil {
		t.Fatal(err)
	}
	bad.join("lobby")
	if err := bad.ws.WriteMessage(websocket.TextMessage, []byte("{\"type\":\"message\",\"room\":\"lobby\",\"data\":{\"text\":\"\xff\xfe\"}}")); err != nil {
		t.Fatal(err)
	}
	if _, err := bad.read(5 * time.Second); !websocket.IsCloseError(err, websocket.CloseInvalidFramePayloadData) {
		t.Errorf("invalid UTF-8 got %v, want close 1007", err)
	}
	var metrics string
	waitFor(t, 10*time.Second, "both frames counted in /metrics", func() bool {
		_, metrics = httpGet(t, "http://"+n.ops+"/metrics")
		return strings.Contains(metrics, `ratethrottle_violations_total{type="invalid_utf8"} 1`+"\n") &&
			strings.Contains(metrics, "ratethrottle_remote_frames_dropped_total 1\n")
	})
	_, stats := httpGet(t, "http://"+n.ops+"/stats")
	var st NodeStats
	if err := json.Unmarshal([]byte(stats), &st); err != nil {
		t.Fatal(err)
	}
	if st.Violations["invalid_utf8"] != 1 || st.Violations["other"] != 0 {
		t.Errorf("/stats violations = %v, want invalid_utf8 1 and no other", st.Violations)
	}
	// The member still hears its room.
	if err := member.send(map[string]any{"type": "message", "room": "lobby", "data": "still here"}); err != nil {
		t.Fatal(err)
	}
	member.expect(5*time.Second, func(f map[string]any) bool { return f["type"] == "message" && f["data"] == "still here" })
}
