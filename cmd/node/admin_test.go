package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/ratethrottle/ratethrottle/pkg/events"
)

// testAdminToken is an admin token long enough for the node to accept.
const testAdminToken = "test-admin-token-0123456789"

// TestAdminAPI runs a node in-process with an admin token: the ban API
// refuses requests without the right token, and a ban closes the client's
// open connection and refuses new ones until lifted.
func TestAdminAPI(t *testing.T) {
	t.Parallel()
	n := startInProcess(t, "--admin-token", testAdminToken, "--node-id", "admin-node")
	base := "http://" + n.ops
	waitReady(t, n.addr, 30*time.Second)

	for _, h := range [][]string{nil, {"Authorization", "Bearer wrong"}, {"Authorization", testAdminToken}} {
		if code, _ := httpGet(t, base+"/admin/bans", h...); code != http.StatusUnauthorized {
			t.Errorf("GET /admin/bans with %v = %d, want 401", h, code)
		}
		if code, _ := httpDo(t, http.MethodPost, base+"/admin/bans", `{"client":"127.0.0.1"}`, h...); code != http.StatusUnauthorized {
			t.Errorf("POST /admin/bans with %v = %d, want 401", h, code)
		}
		if code, _ := httpDo(t, http.MethodDelete, base+"/admin/bans/127.0.0.1", "", h...); code != http.StatusUnauthorized {
			t.Errorf("DELETE /admin/bans with %v = %d, want 401", h, code)
		}
	}
	auth := []string{"Authorization", "Bearer " + testAdminToken, "Content-Type", "application/json"}

	c, err := dialWS(t, n.addr)
	if err != nil {
		t.Fatal(err)
	}
	c.join("lobby")
	if code, body := httpDo(t, http.MethodPost, base+"/admin/bans", `{"client":"127.0.0.1","duration":"10m","reason":"test"}`, auth...); code != http.StatusCreated {
		t.Fatalf("ban = %d %s", code, body)
	}
	_, err = c.read(10 * time.Second)
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.ClosePolicyViolation || ce.Text != "banned" {
		t.Errorf("banned client's connection ended with %v, want 1008 banned", err)
	}
	if code, body := httpGet(t, base+"/admin/bans", auth...); code != 200 || !strings.Contains(body, `"127.0.0.1"`) || !strings.Contains(body, `"test"`) {
		t.Errorf("list = %d %s", code, body)
	}
	if admitted := tryJoin(t, n.addr); admitted != "banned" {
		t.Errorf("new connection of a banned client: %s, want refused with banned", admitted)
	}
	if code, body := httpDo(t, http.MethodPost, base+"/admin/bans", `{"client":""}`, auth...); code != http.StatusBadRequest || !strings.Contains(body, "client") {
		t.Errorf("empty client = %d %s", code, body)
	}
	if code, body := httpDo(t, http.MethodPost, base+"/admin/bans", `{"client":"x","duration":"forever"}`, auth...); code != http.StatusBadRequest || !strings.Contains(body, "forever") {
		t.Errorf("bad duration = %d %s", code, body)
	}
	if code, body := httpDo(t, http.MethodDelete, base+"/admin/bans/127.0.0.1", "", auth...); code != 200 {
		t.Fatalf("unban = %d %s", code, body)
	}
	waitFor(t, 10*time.Second, "the unban to take effect", func() bool { return tryJoin(t, n.addr) == "joined" })
}

// TestAdminAPIDisabled checks that without a token the API is off.
func TestAdminAPIDisabled(t *testing.T) {
	t.Parallel()
	n := startInProcess(t)
	code, body := httpGet(t, "http://"+n.ops+"/admin/bans", "Authorization", "Bearer ")
	if code != http.StatusForbidden || !strings.Contains(body, "admin_token") {
		t.Errorf("GET /admin/bans without a configured token = %d %s, want 403", code, body)
	}
}

// tryJoin dials and joins a room, returning "joined" or the close reason.
func tryJoin(t *testing.T, addr string) string {
	t.Helper()
	c, err := dialWS(t, addr)
	if err != nil {
		return err.Error()
	}
	defer c.ws.Close()
	return c.joinOutcome("lobby")
}

