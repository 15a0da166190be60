package wshandler

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/gorilla/websocket"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

func TestPeerIP(t *testing.T) {
	t.Parallel()
	proxies := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}
	cases := []struct {
		name   string
		remote string
		xff    []string
		real   string
		want   string
	}{
		{"peer", "203.0.113.7:5555", nil, "", "203.0.113.7"},
		{"untrusted peer's headers are ignored", "203.0.113.7:5555", []string{"1.2.3.4"}, "5.6.7.8", "203.0.113.7"},
		{"trusted proxy", "10.0.0.1:80", []string{"198.51.100.9"}, "", "198.51.100.9"},
		{"chain skips trusted hops", "10.0.0.1:80", []string{"6.6.6.6, 198.51.100.9, 10.1.1.1"}, "", "198.51.100.9"},
		{"spoofed left part is not used", "10.0.0.1:80", []string{"1.1.1.1", "198.51.100.9"}, "", "198.51.100.9"},
		{"all hops trusted", "10.0.0.1:80", []string{"10.2.2.2"}, "", "10.2.2.2"},
		{"unreadable hop stops the walk", "10.0.0.1:80", []string{"garbage, 10.3.3.3"}, "", "10.3.3.3"},
		{"x-real-ip", "10.0.0.1:80", nil, "198.51.100.10", "198.51.100.10"},
		{"bad x-real-ip", "10.0.0.1:80", nil, "nope", "10.0.0.1"},
		{"ipv6 peer: its /64", "[2001:db8:1:2::1]:443", nil, "", "2001:db8:1:2::/64"},
		{"ipv4-mapped", "[::ffff:192.0.2.1]:443", nil, "", "192.0.2.1"},
		{"ipv4-mapped in xff is ipv4", "10.0.0.1:80", []string{"::ffff:203.0.113.7"}, "", "203.0.113.7"},
		{"ipv6 proxy", "[fd00::1]:443", []string{"2001:db8::2"}, "", "2001:db8::/64"},
		{"same /64, same client", "10.0.0.1:80", []string{"2001:db8::ffff:1"}, "", "2001:db8::/64"},
		{"peer's zone is dropped", "[fe80::1%eth0]:443", nil, "", "fe80::/64"},
	}
	kf := PeerIP(proxies...)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/ws", nil)
			r.RemoteAddr = tc.remote
			for _, v := range tc.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if tc.real != "" {
				r.Header.Set("X-Real-IP", tc.real)
			}
			got, err := kf(r)
			if err != nil || got != tc.want {
				t.Errorf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	r := httptest.NewRequest(http.MethodGet, "/ws", nil)
	r.RemoteAddr = "not an address"
	if _, err := kf(r); !errors.Is(err, ErrNoIdentity) {
		t.Errorf("bad RemoteAddr: %v", err)
	}
	// A zone is arbitrary text: a zoned address in a trusted header used
	// to make a new client per zone (and a 10 KB client ID).
	for _, h := range []string{"X-Forwarded-For", "X-Real-IP"} {
		for _, v := range []string{"2001:db8::7%evade", "fe80::1%" + strings.Repeat("z", 10000)} {
			r := httptest.NewRequest(http.MethodGet, "/ws", nil)
			r.RemoteAddr = "10.0.0.1:80"
			r.Header.Set(h, v)
			if got, err := kf(r); !errors.Is(err, ErrNoIdentity) {
				t.Errorf("%s %.30q: got %q %v, want ErrNoIdentity", h, v, got, err)
			}
		}
	}
}

func TestIPKey(t *testing.T) {
	t.Parallel()
	cases := []struct {
		addr string
		bits int
		want string
	}{
		{"203.0.113.7", 64, "203.0.113.7"},
		{"::ffff:203.0.113.7", 64, "203.0.113.7"},
		{"::ffff:203.0.113.7", 128, "203.0.113.7"},
		{"2001:db8:1:2:3:4:5:6", 64, "2001:db8:1:2::/64"},
		{"2001:db8:1:2:3:4:5:6", 48, "2001:db8:1::/48"},
		{"2001:db8:1:2:3:4:5:6", 56, "2001:db8:1::/56"},
		{"2001:db8:1:2:3:4:5:6", 128, "2001:db8:1:2:3:4:5:6"},
		{"2001:db8::7%evade", 128, "2001:db8::7"},
		{"::1", 64, "::/64"},
	}
	for _, tc := range cases {
		if got := IPKey(netip.MustParseAddr(tc.addr), tc.bits); got != tc.want {
			t.Errorf("IPKey(%s, %d) = %q, want %q", tc.addr, tc.bits, got, tc.want)
		}
	}
}

