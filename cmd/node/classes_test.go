package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestNodeEnforcesClasses: the node applies its policy's message classes:
// a typing flood is refused, naming the class and the layer, while
// ordinary messages from the same connection pass.
func TestNodeEnforcesClasses(t *testing.T) {
	t.Parallel()
	pol := filepath.Join(t.TempDir(), "policy.yaml")
	doc := "limits:\n  messages_per_minute: 600\n  message_burst: 100\n  max_concurrent_connections: 0\n" +
		"classes:\n  typing:\n    rate: 1\n    burst: 2\n"
	if err := os.WriteFile(pol, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	n := startInProcess(t, "--policy", pol, "--max-denials", "-1", "--rooms", "*:max_members=100")
	waitReady(t, n.addr, 30*time.Second)
	c, err := dialWS(t, n.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.ws.Close()
	c.join("r")
	relayed, refused := 0, 0
	for range 5 {
		if err := c.send(map[string]any{"type": "typing", "room": "r"}); err != nil {
			t.Fatal(err)
		}
		f := c.expect(5*time.Second, func(f map[string]any) bool { return f["type"] == "typing" || f["type"] == "error" })
		switch {
		case f["type"] == "typing":
			relayed++
		case f["error"] == "class_rate_exceeded" && f["class"] == "typing" && f["layer"] == "connection":
			refused++
		default:
			t.Fatalf("typing frame answered with %v", f)
		}
	}
	if relayed != 2 || refused != 3 {
		t.Errorf("typing: %d relayed, %d refused; want the burst of 2 relayed and 3 refused", relayed, refused)
	}
	for i := range 5 {
		if err := c.send(map[string]any{"type": "message", "room": "r", "data": map[string]any{"text": i}}); err != nil {
			t.Fatal(err)
		}
		if f := c.expect(5*time.Second, func(f map[string]any) bool { return f["type"] == "message" || f["type"] == "error" }); f["type"] != "message" {
			t.Fatalf("message %d after the typing flood: %v", i, f)
		}
	}
}
