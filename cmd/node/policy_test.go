package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ratethrottle/ratethrottle/internal/nodetest"
)

// nodeLimits reads a node's limits in force from its /stats.
func nodeLimits(t *testing.T, ops string) LimitsJSON {
	t.Helper()
	_, body := httpGet(t, "http://"+ops+"/stats")
	var st struct {
		Limits LimitsJSON `json:"limits"`
	}
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatalf("stats of %s: %v: %s", ops, err, body)
	}
	return st.Limits
}

// rateDenial sends room messages on c until one is refused for its rate,
// at most max, and returns the refusal's error frame.
func (c *wsClient) rateDenial(room string, max int) map[string]any {
	c.t.Helper()
	for i := range max {
		if err := c.send(map[string]any{"type": "message", "room": room, "id": fmt.Sprint("m", i), "data": map[string]any{"name": "m", "text": "x"}}); err != nil {
			c.t.Fatalf("send: %v", err)
		}
		f := c.expect(10*time.Second, func(f map[string]any) bool {
			return f["id"] == fmt.Sprint("m", i) || f["type"] == "message"
		})
		if f["type"] == "error" {
			return f
		}
	}
	c.t.Fatalf("no rate denial in %d messages", max)
	return nil
}

// TestBinaryPolicyLiveChange runs three node processes started with a
// policy file: a PUT of a new policy on one node is in force on all three
// within one second of its answer, with a WebSocket open on each that
// stays open and whose emptied message bucket the change does not refill;
// its lowered max_members for a room is in force on all three within one
// second too, with the room's members (one on each node) still in it; a
// stale If-Match gets 412 and an invalid policy 400 naming its path,
// changing nothing.
func TestBinaryPolicyLiveChange(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "policy.yaml")
	// One message a minute refills nothing within the test: a bucket
	// emptied before the change is empty after it unless it was refilled.
	const rooms = "rooms:\n  \"*\": {max_members: 100}\n  live: {max_members: %d}\n"
	before := "limits:\n  connections_per_minute: 100\n  messages_per_minute: 1\n  message_burst: 8\n" + fmt.Sprintf(rooms, 3)
	if err := os.WriteFile(file, []byte(before), 0o600); err != nil {
		t.Fatal(err)
	}
	procs := startCluster(t, []string{t.TempDir(), t.TempDir(), t.TempDir()}, []int{freePort(t), freePort(t), freePort(t)},
		[]string{"RATETHROTTLE_ADMIN_TOKEN=" + testAdminToken},
		"--policy", file, "--max-denials", "-1")
	for _, p := range procs {
		waitReady(t, p.addr, 60*time.Second)
	}
	auth := []string{"Authorization", "Bearer " + testAdminToken}
	url := func(p *proc) string { return "http://" + p.ops + "/admin/policy" }

	// The first node up publishes its file policy.
	var etag string
	waitFor(t, 15*time.Second, "the seeded policy", func() bool {
		req, _ := http.NewRequest(http.MethodGet, url(procs[1]), nil)
		req.Header.Set(auth[0], auth[1])
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		etag = resp.Header.Get("ETag")
		return resp.StatusCode == http.StatusOK
	})
	for _, p := range procs {
		if l := nodeLimits(t, p.ops); l.MessageBurst != 8 || l.MessagesPerMinute != 1 {
			t.Fatalf("node %s starts with %+v, want the file policy's", p.ops, l)
		}
	}

	// A member on each node, alone in its room, empties its message bucket.
	members := make([]*wsClient, 3)
	for i, p := range procs {
		c, err := dialWS(t, p.addr)
		if err != nil {
			t.Fatal(err)
		}
		c.join(fmt.Sprint("room", i))
		if f := c.rateDenial(fmt.Sprint("room", i), 12); f["error"] != "rate_limit_exceeded" {
			t.Fatalf("node%d: denial %v", i+1, f)
		}
		members[i] = c
	}
	// The room "live" is full with one member on each node: a probe on
	// each is refused under the cap of 3.
	live := make([]*wsClient, 3)
	probes := make([]*wsClient, 3)
	for i, p := range procs {
		var err error
		if live[i], err = dialWS(t, p.addr); err != nil {
			t.Fatal(err)
		}
		live[i].join("live")
	}
	for i, p := range procs {
		var err error
		if probes[i], err = dialWS(t, p.addr); err != nil {
			t.Fatal(err)
		}
		if f := probes[i].joinRefusal("live"); f["error"] != "room_full" || fmt.Sprint(f["limit"]) != "3" {
			t.Fatalf("node%d: a fourth join under max_members 3: %v", i+1, f)
		}
	}

	// An invalid policy is refused with its path and changes nothing.
	code, body := httpDo(t, http.MethodPut, url(procs[0]), "limits:\n  messages_per_minute: -5\n",
		append(auth, "If-Match", etag, "Content-Type", "application/yaml")...)
	if code != http.StatusBadRequest || !strings.Contains(body, "limits.messages_per_minute") {
		t.Fatalf("invalid policy: %d %s", code, body)
	}

	after := "limits:\n  connections_per_minute: 100\n  messages_per_minute: 2\n  message_burst: 20\n" + fmt.Sprintf(rooms, 2)
	code, body = httpDo(t, http.MethodPut, url(procs[0]), after,
		append(auth, "If-Match", etag, "Content-Type", "application/yaml")...)
	put := time.Now()
	if code != http.StatusOK {
		t.Fatalf("PUT: %d %s", code, body)
	}
	for i, p := range procs {
		deadline := put.Add(time.Second)
		for {
			l := nodeLimits(t, p.ops)
			if l.MessageBurst == 20 && l.MessagesPerMinute == 2 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node%d: limits %+v one second after the PUT", i+1, l)
			}
			time.Sleep(20 * time.Millisecond) // polling interval, bounded by the deadline
		}
	}
	t.Logf("in force on three nodes %v after the PUT's answer", time.Since(put))
	// The room rules too: a join is refused under the new cap on every
	// node within a second. A refused join costs no message token, and
	// --max-denials -1 keeps the probes open.
	for i, c := range probes {
		deadline := put.Add(time.Second)
		for {
			f := c.joinRefusal("live")
			if f["error"] == "room_full" && fmt.Sprint(f["limit"]) == "2" {
				break
			}
			if f["error"] != "room_full" || time.Now().After(deadline) {
				t.Fatalf("node%d: join %v one second after the PUT, want room_full under max_members 2", i+1, f)
			}
			time.Sleep(20 * time.Millisecond) // polling interval, bounded by the deadline
		}
	}
	t.Logf("room rules in force on three nodes %v after the PUT's answer", time.Since(put))
	// Lowering the cap closed no one: the three members are still in the
	// room, and a message from one reaches all three, across the nodes.
	if err := live[0].send(map[string]any{"type": "message", "room": "live", "data": map[string]any{"text": "still here"}}); err != nil {
		t.Fatal(err)
	}
	for i, c := range live {
		c.expect(10*time.Second, func(f map[string]any) bool {
			if f["type"] == "error" {
				t.Fatalf("node%d: member of live: %v", i+1, f)
			}
			return f["type"] == "message" && f["room"] == "live"
		})
	}

	// The open connections are still open and still empty: the next message
	// is refused under the new limit, not admitted from a refilled bucket.
	for i, c := range members {
		f := c.rateDenial(fmt.Sprint("room", i), 1)
		if f["error"] != "rate_limit_exceeded" || fmt.Sprint(f["limit"]) != "2" {
			t.Errorf("node%d after the change: %v, want a denial under the new limit", i+1, f)
		}
	}

	// A stale revision gets 412; the document stays the second one.
	code, body = httpDo(t, http.MethodPut, url(procs[2]), before,
		append(auth, "If-Match", etag, "Content-Type", "application/yaml")...)
	if code != http.StatusPreconditionFailed {
		t.Fatalf("stale If-Match: %d %s", code, body)
	}
	if l := nodeLimits(t, procs[2].ops); l.MessageBurst != 20 {
		t.Errorf("a refused PUT changed the limits: %+v", l)
	}
	code, body = httpGet(t, "http://"+procs[2].ops+"/admin/policy/history", auth...)
	if code != http.StatusOK || strings.Count(body, `"revision"`) != 2 {
		t.Errorf("history: %d %s", code, body)
	}
	code, _ = httpGet(t, url(procs[0]))
	if code != http.StatusUnauthorized {
		t.Errorf("GET without the token: %d", code)
	}
}

