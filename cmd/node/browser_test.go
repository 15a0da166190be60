package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromiumPath is Debian's Chromium, which .ci/run installs.
const chromiumPath = "/usr/bin/chromium"

// screenshotsEnv, when set to 1, makes TestBrowserChat write the
// screenshots of the README to docs/img.
const screenshotsEnv = "RATETHROTTLE_SCREENSHOTS"

// newBrowser starts headless Chromium with a fresh profile and returns a
// context for its first tab. It skips the test when Chromium is missing,
// except under CI, where the browser test must run.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI: %s is missing (.ci/run installs it): %v", chromiumPath, err)
		}
		t.Skipf("%s is missing: %v", chromiumPath, err)
	}
	profile, err := os.MkdirTemp("", "ratethrottle-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Chromium's helpers may write to the profile briefly after the
		// browser has stopped; retry the removal for a bounded time.
		deadline := time.Now().Add(5 * time.Second)
		for os.RemoveAll(profile) != nil && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
	})
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromiumPath),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.UserDataDir(profile),
		chromedp.WindowSize(1100, 820),
	)
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start %s: %v", chromiumPath, err)
	}
	return ctx
}

// tab opens a new tab of the browser of ctx.
func tab(t *testing.T, ctx context.Context) context.Context {
	t.Helper()
	c, cancel := chromedp.NewContext(ctx)
	t.Cleanup(cancel)
	if err := chromedp.Do(c); err != nil {
		t.Fatal(err)
	}
	return c
}

// within runs actions on tab with a deadline.
func within(t *testing.T, tab context.Context, d time.Duration, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, d)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// TestBrowserChat drives the chat page in headless Chromium: two pages chat
// in one room, one floods and sees the rate-limit notice. With
// RATETHROTTLE_SCREENSHOTS=1 it writes docs/img/chat.png and
// docs/img/dashboard.png.
func TestBrowserChat(t *testing.T) {
	browser := newBrowser(t)
	n := startInProcess(t, "--node-id", "node-1")
	waitReady(t, n.addr, 30*time.Second)
	base := "http://" + n.addr

	alice, bob := tab(t, browser), tab(t, browser)
	for _, p := range []struct {
		tab  context.Context
		name string
	}{{alice, "alice"}, {bob, "bob"}} {
		within(t, p.tab, 30*time.Second, p.name+" joins",
			chromedp.Navigate(base+"/?room=lobby&name="+p.name),
			chromedp.WaitVisible("#join-btn"),
			chromedp.Click("#join-btn"),
			chromedp.WaitVisible("#chat"),
			poll(`document.getElementById("status").textContent.includes("Connected")`),
		)
	}

	within(t, alice, 15*time.Second, "alice says hello",
		chromedp.SendKeys("#text", "Hello Bob, are you rate-limited yet?"),
		chromedp.Click("#send-btn"),
	)
	within(t, bob, 15*time.Second, "bob sees alice's message",
		poll(`[...document.querySelectorAll("#messages li")].some(li => li.textContent.includes("alice") && li.textContent.includes("Hello Bob"))`),
	)
	within(t, bob, 15*time.Second, "bob answers",
		chromedp.SendKeys("#text", "Not yet. Watch this."),
		chromedp.Click("#send-btn"),
	)
	within(t, alice, 15*time.Second, "alice sees bob's answer",
		poll(`[...document.querySelectorAll("#messages li")].some(li => li.textContent.includes("Watch this"))`),
	)

	within(t, bob, 15*time.Second, "bob floods and sees the rate-limit notice",
		chromedp.Click("#flood-btn"),
		poll(`(() => { const n = document.getElementById("notice"); return !n.hidden && n.classList.contains("ratelimit") && /wait \d+(\.\d)? s/.test(n.textContent) })()`),
	)
	notice, err := chromedp.Run(bob, chromedp.Text("#notice"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(notice, "room_rate_exceeded") && !strings.Contains(notice, "rate_limit_exceeded") {
		t.Errorf("notice %q does not name the limit", notice)
	}
	within(t, alice, 15*time.Second, "alice sees only the allowed part of the flood",
		poll(`[...document.querySelectorAll("#messages li")].some(li => li.textContent.includes("flood 1"))`),
	)

	if os.Getenv(screenshotsEnv) != "1" {
		return
	}
	dir := filepath.Join("..", "..", "docs", "img")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	shot(t, bob, filepath.Join(dir, "chat.png"))
	dash := tab(t, browser)
	within(t, dash, 30*time.Second, "the dashboard shows the violations",
		chromedp.Navigate("http://"+n.ops+"/dashboard"),
		poll(`document.querySelectorAll("#violations tr").length > 3 && document.getElementById("live").textContent.startsWith("live")`),
	)
	shot(t, dash, filepath.Join(dir, "dashboard.png"))
}

// poll waits until the JavaScript expression is truthy, for at most 10 s.
func poll(expr string) chromedp.Action[chromedp.Void] {
	return chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(10*time.Second), chromedp.WithPollingInterval(50*time.Millisecond))
}

func shot(t *testing.T, tab context.Context, path string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, 15*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s (%d bytes)", path, len(png))
}
