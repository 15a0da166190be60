package main

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestAdminAPI runs a node in-process with an admin token: the ban API
// refuses requests without the right token, and a ban closes the client's
// open connection and refuses new ones until lifted.
func TestAdminAPI(t *testing.T) {
	t.Parallel()
	n := startInProcess(t, "--admin-token", "s3cret", "--node-id", "admin-node")
	base := "http://" + n.addr
	waitReady(t, n.addr, 30*time.Second)

	for _, h := range [][]string{nil, {"Authorization", "Bearer wrong"}, {"Authorization", "s3cret"}} {
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
	auth := []string{"Authorization", "Bearer s3cret"}

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
	code, body := httpGet(t, "http://"+n.addr+"/admin/bans", "Authorization", "Bearer ")
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