// TestPolicyRoomRateLiveChange: a PUT lowering a room's member message rate
// is enforced within one second on a connection that stays open, whose
// emptied member bucket the change does not refill.
func TestPolicyRoomRateLiveChange(t *testing.T) {
	t.Parallel()
	pol := filepath.Join(t.TempDir(), "policy.yaml")
	const doc = "limits:\n  messages_per_minute: 1000\nrooms:\n  \"*\": {max_members: 100}\n  chat: {member_messages_per_minute: %d, member_message_burst: %d}\n"
	if err := os.WriteFile(pol, []byte(fmt.Sprintf(doc, 2, 6)), 0o600); err != nil {
		t.Fatal(err)
	}
	n := startInProcess(t, "--policy", pol, "--admin-token", testAdminToken, "--max-denials", "-1")
	waitReady(t, n.addr, 30*time.Second)
	auth := []string{"Authorization", "Bearer " + testAdminToken}
	url := "http://" + n.ops + "/admin/policy"
	var etag string
	waitFor(t, 10*time.Second, "the seeded policy", func() bool {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header.Set(auth[0], auth[1])
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		etag = resp.Header.Get("ETag")
		return resp.StatusCode == http.StatusOK
	})
	c, err := dialWS(t, n.addr)
	if err != nil {
		t.Fatal(err)
	}
	c.join("chat")
	// Six messages empty the member bucket (2 a minute: no refill within the test).
	if f := c.rateDenial("chat", 10); f["error"] != "room_rate_exceeded" || fmt.Sprint(f["limit"]) != "2" {
		t.Fatalf("before the change: %v", f)
	}
	code, body := httpDo(t, http.MethodPut, url, fmt.Sprintf(doc, 1, 3),
		append(auth, "If-Match", etag, "Content-Type", "application/yaml")...)
	put := time.Now()
	if code != http.StatusOK {
		t.Fatalf("PUT: %d %s", code, body)
	}
	// Each refused message takes nothing; the refusal names the rate in force.
	for i := 0; ; i++ {
		id := fmt.Sprint("p", i)
		if err := c.send(map[string]any{"type": "message", "room": "chat", "id": id, "data": map[string]any{"text": "x"}}); err != nil {
			t.Fatal(err)
		}
		f := c.expect(10*time.Second, func(f map[string]any) bool { return f["id"] == id || f["type"] == "message" })
		if f["type"] == "message" {
			t.Fatalf("a message was admitted after the change: the emptied bucket was refilled")
		}
		if f["error"] == "room_rate_exceeded" && fmt.Sprint(f["limit"]) == "1" {
			break
		}
		if f["error"] != "room_rate_exceeded" || time.Now().After(put.Add(time.Second)) {
			t.Fatalf("%v one second after the PUT, want room_rate_exceeded under the new limit 1", f)
		}
		time.Sleep(20 * time.Millisecond) // polling interval, bounded by the deadline
	}
	t.Logf("room rate in force %v after the PUT's answer", time.Since(put))
	if err := c.send(map[string]any{"type": "leave", "room": "chat", "id": "l"}); err != nil {
		t.Fatal(err)
	}
	c.expect(5*time.Second, func(f map[string]any) bool { return f["type"] == "left" && f["id"] == "l" })
}

