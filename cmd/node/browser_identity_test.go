package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestBrowserDemoSignIn signs in on the chat page with a demo token of the
// pro tier: the page shows the tier and its limits, joins with the token
// and meets the pro burst; no policy violation or exception on the page.
func TestBrowserDemoSignIn(t *testing.T) {
	browser := newBrowser(t)
	pol := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(pol, []byte("limits:\n  messages_per_minute: 1\n  message_burst: 3\ntiers:\n  pro:\n    limits:\n      messages_per_minute: 1\n      message_burst: 5\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	n := startInProcess(t, "--identity-demo-tokens=true", "--policy", pol, "--max-denials", "-1")
	waitReady(t, n.addr, 30*time.Second)
	page := tab(t, browser)
	w := watchTab(t, page)
	within(t, page, 30*time.Second, "carol signs in as pro and joins",
		chromedp.Navigate("http://"+n.addr+"/?room=lobby"),
		chromedp.WaitVisible("#signin"),
		chromedp.SendKeys("#user", "carol"),
		chromedp.SetValue("#tier", "pro"),
		chromedp.Click("#signin-btn"),
		poll(`document.getElementById("identity").dataset.client === "user:carol"`),
		chromedp.Click("#join-btn"),
		chromedp.WaitVisible("#chat"),
		poll(`document.getElementById("status").textContent.includes("Connected")`),
	)
	if txt := jsString(t, page, `document.getElementById("identity").textContent`); !strings.Contains(txt, "tier pro") || !strings.Contains(txt, "burst 5") {
		t.Errorf("identity shown: %q, want the pro tier and its burst", txt)
	}
	if name := jsString(t, page, `document.getElementById("name").value`); name != "carol" {
		t.Errorf("name %q, want the signed-in user", name)
	}
	within(t, page, 15*time.Second, "the flood meets the pro burst",
		chromedp.Click("#flood-btn"),
		poll(`document.getElementById("notice").dataset.reason === "rate_limit_exceeded"`),
	)
	// The join and four messages pass the burst of 5; the fifth is refused.
	within(t, page, 10*time.Second, "four of the flood delivered",
		poll(`document.querySelectorAll("#messages li.mine").length === 4`),
	)
	w.check(t, "chat page")
}
