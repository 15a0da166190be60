package wshandler

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
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
		{"ipv6 peer", "[2001:db8::1]:443", nil, "", "2001:db8::1"},
		{"ipv4-mapped", "[::ffff:192.0.2.1]:443", nil, "", "192.0.2.1"},
		{"ipv6 proxy", "[fd00::1]:443", []string{"2001:db8::2"}, "", "2001:db8::2"},
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
	r.Header.Set("X-User-ID", strings.Repeat("u", maxKeyLength+1))
	if _, err := Header("X-User-ID", nil)(r); !errors.Is(err, ErrNoIdentity) {
		t.Errorf("long key: %v", err)
	}
}
