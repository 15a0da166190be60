package main

import (
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
)

// opsPaths are the operations endpoints, which the public listener must
// not serve.
var opsPaths = []string{"/metrics", "/stats", "/stats?scope=cluster", "/dashboard", "/dashboard.html", "/dashboard.js", "/dashboard/ws", "/admin/bans"}

// TestOpsListener checks the split of the two listeners: the public one
// serves the chat page, its assets, /ws and the probes and answers 404 for
// every operations path; the operations listener serves those.
func TestOpsListener(t *testing.T) {
	t.Parallel()
	n := startInProcess(t)
	waitReady(t, n.addr, 30*time.Second)
	if n.ops == "" {
		t.Fatalf("the start-up line names no operations address:\n%s", n.out.String())
	}
	pub, ops := "http://"+n.addr, "http://"+n.ops
	for _, p := range []string{"/", "/chat.js", "/style.css", "/healthz", "/readyz"} {
		if code, _ := httpGet(t, pub+p); code != http.StatusOK {
			t.Errorf("public GET %s = %d, want 200", p, code)
		}
	}
	if _, err := dialWS(t, n.addr); err != nil {
		t.Errorf("public /ws: %v", err)
	}
	for _, p := range opsPaths {
		if code, _ := httpGet(t, pub+p); code != http.StatusNotFound {
			t.Errorf("public GET %s = %d, want 404", p, code)
		}
	}
	if code, _ := httpDo(t, http.MethodPost, pub+"/admin/bans", `{"client":"x"}`, "Content-Type", "application/json"); code != http.StatusNotFound {
		t.Errorf("public POST /admin/bans = %d, want 404", code)
	}
	for _, p := range []string{"/metrics", "/stats", "/stats?scope=cluster", "/dashboard", "/dashboard.js", "/style.css", "/healthz", "/readyz"} {
		if code, _ := httpGet(t, ops+p); code != http.StatusOK {
			t.Errorf("operations GET %s = %d, want 200", p, code)
		}
	}
	for _, p := range []string{"/chat.js", "/ws"} {
		if code, _ := httpGet(t, ops+p); code != http.StatusNotFound {
			t.Errorf("operations GET %s = %d, want 404", p, code)
		}
	}
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	ws, _, err := d.Dial("ws://"+n.ops+"/dashboard/ws", nil)
	if err != nil {
		t.Fatalf("operations /dashboard/ws: %v", err)
	}
	defer ws.Close()
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, b, err := ws.ReadMessage(); err != nil || !strings.Contains(string(b), `"violations_seen"`) {
		t.Errorf("dashboard frame %.200s, %v", b, err)
	}

	// The chat page links to the operations listener for a browser on
	// this machine, and not for one behind a proxy.
	_, page := httpGet(t, pub+"/")
	if !strings.Contains(page, `href="http://`+n.ops+`/dashboard"`) {
		t.Errorf("the chat page asked from loopback does not link to http://%s/dashboard:\n%s", n.ops, page)
	}
	if _, page := httpGet(t, pub+"/", "X-Forwarded-For", "203.0.113.7"); strings.Contains(page, "/dashboard") {
		t.Errorf("the chat page asked through a proxy links to the dashboard:\n%s", page)
	}
}

// TestOpsListenerOff runs a node with ops_listen empty: the start-up line
// says so, the public listener still serves no operations path.
func TestOpsListenerOff(t *testing.T) {
	t.Parallel()
	n := startInProcess(t, "--ops-listen", "")
	if n.ops != "" || len(lines(n.out.String(), "operations endpoints off")) != 1 {
		t.Errorf("start-up output with ops_listen empty:\n%s", n.out.String())
	}
	for _, p := range opsPaths {
		if code, _ := httpGet(t, "http://"+n.addr+p); code != http.StatusNotFound {
			t.Errorf("public GET %s = %d, want 404", p, code)
		}
	}
	if _, page := httpGet(t, "http://"+n.addr+"/"); strings.Contains(page, "/dashboard") {
		t.Errorf("the chat page links to a dashboard that is off:\n%s", page)
	}
}