// TestIPv6PrefixLimitsAndBans: with the default IPv6PrefixLen every address
// of a /64 is one client, for limits and for bans; with 128 each address
// is its own. The addresses come from a trusted proxy's X-Forwarded-For.
func TestIPv6PrefixLimitsAndBans(t *testing.T) {
	t.Parallel()
	dialFrom := func(n *node, addr string) (*http.Response, error) {
		hdr := http.Header{"X-Forwarded-For": {addr}}
		c, resp, err := websocket.DefaultDialer.Dial(n.url, hdr)
		if err == nil {
			t.Cleanup(func() { _ = c.Close() })
		}
		return resp, err
	}
	loopback := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	for _, tc := range []struct {
		bits       int
		secondOK   bool
		secondAddr string
	}{
		{0, false, "2001:db8:1:2::8"},  // same /64: the cap of one is taken
		{128, true, "2001:db8:1:2::8"}, // per address
		{0, true, "2001:db8:1:3::7"},   // another /64
	} {
		n := newNode(t, Config{OnMessage: echo, TrustedProxies: loopback, IPv6PrefixLen: tc.bits},
			limiter.Limits{MaxConcurrentConnections: 1})
		if _, err := dialFrom(n, "2001:db8:1:2::7"); err != nil {
			t.Fatalf("first: %v", err)
		}
		resp, err := dialFrom(n, tc.secondAddr)
		if (err == nil) != tc.secondOK {
			t.Errorf("bits %d, %s: %v %v, want allowed %v", tc.bits, tc.secondAddr, resp, err, tc.secondOK)
		}
	}
	// A ban of the /64 shuts out every address in it.
	g := &gate{}
	g.ban("2001:db8:1:2::/64")
	l, err := limiter.New(limiter.Config{Gate: g})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	n := newNode(t, Config{OnMessage: echo, TrustedProxies: loopback, Limiter: l}, limiter.Limits{})
	for _, a := range []string{"2001:db8:1:2::7", "2001:db8:1:2:ffff::1"} {
		if resp, err := dialFrom(n, a); err == nil || resp.StatusCode != http.StatusForbidden {
			t.Errorf("banned /64, %s: %v %v, want 403", a, resp, err)
		}
	}
	if _, err := dialFrom(n, "2001:db8:1:3::7"); err != nil {
		t.Errorf("another /64: %v", err)
	}
}

func TestIPv6PrefixLenValidated(t *testing.T) {
	t.Parallel()
	for _, bits := range []int{-1, 129} {
		if _, err := New(Config{IPv6PrefixLen: bits}); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "IPv6PrefixLen") {
			t.Errorf("IPv6PrefixLen %d: %v", bits, err)
		}
	}
}

// TestClientIDCapped: whatever the KeyFunc, a client ID over
// MaxClientIDLength, or not UTF-8, is refused with 400.
func TestClientIDCapped(t *testing.T) {
	t.Parallel()
	for _, id := range []string{strings.Repeat("u", MaxClientIDLength+1), "a\xffb"} {
		kf := func(*http.Request) (string, error) { return id, nil }
		n := newNode(t, Config{OnMessage: echo, KeyFunc: kf}, limiter.Limits{})
		resp, err := dialErr(t, n)
		if resp == nil || resp.StatusCode != http.StatusBadRequest {
			t.Errorf("id %.20q: %v %v, want 400", id, resp, err)
			continue
		}
		resp.Body.Close()
	}
	kf := func(*http.Request) (string, error) { return strings.Repeat("u", MaxClientIDLength), nil }
	dial(t, newNode(t, Config{OnMessage: echo, KeyFunc: kf}, limiter.Limits{}))
}

func TestQueryParamAndHeader(t *testing.T) {
	t.Parallel()
	r := httptest.NewRequest(http.MethodGet, "/ws?user=alice", nil)
	r.RemoteAddr = "192.0.2.5:1000"
	r.Header.Set("X-User-ID", "bob")
	for _, tc := range []struct {
		kf   KeyFunc
		want string
	}{
		{QueryParam("user", nil), "alice"},
		{QueryParam("missing", nil), "192.0.2.5"},
		{Header("X-User-ID", nil), "bob"},
		{Header("X-Missing", QueryParam("user", nil)), "alice"},
	} {
		if got, err := tc.kf(r); err != nil || got != tc.want {
			t.Errorf("got %q %v, want %q", got, err, tc.want)
		}
	}
}
