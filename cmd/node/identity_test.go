package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
)

const testJWTSecret = "identity-test-secret-0123456789-abcdef"

func signTest(t *testing.T, secret string, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// dialToken opens /ws on addr with token as the token query parameter
// (none if empty); it returns the HTTP status of a refused handshake.
func dialToken(t *testing.T, addr, token string) (*wsClient, int, error) {
	t.Helper()
	u := "ws://" + addr + "/ws"
	if token != "" {
		u += "?token=" + url.QueryEscape(token)
	}
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	ws, resp, err := d.Dial(u, nil)
	if err != nil {
		code := 0
		if resp != nil {
			code = resp.StatusCode
		}
		return nil, code, err
	}
	t.Cleanup(func() { ws.Close() })
	return &wsClient{t: t, ws: ws}, http.StatusSwitchingProtocols, nil
}

// admittedMessages joins a room and counts the frames (the join included)
// admitted before the first rate denial, at most max.
func (c *wsClient) admittedMessages(room string, max int) int {
	c.t.Helper()
	c.join(room)
	f := c.rateDenial(room, max)
	if f["error"] != "rate_limit_exceeded" {
		c.t.Fatalf("denial %v", f)
	}
	var n int
	fmt.Sscan(strings.TrimPrefix(fmt.Sprint(f["id"]), "m"), &n)
	return n + 1 // the join and messages m0 .. m(n-1)
}

// TestIdentityJWT: a node with a JWT secret keys a signed-in connection by
// its user and gives it its tier's limits, an anonymous one its address
// and the base limits; a badly signed or expired token is refused by the
// handler (the node's KeyFunc wraps wshandler.ErrUnauthenticated) with a
// 1008 unauthenticated close, or 401 with a Bearer challenge without
// reject_with_close.
func TestIdentityJWT(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	pol := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(secret, []byte(testJWTSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pol, []byte("limits:\n  messages_per_minute: 1\n  message_burst: 3\n  max_concurrent_connections: 0\ntiers:\n  pro:\n    limits:\n      messages_per_minute: 1\n      message_burst: 6\n      max_concurrent_connections: 0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	n := startInProcess(t, "--identity-jwt-secret-file", secret, "--policy", pol,
		"--admin-token", testAdminToken, "--rooms", "*:max_members=100")
	waitReady(t, n.addr, 30*time.Second)
	exp := time.Now().Add(time.Hour).Unix()
	alice := signTest(t, testJWTSecret, jwt.MapClaims{"sub": "alice", "tier": "pro", "exp": exp})

	c, _, err := dialToken(t, n.addr, alice)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.admittedMessages("a", 10); got != 6 {
		t.Errorf("pro user: %d frames admitted, want the pro burst 6", got)
	}
	anon, _, err := dialToken(t, n.addr, "")
	if err != nil {
		t.Fatal(err)
	}
	if got := anon.admittedMessages("b", 10); got != 3 {
		t.Errorf("anonymous: %d frames admitted, want the base burst 3", got)
	}

	// Banning user:alice refuses alice from any address, not the address.
	code, body := httpDo(t, http.MethodPost, "http://"+n.ops+"/admin/bans", `{"client":"user:alice","duration":"1m"}`,
		"Authorization", "Bearer "+testAdminToken, "Content-Type", "application/json")
	if code != http.StatusOK && code != http.StatusCreated {
		t.Fatalf("ban: %d %s", code, body)
	}
	waitFor(t, 5*time.Second, "alice refused", func() bool {
		c, _, err := dialToken(t, n.addr, alice)
		if err != nil {
			return false
		}
		return strings.Contains(c.joinOutcome("c"), "banned")
	})
	if c, _, err := dialToken(t, n.addr, ""); err != nil || c.joinOutcome("d") != "joined" {
		t.Errorf("the anonymous client on alice's address is refused: %v", err)
	}

	// Refused tokens: the unauthenticated error frame, then 1008
	// unauthenticated (the handler's answer to its KeyFunc's
	// ErrUnauthenticated; why the token was refused is not told).
	for name, tok := range map[string]string{
		"bad signature": signTest(t, "another-secret-of-thirty-two-bytes!!", jwt.MapClaims{"sub": "bob", "exp": exp}),
		"token expired": signTest(t, testJWTSecret, jwt.MapClaims{"sub": "bob", "exp": time.Now().Add(-time.Hour).Unix()}),
	} {
		c, _, err := dialToken(t, n.addr, tok)
		if err != nil {
			t.Fatalf("%s: dial: %v", name, err)
		}
		f, err := c.read(5 * time.Second)
		if err != nil || f["type"] != "error" || f["error"] != "unauthenticated" {
			t.Errorf("%s: first frame %v, %v; want the unauthenticated error frame", name, f, err)
		}
		_, err = c.read(5 * time.Second)
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.ClosePolicyViolation || ce.Text != "unauthenticated" {
			t.Errorf("%s: %v, want close 1008 %q", name, err, "unauthenticated")
		}
	}

	// Without reject_with_close: 401 with a Bearer challenge.
	n2 := startInProcess(t, "--identity-jwt-secret-file", secret, "--reject-with-close=false")
	waitReady(t, n2.addr, 30*time.Second)
	for name, tok := range map[string]string{
		"malformed": "x.y.z",
		"expired":   signTest(t, testJWTSecret, jwt.MapClaims{"sub": "bob", "exp": time.Now().Add(-time.Hour).Unix()}),
	} {
		req, _ := http.NewRequest(http.MethodGet, "http://"+n2.addr+"/ws?token="+url.QueryEscape(tok), nil)
		for k, v := range map[string]string{"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="} {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("%s token without reject_with_close: %d %q, want 401 with a Bearer challenge", name, resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
	}
	// An anonymous handshake is still admitted there.
	if _, code, err := dialToken(t, n2.addr, ""); err != nil {
		t.Errorf("anonymous handshake without reject_with_close: %d %v", code, err)
	}
}

// TestDemoTokens: demo tokens are served on a loopback listener, sign in
// with the tier asked for, and are refused at start-up elsewhere.
func TestDemoTokens(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	pol := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(pol, []byte("limits:\n  messages_per_minute: 1\n  message_burst: 3\ntiers:\n  pro:\n    limits:\n      messages_per_minute: 1\n      message_burst: 5\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	n := startInProcess(t, "--identity-demo-tokens=true", "--policy", pol, "--rooms", "*:max_members=100")
	waitReady(t, n.addr, 30*time.Second)
	code, body := httpGet(t, "http://"+n.addr+"/demo-token?user=bob&tier=pro")
	var tok struct {
		Token, User, Tier, Client string
		Limits                    LimitsJSON
	}
	if err := json.Unmarshal([]byte(body), &tok); err != nil || code != http.StatusOK {
		t.Fatalf("demo-token: %d %s", code, body)
	}
	if tok.Client != "user:bob" || tok.Tier != "pro" || tok.Limits.MessageBurst != 5 {
		t.Errorf("demo token answer %+v", tok)
	}
	c, _, err := dialToken(t, n.addr, tok.Token)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.admittedMessages("r", 10); got != 5 {
		t.Errorf("demo pro user: %d frames admitted, want 5", got)
	}
	if code, _ := httpGet(t, "http://"+n.addr+"/demo-token?user=b%20ob"); code != http.StatusBadRequest {
		t.Errorf("a bad user name: %d", code)
	}
	out, err := runBinary(t, "--identity-demo-tokens=true", "--listen", "0.0.0.0:0")
	if err == nil || !strings.Contains(out, "identity.demo_tokens") || !strings.Contains(out, "loopback") {
		t.Errorf("demo tokens on 0.0.0.0: %v\n%s", err, out)
	}
}
