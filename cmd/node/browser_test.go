package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// chromiumPath is Debian's Chromium, which .ci/run installs.
const chromiumPath = "/usr/bin/chromium"

// screenshotsEnv, when set to 1, makes TestBrowserChat and
// TestBrowserDashboardCluster write the screenshots of the README to
// screenshotDir.
const screenshotsEnv = "RATETHROTTLE_SCREENSHOTS"

// screenshotDir is docs/img, from the package directory.
var screenshotDir = filepath.Join("..", "..", "docs", "img")

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
// in one room, one floods and sees the rate-limit notice, and the
// dashboard, reached through the page's link, goes live. Every page runs
// under the content security policy without a violation or an uncaught
// exception. With RATETHROTTLE_SCREENSHOTS=1 it writes docs/img/chat.png.
func TestBrowserChat(t *testing.T) {
	browser := newBrowser(t)
	n := startInProcess(t, "--node-id", "node-1")
	waitReady(t, n.addr, 30*time.Second)
	base := "http://" + n.addr

	alice, bob := tab(t, browser), tab(t, browser)
	watches := map[string]*pageWatch{"alice": watchTab(t, alice), "bob": watchTab(t, bob)}
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
	// The server names a member's connection in "joined"; the page marks
	// its own messages by it.
	if conn := jsString(t, alice, `document.getElementById("chat").dataset.connection || ""`); conn == "" {
		t.Fatal(`alice's page has no connection ID from its "joined" frame`)
	}

	within(t, alice, 15*time.Second, "alice says hello",
		chromedp.SendKeys("#text", "Hello Bob, are you rate-limited yet?"),
		chromedp.Click("#send-btn"),
	)
	within(t, bob, 15*time.Second, "bob sees alice's message",
		poll(`[...document.querySelectorAll("#messages li")].some(li => li.textContent.includes("Hello Bob") && !li.classList.contains("mine"))`),
	)
	within(t, alice, 15*time.Second, "alice sees her message",
		poll(`[...document.querySelectorAll("#messages li")].some(li => li.textContent.includes("Hello Bob"))`),
	)
	within(t, bob, 15*time.Second, "bob sees alice's name on her message",
		poll(`[...document.querySelectorAll("#messages li")].some(li => li.querySelector(".who")?.textContent === "alice" && li.textContent.includes("Hello Bob"))`),
	)
	within(t, alice, 15*time.Second, "alice's page marks her message as hers",
		poll(`[...document.querySelectorAll("#messages li.mine")].some(li => li.textContent.includes("Hello Bob"))`),
	)
	within(t, bob, 15*time.Second, "bob answers",
		chromedp.SendKeys("#text", "Not yet. Watch this."),
		chromedp.Click("#send-btn"),
	)
	within(t, alice, 15*time.Second, "alice sees bob's answer, not as hers",
		poll(`[...document.querySelectorAll("#messages li")].some(li => li.textContent.includes("Watch this") && !li.classList.contains("mine"))`),
	)
	// A member that puts bob's name in its message's data is not shown as
	// bob, and bob's page does not take the message for its own.
	eve, err := dialWS(t, n.addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := eve.send(map[string]any{"type": "join", "room": "lobby", "name": "eve"}); err != nil {
		t.Fatal(err)
	}
	eve.expect(5*time.Second, func(f map[string]any) bool { return f["type"] == "joined" })
	if err := eve.send(map[string]any{"type": "message", "room": "lobby", "data": map[string]any{"name": "bob", "text": "spoofed as bob"}}); err != nil {
		t.Fatal(err)
	}
	within(t, bob, 15*time.Second, "bob sees eve's message under eve's identity, not as his",
		poll(`[...document.querySelectorAll("#messages li")].some(li => li.textContent.includes("spoofed as bob") && !li.classList.contains("mine") && li.querySelector(".who")?.textContent !== "bob")`),
	)
	// A second "alice" in the lobby is told that the name is taken.
	mallory := tab(t, browser)
	watches["mallory"] = watchTab(t, mallory)
	within(t, mallory, 30*time.Second, "a second alice is refused the name",
		chromedp.Navigate(base+"/?room=lobby&name=alice"),
		chromedp.WaitVisible("#join-btn"),
		chromedp.Click("#join-btn"),
		poll(`(() => { const n = document.getElementById("notice"); return !n.hidden && n.dataset.reason === "name_taken" && n.textContent.includes("taken") })()`),
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

	// The page links to the dashboard, which is on the operations
	// listener, on loopback like the browser.
	href := jsString(t, alice, `document.querySelector("#ops-links a")?.href || ""`)
	if want := "http://" + n.ops + "/dashboard"; href != want {
		t.Fatalf("the chat page's dashboard link is %q, want %q", href, want)
	}
	if os.Getenv(screenshotsEnv) == "1" {
		shot(t, bob, filepath.Join(screenshotDir, "chat.png")) // with the rate-limit notice
	}
	// The node has sampled for a while before the dashboard opens, so its
	// charts start with that history.
	waitFor(t, 15*time.Second, "the node to have run for 8 s", func() bool {
		_, body := httpGet(t, "http://"+n.ops+"/stats")
		var st NodeStats
		return json.Unmarshal([]byte(body), &st) == nil && st.UptimeSeconds >= 8
	})
	dash := tab(t, browser)
	watches["dashboard"] = watchTab(t, dash)
	within(t, dash, 30*time.Second, "the dashboard shows the violations",
		chromedp.Navigate(href),
		poll(`document.querySelectorAll("#violations tr").length > 3 && document.getElementById("live").textContent.startsWith("live")`),
	)
	checkCharts(t, dash)
	for name, w := range watches {
		w.check(t, name)
	}

}

// demoTraffic sends 20 seconds of room traffic that varies from node to
// node and second to second, with two short floods of the lobby, so that
// the dashboard's screenshot shows its charts moving. The node must allow
// the demo room's rate (see TestBrowserDashboardCluster).
func demoTraffic(t *testing.T, addrs []string) {
	t.Helper()
	var cs []*wsClient
	for i, addr := range addrs {
		c, err := dialWS(t, addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.ws.Close()
		for _, room := range []string{"demo", "lobby"} {
			if err := c.send(map[string]any{"type": "join", "room": room, "name": fmt.Sprintf("demo%d", i+1)}); err != nil {
				t.Fatal(err)
			}
			c.expect(5*time.Second, func(f map[string]any) bool { return f["type"] == "joined" })
		}
		go func() { // drain what the rooms relay until the connection closes
			for {
				if _, _, err := c.ws.ReadMessage(); err != nil {
					return
				}
			}
		}()
		cs = append(cs, c)
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for i := range 20 {
		for k, c := range cs {
			for j := range 2 + 2*((i+3*k)%6) {
				if err := c.send(map[string]any{"type": "message", "room": "demo", "data": map[string]any{"text": fmt.Sprintf("demo %d.%d", i, j)}}); err != nil {
					t.Fatal(err)
				}
			}
		}
		if i == 6 || i == 14 { // the lobby allows a burst of 10 a member
			for j := range 14 {
				if err := cs[i%len(cs)].send(map[string]any{"type": "message", "room": "lobby", "data": fmt.Sprintf("flood %d", j)}); err != nil {
					t.Fatal(err)
				}
			}
		}
		<-tick.C
	}
}

// TestBrowserDashboardCluster opens the dashboard of one of three
// clustered nodes in headless Chromium: its charts draw a line per node
// for the per-node charts, from the other nodes' samples that came over
// NATS, and they update. With RATETHROTTLE_SCREENSHOTS=1 it first sends
// 20 s of traffic (demoTraffic) and writes docs/img/dashboard.png.
func TestBrowserDashboardCluster(t *testing.T) {
	browser := newBrowser(t)
	var routes []string
	ports := []int{freePort(t), freePort(t), freePort(t)}
	for _, p := range ports {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
	}
	var nodes []*inProc
	var addrs []string
	name := uniqueClusterName(t)
	for i, p := range ports {
		n := startInProcess(t, "--node-id", fmt.Sprintf("node%d", i+1), "--cluster-name", name,
			"--cluster-listen", fmt.Sprintf("127.0.0.1:%d", p), "--routes", strings.Join(routes, ","),
			"--shutdown-timeout", "3s", "--limits-messages-per-minute", "1200", "--limits-max-concurrent-connections", "0", "--limits-connections-per-minute", "600", "--max-denials", "-1",
			"--rooms", "*:member_messages_per_minute=30,member_message_burst=10;demo:member_messages_per_minute=1200,member_message_burst=40")
		nodes = append(nodes, n)
		addrs = append(addrs, n.addr)
	}
	for _, n := range nodes {
		waitReady(t, n.addr, 60*time.Second)
	}
	// Connections that differ per node: 1, 2 and 3.
	for i, n := range nodes {
		for range i + 1 {
			c, err := dialWS(t, n.addr)
			if err != nil {
				t.Fatal(err)
			}
			c.join("lobby")
		}
	}
	screenshots := os.Getenv(screenshotsEnv) == "1"
	if screenshots {
		demoTraffic(t, addrs)
	}
	dash := tab(t, browser)
	w := watchTab(t, dash)
	within(t, dash, 30*time.Second, "the dashboard goes live",
		chromedp.Navigate("http://"+nodes[0].ops+"/dashboard"),
		poll(`document.getElementById("live").textContent.startsWith("live") && document.querySelectorAll("#nodes tr").length === 3`),
	)
	for _, id := range []string{"chart-connections", "chart-lag", "chart-kv"} {
		within(t, dash, 15*time.Second, id+" draws a line per node",
			poll(`[...document.querySelectorAll("#`+id+` polyline")].map(p => p.dataset.series).join(",") === "node1,node2,node3"`),
		)
	}
	within(t, dash, 15*time.Second, "the connections chart ends at each node's count",
		poll(`[...document.querySelectorAll("#chart-connections polyline")].map(p => { const pts = p.getAttribute("points").split(" "); return pts[pts.length - 1].split(",")[1] }).every((y, i, a) => i === 0 || Number(y) < Number(a[i - 1]))`),
	)
	newest := jsString(t, dash, `document.querySelector("#chart-kv svg").dataset.newest`)
	within(t, dash, 15*time.Second, "the charts take new samples",
		poll(`Number(document.querySelector("#chart-kv svg").dataset.newest) >= `+newest+` + 2`),
	)
	w.check(t, "dashboard")
	if screenshots {
		shot(t, dash, filepath.Join(screenshotDir, "dashboard.png"))
	}
}

// chartIDs are the dashboard's charts.
var chartIDs = []string{"chart-decisions", "chart-violations", "chart-connections", "chart-lag", "chart-kv"}

// checkCharts checks the dashboard's charts: each draws its series as
// polylines with points, the first frame brought at least five seconds of
// history, the violations chart has the room_rate line of the flood, and
// the charts move on with new samples.
func checkCharts(t *testing.T, dash context.Context) {
	t.Helper()
	for _, id := range chartIDs {
		within(t, dash, 15*time.Second, id+" draws points",
			poll(`(() => { const svg = document.querySelector("#`+id+` svg"); return svg.querySelectorAll("polyline").length > 0 && Number(svg.dataset.points) >= 5 })()`),
		)
		if first, _ := strconv.Atoi(jsString(t, dash, `document.querySelector("#`+id+` svg").dataset.firstPoints`)); first < 5 {
			t.Errorf("%s: the first frame drew %d points, want the node's history (at least 5)", id, first)
		}
	}
	if got := jsString(t, dash, `[...document.querySelectorAll("#chart-decisions polyline")].map(p => p.dataset.series).join(",")`); got != "allowed,denied" {
		t.Errorf("decisions chart series %q, want allowed,denied", got)
	}
	within(t, dash, 15*time.Second, "the violations chart has the flood's room_rate line",
		poll(`[...document.querySelectorAll("#chart-violations polyline")].some(p => p.dataset.series === "room_rate" && p.getAttribute("points").split(" ").length >= 5)`),
	)
	newest := jsString(t, dash, `document.querySelector("#chart-connections svg").dataset.newest`)
	within(t, dash, 15*time.Second, "the charts take new samples",
		poll(`Number(document.querySelector("#chart-connections svg").dataset.newest) >= `+newest+` + 2 && Number(document.querySelector("#chart-decisions svg").dataset.newest) >= `+newest+` + 2`),
	)
}

// TestBrowserCSPWatch checks that the watch TestBrowserChat relies on
// sees a violation: inline code that the policy blocks.
func TestBrowserCSPWatch(t *testing.T) {
	browser := newBrowser(t)
	n := startInProcess(t)
	page := tab(t, browser)
	w := watchTab(t, page)
	within(t, page, 30*time.Second, "the page runs inline code",
		chromedp.Navigate("http://"+n.addr+"/"),
		chromedp.WaitVisible("#join-btn"),
		chromedp.Evaluate[chromedp.Void](`(() => { const s = document.createElement("script"); s.textContent = "window.inlineRan = true"; document.body.appendChild(s); })()`),
		poll(`window.cspViolations.length > 0`),
	)
	if ran := jsString(t, page, `String(window.inlineRan === true)`); ran != "false" {
		t.Errorf("inline script ran under the policy")
	}
	waitFor(t, 10*time.Second, "the console to report the violation", func() bool { return len(w.problems()) > 0 })
	if v := jsString(t, page, `window.cspViolations.join("; ")`); !strings.Contains(v, "script-src") {
		t.Errorf("violations %q, want one of script-src", v)
	}
}

// pageWatch records a tab's console messages and, through a listener that
// runs before any page script, the page's securitypolicyviolation events
// in window.cspViolations.
type pageWatch struct {
	tab  context.Context
	mu   sync.Mutex
	msgs []chromedp.ConsoleMessage
}

// watchTab starts watching tab; call it before navigating.
func watchTab(t *testing.T, tab context.Context) *pageWatch {
	t.Helper()
	w := &pageWatch{tab: tab}
	msgs := chromedp.Console(tab)
	go func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			w.mu.Lock()
			w.msgs = append(w.msgs, m)
			w.mu.Unlock()
		}
	}()
	_, err := chromedp.Call(tab, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: `
window.cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => window.cspViolations.push(e.violatedDirective + " " + e.blockedURI));`})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// problems returns the console messages that report a policy violation or
// an uncaught exception.
func (w *pageWatch) problems() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for _, m := range w.msgs {
		if m.IsException() || m.Source == "security" || strings.Contains(m.Text, "Content Security Policy") {
			out = append(out, m.String())
		}
	}
	return out
}

// check fails the test when the tab's page saw a violation or its console
// reported a problem.
func (w *pageWatch) check(t *testing.T, name string) {
	t.Helper()
	if v := jsString(t, w.tab, `(window.cspViolations || ["no watch installed"]).join("; ")`); v != "" {
		t.Errorf("%s: securitypolicyviolation: %s", name, v)
	}
	for _, p := range w.problems() {
		t.Errorf("%s: console: %s", name, p)
	}
}

// jsString evaluates a JavaScript expression of string value in tab.
func jsString(t *testing.T, tab context.Context, expr string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
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
