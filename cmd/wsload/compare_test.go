package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/ratethrottle/ratethrottle/pkg/wshandler"
)

// startEcho serves a bare gorilla echo at /ws, with no metrics.
func startEcho(t *testing.T) *httptest.Server {
	t.Helper()
	var wg sync.WaitGroup
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wg.Add(1)
		defer wg.Done()
		ws, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		for {
			mt, p, err := ws.ReadMessage()
			if err != nil || ws.WriteMessage(mt, p) != nil {
				return
			}
		}
	}))
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
		wg.Wait()
	})
	return srv
}

// TestCompareAlternatesServers runs a closed-loop room echo against a
// handler and a bare echo server (which gets no joins), two rounds, and
// checks that every round measured both and the report gives the ratios.
func TestCompareAlternatesServers(t *testing.T) {
	node := startNode(t, openLimits, wshandler.Config{MaxDenials: -1})
	echo := startEcho(t)
	cs, err := ParseContenders("node="+node.URL+"/ws,echo="+echo.URL+"/ws", false, "")
	if err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	cmp, err := Compare(context.Background(), Config{
		Conns: 10, Rooms: 10, Window: 2, NoJoin: true, Duration: 300 * time.Millisecond,
		Settle: 10 * time.Millisecond, Drain: 200 * time.Millisecond, Log: &log,
	}, cs, 2, &log)
	if err != nil {
		t.Fatal(err)
	}
	if len(cmp.Rounds) != 2 {
		t.Fatalf("%d rounds, want 2", len(cmp.Rounds))
	}
	for i, row := range cmp.Rounds {
		for j, m := range row {
			if m.PerSec <= 0 || m.Delivered < 0.99 || m.Problems != "" {
				t.Errorf("round %d, %s: %+v", i+1, cs[j].Name, m)
			}
		}
	}
	// Round 1 starts with the node, round 2 with the echo server.
	if l := log.String(); strings.Index(l, "round 1/2: node") > strings.Index(l, "round 1/2: echo") ||
		strings.Index(l, "round 2/2: echo") > strings.Index(l, "round 2/2: node") {
		t.Errorf("rounds not alternated:\n%s", l)
	}
	var out bytes.Buffer
	WriteComparison(&out, cmp)
	if !strings.Contains(out.String(), "node / peer, median of per-round ratios") || !strings.Contains(out.String(), "\necho ") {
		t.Errorf("report:\n%s", out.String())
	}
}

func TestParseContenders(t *testing.T) {
	cs, err := ParseContenders("node=ws://127.0.0.1:1/ws|http://127.0.0.1:2/metrics,hub=ws://127.0.0.1:3/ws", false, "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	if cs[0].Target.Metrics != "http://127.0.0.1:2/metrics" || cs[1].Target.Metrics != "http://127.0.0.1:3/metrics" {
		t.Errorf("metrics URLs %q and %q", cs[0].Target.Metrics, cs[1].Target.Metrics)
	}
	for _, bad := range []string{"a=ws://127.0.0.1:1/ws|ftp://127.0.0.1:2/m,b=ws://127.0.0.1:3/ws",
		"a=ws://127.0.0.1:1/ws|http://10.0.0.1:2/m,b=ws://127.0.0.1:3/ws"} {
		if _, err := ParseContenders(bad, false, "/metrics"); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	for _, bad := range []string{"ws://127.0.0.1:1/ws", "a=ws://127.0.0.1:1/ws", "a=ws://127.0.0.1:1/ws,=x", "a=ws://10.0.0.1:1/ws,b=ws://127.0.0.1:2/ws"} {
		if _, err := ParseContenders(bad, false, ""); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
