package main

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ratethrottle/ratethrottle/internal/nodetest"
)

// joinAnswer sends a join for room and returns "joined" or the error code
// of the refusal.
func (c *wsClient) joinAnswer(room string) string {
	c.t.Helper()
	if err := c.send(map[string]any{"type": "join", "room": room}); err != nil {
		c.t.Fatal(err)
	}
	f := c.expect(10*time.Second, func(f map[string]any) bool { return f["type"] == "joined" || f["type"] == "error" })
	if f["type"] == "joined" {
		return "joined"
	}
	s, _ := f["error"].(string)
	return s
}

// TestNodeEnforcesPolicyRooms: the room rules of the node's policy are the
// rooms' limits: an exact name, a pattern and the "*" rule each cap the
// members, and the deprecated rooms setting does not replace them.
func TestNodeEnforcesPolicyRooms(t *testing.T) {
	t.Parallel()
	pol := filepath.Join(t.TempDir(), "policy.yaml")
	doc := "rooms:\n  \"*\": {max_members: 3}\n  tiny: {max_members: 1}\n  \"team-*\": {max_members: 2}\n"
	if err := os.WriteFile(pol, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	n := startInProcess(t, "--policy", pol, "--max-denials", "-1")
	waitReady(t, n.addr, 30*time.Second)
	clients := make([]*wsClient, 4)
	for i := range clients {
		c, err := dialWS(t, n.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.ws.Close()
		clients[i] = c
	}
	for _, tc := range []struct {
		room string
		max  int
	}{{"tiny", 1}, {"team-red", 2}, {"lobby", 3}} {
		for i, c := range clients {
			want := "joined"
			if i >= tc.max {
				want = "room_full"
			}
			if got := c.joinAnswer(tc.room); got != want {
				t.Errorf("room %s, client %d: %s, want %s (max_members %d)", tc.room, i+1, got, want, tc.max)
			}
		}
	}
}

// TestRoomRulesRefused: an invalid room rule is refused with its path by
// --check-config and by PUT /admin/policy, which changes nothing; a policy
// with rooms and the deprecated setting at once is refused too.
func TestRoomRulesRefused(t *testing.T) {
	t.Parallel()
	nodetest.Binary(t)
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("policy:\n  rooms:\n    \"team-*\": {max_members: -2}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := runBinary(t, "--check-config", bad)
	if err == nil || !strings.Contains(out, `policy.rooms.team-*.max_members`) {
		t.Errorf("--check-config of a bad room rule: %v\n%s", err, out)
	}
	both := filepath.Join(dir, "both.yaml")
	if err := os.WriteFile(both, []byte("rooms: {lobby: {max_members: 5}}\npolicy:\n  rooms:\n    lobby: {max_members: 2}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = runBinary(t, "--check-config", both)
	if err == nil || !strings.Contains(out, "rooms") || !strings.Contains(out, "deprecated") {
		t.Errorf("--check-config of rooms twice: %v\n%s", err, out)
	}
	old := filepath.Join(dir, "old.yaml")
	if err := os.WriteFile(old, []byte("rooms:\n  lobby: {member_message_burst: 5}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = runBinary(t, "--check-config", old)
	if err == nil || !strings.Contains(out, "rooms.lobby.member_message_burst") {
		t.Errorf("--check-config of a bad deprecated room rule: %v\n%s", err, out)
	}

	n := startInProcess(t, "--admin-token", testAdminToken)
	waitReady(t, n.addr, 30*time.Second)
	auth := []string{"Authorization", "Bearer " + testAdminToken}
	url := "http://" + n.ops + "/admin/policy"
	var code int
	var body string
	waitFor(t, 10*time.Second, "the policy store", func() bool {
		code, body = httpGet(t, url, auth...)
		return code == http.StatusOK || code == http.StatusNotFound
	})
	if code != http.StatusNotFound {
		t.Fatalf("GET before any PUT: %d %s", code, body)
	}
	code, body = httpDo(t, http.MethodPut, url, "rooms:\n  lobby: {max_members: 5}\n  \"team-*\": {messages_per_minute: 0, message_burst: 3}\n",
		append(auth, "If-None-Match", "*", "Content-Type", "application/yaml")...)
	if code != http.StatusBadRequest || !strings.Contains(body, "rooms.team-*.message_burst") || strings.Contains(body, "rooms.lobby") {
		t.Fatalf("PUT of a bad room rule: %d %s", code, body)
	}
	if code, body = httpGet(t, url, auth...); code != http.StatusNotFound {
		t.Errorf("the refused PUT was stored: %d %s", code, body)
	}

	// A valid change of room limits is stored and applied at once: the two
	// members of the room stay in it, and a join beyond the new cap is
	// refused (the room had no cap when they joined).
	members := make([]*wsClient, 3)
	for i := range members {
		c, err := dialWS(t, n.addr)
		if err != nil {
			t.Fatal(err)
		}
		members[i] = c
	}
	members[0].join("lobby")
	members[1].join("lobby")
	code, body = httpDo(t, http.MethodPut, url, "rooms:\n  lobby: {max_members: 2}\n",
		append(auth, "If-None-Match", "*", "Content-Type", "application/yaml")...)
	if code != http.StatusOK {
		t.Fatalf("PUT of a room rule: %d %s", code, body)
	}
	waitFor(t, 5*time.Second, "the node to apply the room rules", func() bool {
		return strings.Contains(n.out.String(), "room rules applied")
	})
	if f := members[2].joinRefusal("lobby"); f["error"] != "room_full" || fmt.Sprint(f["limit"]) != "2" {
		t.Errorf("a third join after max_members 2: %v", f)
	}
	if err := members[0].send(map[string]any{"type": "message", "room": "lobby", "data": map[string]any{"text": "x"}}); err != nil {
		t.Fatal(err)
	}
	members[1].expect(10*time.Second, func(f map[string]any) bool { return f["type"] == "message" && f["room"] == "lobby" })
}