// TestAdminAPIRequests checks how the admin API reads a request: the
// Bearer scheme in any case, one JSON object as the body and nothing after
// it, application/json only; with the token read from a file.
func TestAdminAPIRequests(t *testing.T) {
	t.Parallel()
	n := startInProcess(t, "--admin-token-file", writeFile(t, "admin.token", testAdminToken+"\n"))
	waitReady(t, n.addr, 30*time.Second)
	url := "http://" + n.ops + "/admin/bans"
	for _, scheme := range []string{"Bearer", "bearer", "BEARER", "bEaReR"} {
		if code, body := httpGet(t, url, "Authorization", scheme+" "+testAdminToken); code != http.StatusOK {
			t.Errorf("scheme %q: %d %s, want 200", scheme, code, body)
		}
	}
	for _, h := range []string{"Basic " + testAdminToken, "Bearer" + testAdminToken, "Bearer " + testAdminToken + "x", "Bearer " + testAdminToken[:16]} {
		if code, _ := httpGet(t, url, "Authorization", h); code != http.StatusUnauthorized {
			t.Errorf("Authorization %q: %d, want 401", h, code)
		}
	}
	auth := "Bearer " + testAdminToken
	cases := []struct {
		name, contentType, body string
		want                    int
	}{
		{"trailing object", "application/json", `{"client":"198.51.100.1"}{"client":"198.51.100.2"}`, http.StatusBadRequest},
		{"trailing text", "application/json", `{"client":"198.51.100.1"} x`, http.StatusBadRequest},
		{"no content type", "", `{"client":"198.51.100.1"}`, http.StatusUnsupportedMediaType},
		{"form", "application/x-www-form-urlencoded", `{"client":"198.51.100.1"}`, http.StatusUnsupportedMediaType},
		{"text", "text/plain", `{"client":"198.51.100.1"}`, http.StatusUnsupportedMediaType},
		{"unknown field", "application/json", `{"client":"198.51.100.1","until":"never"}`, http.StatusBadRequest},
		{"trailing whitespace", "application/json", "{\"client\":\"198.51.100.3\",\"duration\":\"1m\"}\n \n", http.StatusCreated},
		{"charset", "application/json; charset=utf-8", `{"client":"198.51.100.4","duration":"1m"}`, http.StatusCreated},
	}
	for _, c := range cases {
		h := []string{"Authorization", auth}
		if c.contentType != "" {
			h = append(h, "Content-Type", c.contentType)
		}
		if code, body := httpDo(t, http.MethodPost, url, c.body, h...); code != c.want {
			t.Errorf("%s: %d %s, want %d", c.name, code, body, c.want)
		}
	}
	_, list := httpGet(t, url, "Authorization", auth)
	if strings.Contains(list, "198.51.100.1") || strings.Contains(list, "198.51.100.2") {
		t.Errorf("a refused request set a ban: %s", list)
	}
}

// TestBearerMatches checks the token comparison alone.
func TestBearerMatches(t *testing.T) {
	t.Parallel()
	const tok = "0123456789abcdef"
	for h, want := range map[string]bool{
		"Bearer " + tok: true, "bearer " + tok: true, "BEARER  " + tok: true,
		"Bearer " + tok + " ": false, "Bearer": false, "": false, tok: false,
		"Token " + tok: false, "Bearer 0123456789abcdeF": false, "Bearer 0123456789abcde": false,
	} {
		if got := bearerMatches(h, tok); got != want {
			t.Errorf("bearerMatches(%q) = %v, want %v", h, got, want)
		}
	}
}

