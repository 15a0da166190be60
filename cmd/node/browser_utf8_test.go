package main

import (
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/gorilla/websocket"
)

// TestBrowserInvalidUTF8 has a member send a text frame whose bytes are
// not UTF-8 (ff fe) into a room where a Chromium page is a member. A
// browser must fail a connection that receives such a frame (RFC 6455
// §8.1), so the server must not relay it: the page stays connected and
// receives the messages sent after it.
func TestBrowserInvalidUTF8(t *testing.T) {
	browser := newBrowser(t)
	n := startInProcess(t, "--node-id", "utf8-node")
	waitReady(t, n.addr, 30*time.Second)

	page := tab(t, browser)
	w := watchTab(t, page)
	within(t, page, 30*time.Second, "carol joins",
		chromedp.Navigate("http://"+n.addr+"/?room=lobby&name=carol"),
		chromedp.WaitVisible("#join-btn"),
		chromedp.Click("#join-btn"),
		chromedp.WaitVisible("#chat"),
		poll(`document.getElementById("status").dataset.state === "open"`),
	)

	mallory, err := dialWS(t, n.addr)
	if err != nil {
		t.Fatal(err)
	}
	mallory.joinAs("lobby", "mallory")
	dave, err := dialWS(t, n.addr)
	if err != nil {
		t.Fatal(err)
	}
	dave.joinAs("lobby", "dave")
	if err := dave.send(map[string]any{"type": "message", "room": "lobby", "data": map[string]any{"text": "before the bad frame"}}); err != nil {
		t.Fatal(err)
	}
	within(t, page, 15*time.Second, "carol sees the message before the bad frame",
		poll(`[...document.querySelectorAll("#messages li")].some(li => li.textContent.includes("before the bad frame"))`),
	)

	bad := []byte(`{"type":"message","room":"lobby","data":{"text":"` + "\xff\xfe" + `"}}`)
	_ = mallory.ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := mallory.ws.WriteMessage(websocket.TextMessage, bad); err != nil {
		t.Fatal(err)
	}
	// The sender learns of its invalid frame from the server: close 1007.
	for range 5 {
		if _, err = mallory.read(10 * time.Second); err != nil {
			break
		}
	}
	if !websocket.IsCloseError(err, websocket.CloseInvalidFramePayloadData) {
		t.Errorf("the sender of invalid UTF-8 got %v, want close 1007", err)
	}

	if err := dave.send(map[string]any{"type": "message", "room": "lobby", "data": map[string]any{"text": "after the bad frame"}}); err != nil {
		t.Fatal(err)
	}
	within(t, page, 15*time.Second, "carol stays connected and sees the message after the bad frame",
		poll(`[...document.querySelectorAll("#messages li")].some(li => li.textContent.includes("after the bad frame")) || document.getElementById("status").dataset.state !== "open"`),
	)
	state := jsString(t, page, `document.getElementById("status").dataset.state + " " + (document.getElementById("notice").hidden ? "" : document.getElementById("notice").textContent)`)
	if state != "open " {
		t.Fatalf("the page left the room after a member's invalid UTF-8 frame: status %q", state)
	}
	w.check(t, "carol")
}

// joinAs joins room under name and waits for the joined frame.
func (c *wsClient) joinAs(room, name string) {
	c.t.Helper()
	if err := c.send(map[string]any{"type": "join", "room": room, "name": name}); err != nil {
		c.t.Fatal(err)
	}
	c.expect(5*time.Second, func(f map[string]any) bool { return f["type"] == "joined" && f["room"] == room })
}