// joinRefusal sends a join for room, which must be refused, and returns
// the error frame (or the joined frame, if it was not refused).
func (c *wsClient) joinRefusal(room string) map[string]any {
	c.t.Helper()
	if err := c.send(map[string]any{"type": "join", "room": room, "id": "probe"}); err != nil {
		c.t.Fatal(err)
	}
	return c.expect(10*time.Second, func(f map[string]any) bool { return f["id"] == "probe" })
}

// TestCheckConfig validates a configuration file with its policy section
// and exits without starting; an invalid policy names its path.
func TestCheckConfig(t *testing.T) {
	t.Parallel()
	nodetest.Binary(t)
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(good, []byte("listen: 127.0.0.1:0\npolicy:\n  limits:\n    messages_per_minute: 60\n  classes:\n    typing:\n      rate: 30\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("policy:\n  classes:\n    typing:\n      rate: 30\n  tiers:\n    pro:\n      classes:\n        typing:\n          rate: -1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := runBinary(t, "--check-config", good)
	if err != nil || !strings.Contains(out, "configuration valid") || !strings.Contains(out, "1 classes") {
		t.Errorf("good: %v\n%s", err, out)
	}
	if strings.Contains(out, "listening") {
		t.Errorf("--check-config started the node:\n%s", out)
	}
	out, err = runBinary(t, "--check-config", bad)
	if err == nil || !strings.Contains(out, "policy.tiers.pro.classes.typing.rate") || !strings.Contains(out, bad) {
		t.Errorf("bad: %v\n%s", err, out)
	}
	out, err = runBinary(t, "--check-config", good, "--policy", filepath.Join(dir, "missing.yaml"))
	if err == nil || !strings.Contains(out, "policy_file") {
		t.Errorf("both a section and a file: %v\n%s", err, out)
	}
}