// TestChatPageLinks checks when the chat page links to the operations
// listener: only when that listener is on loopback and the request comes
// straight from loopback.
func TestChatPageLinks(t *testing.T) {
	t.Parallel()
	tcp := func(s string) net.Addr { return net.TCPAddrFromAddrPort(mustAddrPort(t, s)) }
	cases := []struct {
		ops    net.Addr
		remote string
		header string
		want   bool
	}{
		{tcp("127.0.0.1:9000"), "127.0.0.1:5000", "", true},
		{tcp("[::1]:9000"), "[::1]:5000", "", true},
		{tcp("127.0.0.1:9000"), "[::ffff:127.0.0.1]:5000", "", true},
		{tcp("127.0.0.1:9000"), "203.0.113.7:5000", "", false},
		{tcp("127.0.0.1:9000"), "127.0.0.1:5000", "X-Forwarded-For", false},
		{tcp("127.0.0.1:9000"), "127.0.0.1:5000", "Forwarded", false},
		{tcp("127.0.0.1:9000"), "127.0.0.1:5000", "X-Real-IP", false},
		{tcp("10.0.0.5:9000"), "127.0.0.1:5000", "", false},
		{tcp("0.0.0.0:9000"), "127.0.0.1:5000", "", false},
		{nil, "127.0.0.1:5000", "", false},
	}
	for _, c := range cases {
		p, err := newChatPages(c.ops)
		if err != nil {
			t.Fatal(err)
		}
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr = c.remote
		if c.header != "" {
			r.Header.Set(c.header, "203.0.113.9")
		}
		page := string(p.forRequest(r))
		if got := strings.Contains(page, `id="ops-links"`); got != c.want {
			t.Errorf("ops %v, request from %s with %q: links %v, want %v", c.ops, c.remote, c.header, got, c.want)
		}
		if strings.Contains(page, opsMarker) {
			t.Errorf("the page keeps the marker %s", opsMarker)
		}
	}
}

// TestDashboardOneQueryPerInterval opens many dashboards on one node and
// counts the cluster statistics requests on NATS: one per interval for all
// of them, not one per dashboard.
func TestDashboardOneQueryPerInterval(t *testing.T) {
	t.Parallel()
	n := startInProcess(t)
	waitReady(t, n.addr, 30*time.Second)
	nc := n.natsConn(t)
	var queries atomic.Int64
	sub, err := nc.Subscribe(statsSubject("ratethrottle"), func(*nats.Msg) { queries.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	const viewers = 8
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	conns := make([]*websocket.Conn, viewers)
	for i := range conns {
		ws, _, err := d.Dial("ws://"+n.ops+"/dashboard/ws", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
		conns[i] = ws
	}
	// Every viewer gets frames; count the queries while each takes three.
	for _, ws := range conns {
		_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, _, err := ws.ReadMessage(); err != nil {
			t.Fatal(err)
		}
	}
	start, before := time.Now(), queries.Load()
	frames := make(chan error, viewers)
	for _, ws := range conns {
		go func() {
			for range 3 {
				_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
				if _, _, err := ws.ReadMessage(); err != nil {
					frames <- err
					return
				}
			}
			frames <- nil
		}()
	}
	for range viewers {
		if err := <-frames; err != nil {
			t.Fatal(err)
		}
	}
	elapsed, got := time.Since(start), queries.Load()-before
	// One query per interval elapsed, plus one for a tick at either end.
	if limit := int64(elapsed/dashboardInterval) + 1; got > limit || got < 2 {
		t.Errorf("%d dashboards caused %d cluster queries in %v, want at most %d (one per %v) and at least 2", viewers, got, elapsed.Round(time.Millisecond), limit, dashboardInterval)
	}
	t.Logf("%d dashboards, %d cluster queries in %v", viewers, got, elapsed.Round(time.Millisecond))
}

func mustAddrPort(t *testing.T, s string) netip.AddrPort {
	t.Helper()
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		t.Fatal(err)
	}
	return ap
}
