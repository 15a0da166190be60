package main

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// TestHTTPTimeouts opens 40 idle keep-alive connections and 10 POSTs whose
// bodies never finish, on both listeners, with timeouts of one second: the
// node closes every one of them. An open WebSocket outlives the timeouts.
func TestHTTPTimeouts(t *testing.T) {
	t.Parallel()
	n := startInProcess(t, "--http-read-header-timeout", "1s", "--http-read-timeout", "1s",
		"--http-write-timeout", "1s", "--http-idle-timeout", "1s", "--admin-token", testAdminToken)
	waitReady(t, n.addr, 30*time.Second)

	type held struct {
		what string
		conn net.Conn
	}
	var conns []held
	open := func(addr, what, req string, readAnswer bool) {
		t.Helper()
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write([]byte(req)); err != nil {
			t.Fatal(err)
		}
		if readAnswer {
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || resp.Close {
				t.Fatalf("%s: status %d, close %v; want 200 kept alive", what, resp.StatusCode, resp.Close)
			}
		}
		conns = append(conns, held{what, c})
	}
	for i := range 40 {
		addr := []string{n.addr, n.ops}[i%2]
		open(addr, fmt.Sprintf("idle keep-alive %d on %s", i, addr), "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", true)
	}
	for i := range 10 {
		addr, path := n.addr, "/"
		if i%2 == 1 {
			addr, path = n.ops, "/admin/bans"
		}
		open(addr, fmt.Sprintf("slow-body POST %d to %s%s", i, addr, path),
			"POST "+path+" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+testAdminToken+"\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"client\":", false)
	}
	for i := range 4 {
		open(n.addr, fmt.Sprintf("silent connection %d", i), "", false)
	}

	// Each connection must reach EOF (or a reset) well before the
	// 10-second client deadline set at opening.
	for _, h := range conns {
		_, err := readToEnd(h.conn)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("%s: still open after 10 s", h.what)
		}
	}

	// A WebSocket is not cut by the read and write timeouts.
	c, err := dialWS(t, n.addr)
	if err != nil {
		t.Fatal(err)
	}
	c.join("lobby")
	tick := time.NewTicker(700 * time.Millisecond)
	defer tick.Stop()
	for i := range 4 { // 2.8 s, past every timeout
		<-tick.C
		if err := c.send(map[string]any{"type": "message", "room": "lobby", "data": map[string]any{"text": i}}); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		c.expect(5*time.Second, func(f map[string]any) bool { return f["type"] == "message" })
	}
}

// readToEnd reads c until an error: io.EOF or a reset when the peer closes,
// os.ErrDeadlineExceeded when it does not.
func readToEnd(c net.Conn) (int, error) {
	buf := make([]byte, 4096)
	total := 0
	for {
		k, err := c.Read(buf)
		total += k
		if err != nil {
			return total, err
		}
	}
}

// TestHTTPHeaderLimit sends a header block over http.max_header_bytes.
func TestHTTPHeaderLimit(t *testing.T) {
	t.Parallel()
	n := startInProcess(t, "--http-max-header-bytes", "4096")
	code, _ := httpGet(t, "http://"+n.addr+"/healthz", "X-Padding", strings.Repeat("a", 8192))
	if code != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("8 KiB header with a 4 KiB limit = %d, want 431", code)
	}
	if code, _ := httpGet(t, "http://"+n.addr+"/healthz", "X-Padding", strings.Repeat("a", 1024)); code != http.StatusOK {
		t.Errorf("1 KiB header = %d, want 200", code)
	}
}

// TestSecurityHeaders checks the headers of every page of both listeners.
func TestSecurityHeaders(t *testing.T) {
	t.Parallel()
	n := startInProcess(t)
	c := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, u := range []string{"http://" + n.addr + "/", "http://" + n.addr + "/chat.js", "http://" + n.ops + "/dashboard", "http://" + n.ops + "/stats"} {
		resp, err := c.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		h := resp.Header
		csp := h.Get("Content-Security-Policy")
		for _, want := range []string{"script-src 'self'", "style-src 'self'", "frame-ancestors 'none'", "default-src 'none'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("%s: Content-Security-Policy %q lacks %s", u, csp, want)
			}
		}
		if strings.Contains(csp, "unsafe-inline") {
			t.Errorf("%s: Content-Security-Policy %q allows inline code", u, csp)
		}
		for k, want := range map[string]string{"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"} {
			if got := h.Get(k); got != want {
				t.Errorf("%s: %s = %q, want %q", u, k, got, want)
			}
		}
	}
}