// TestAdminBanStored checks that POST /admin/bans answers with the ban as
// stored: an IP address becomes the client ID the node gives it (an IPv6
// address its ipv6_prefix network, so that every address in it is
// refused), and until is the stored end, empty for a ban longer than the
// store can hold, which lasts until lifted.
func TestAdminBanStored(t *testing.T) {
	t.Parallel()
	n := startInProcess(t, "--admin-token", testAdminToken, "--trusted-proxies", "127.0.0.1/32", "--ipv6-prefix", "56")
	waitReady(t, n.addr, 30*time.Second)
	url := "http://" + n.ops + "/admin/bans"
	auth := []string{"Authorization", "Bearer " + testAdminToken, "Content-Type", "application/json"}
	post := func(body string) banReply {
		t.Helper()
		code, out := httpDo(t, http.MethodPost, url, body, auth...)
		if code != http.StatusCreated {
			t.Fatalf("POST %s = %d %s", body, code, out)
		}
		var r banReply
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("reply %s: %v", out, err)
		}
		return r
	}

	before := time.Now()
	r := post(`{"client":"2001:db8:1:2::7","duration":"10m"}`)
	if r.Banned != "2001:db8:1::/56" || r.Requested != "2001:db8:1:2::7" {
		t.Errorf("ban of an IPv6 address stored as %q (requested %q), want its /56 2001:db8:1::/56", r.Banned, r.Requested)
	}
	until, err := time.Parse(time.RFC3339Nano, r.Until)
	if err != nil || until.Before(before.Add(10*time.Minute)) || until.After(time.Now().Add(10*time.Minute)) {
		t.Errorf("until = %q (%v), want 10 minutes after the request", r.Until, err)
	}
	// Another address of the same /56, through the trusted proxy, is refused.
	if got := joinFrom(t, n.addr, "2001:db8:1:ff::1"); got != "banned" {
		t.Errorf("a client in the banned /56: %s, want refused with banned", got)
	}
	if got := joinFrom(t, n.addr, "2001:db8:2::1"); got != "joined" {
		t.Errorf("a client outside the banned /56: %s, want joined", got)
	}
	// Lifting the ban by any address in the prefix lifts it.
	if code, body := httpDo(t, http.MethodDelete, url+"/2001:db8:1:3::9", "", auth...); code != http.StatusOK || !strings.Contains(body, "2001:db8:1::/56") {
		t.Errorf("unban by another address of the prefix = %d %s", code, body)
	}
	waitFor(t, 10*time.Second, "the unban to take effect", func() bool { return joinFrom(t, n.addr, "2001:db8:1:ff::1") == "joined" })

	if r := post(`{"client":"::ffff:198.51.100.9","duration":"1m"}`); r.Banned != "198.51.100.9" {
		t.Errorf("an IPv4-mapped address is banned as %q, want 198.51.100.9", r.Banned)
	}
	if r := post(`{"client":"user-42","duration":"1m"}`); r.Banned != "user-42" {
		t.Errorf("a client ID that is not an address is banned as %q, want it unchanged", r.Banned)
	}
	// Longer than events.MaxBanDuration: stored, and reported, as until lifted.
	long := (events.MaxBanDuration + time.Hour).String()
	if r := post(`{"client":"198.51.100.10","duration":"` + long + `"}`); r.Until != "" {
		t.Errorf("a ban of %s reported until %q, want empty (until lifted, as stored)", long, r.Until)
	}
	if r := post(`{"client":"198.51.100.11"}`); r.Until != "" {
		t.Errorf("a ban without duration reported until %q, want empty", r.Until)
	}
	_, list := httpGet(t, url, auth...)
	var l struct{ Bans []events.Ban }
	if err := json.Unmarshal([]byte(list), &l); err != nil {
		t.Fatal(err)
	}
	for _, b := range l.Bans {
		if b.Client == "198.51.100.10" && !b.Until.IsZero() {
			t.Errorf("the long ban is stored until %v, want until lifted", b.Until)
		}
	}
}

// joinFrom dials addr as a client at ip, named in X-Forwarded-For (the
// node must trust loopback as a proxy), joins a room and returns "joined"
// or the close reason.
func joinFrom(t *testing.T, addr, ip string) string {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	ws, resp, err := d.Dial("ws://"+addr+"/ws", http.Header{"X-Forwarded-For": {ip}})
	if err != nil {
		if resp != nil {
			return fmt.Sprintf("HTTP %d", resp.StatusCode)
		}
		return err.Error()
	}
	defer ws.Close()
	return (&wsClient{t: t, ws: ws}).joinOutcome("lobby")
}
