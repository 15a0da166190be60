package main

import (
	"net"
	"strings"
	"testing"
)

func TestParseTarget(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		raw         string
		allowRemote bool
		wantWS      string
		wantMetrics string
		wantErr     string
		loopback    bool
	}{
		{raw: "ws://127.0.0.1:8080/ws", wantWS: "ws://127.0.0.1:8080/ws", wantMetrics: "http://127.0.0.1:8080/metrics", loopback: true},
		{raw: "http://127.3.4.5:9000", wantWS: "ws://127.3.4.5:9000/ws", wantMetrics: "http://127.3.4.5:9000/metrics", loopback: true},
		{raw: "ws://localhost:8080/chat", wantWS: "ws://127.0.0.1:8080/chat", wantMetrics: "http://127.0.0.1:8080/metrics", loopback: true},
		{raw: "wss://[::1]:8443/ws", wantWS: "wss://[::1]:8443/ws", wantMetrics: "https://[::1]:8443/metrics", loopback: true},
		{raw: "ws://10.0.0.1:8080/ws", wantErr: "not a loopback"},
		{raw: "ws://example.com/ws", wantErr: "not a loopback"},
		{raw: "ws://[::ffff:10.0.0.1]:80/ws", wantErr: "not a loopback"},
		{raw: "ws://128.0.0.1/ws", wantErr: "not a loopback"},
		{raw: "ws://10.0.0.1:8080/ws", allowRemote: true, wantWS: "ws://10.0.0.1:8080/ws", wantMetrics: "http://10.0.0.1:8080/metrics"},
		{raw: "ftp://127.0.0.1/ws", wantErr: "scheme"},
		{raw: "ws:///ws", wantErr: "no host"},
	} {
		got, err := ParseTarget(tc.raw, tc.allowRemote, "/metrics")
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseTarget(%q) error = %v, want one containing %q", tc.raw, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseTarget(%q): %v", tc.raw, err)
			continue
		}
		if got.WS.String() != tc.wantWS || got.Metrics != tc.wantMetrics || got.Loopback != tc.loopback {
			t.Errorf("ParseTarget(%q) = %s, %s, loopback %v; want %s, %s, %v", tc.raw, got.WS, got.Metrics, got.Loopback, tc.wantWS, tc.wantMetrics, tc.loopback)
		}
	}
}

func TestSourceAddrs(t *testing.T) {
	t.Parallel()
	addrs := sourceAddrs(300)
	seen := make(map[string]bool)
	for _, a := range addrs {
		ip := a.(*net.TCPAddr).IP
		if !ip.IsLoopback() || ip.To4() == nil {
			t.Fatalf("source %v is not IPv4 loopback", ip)
		}
		if seen[ip.String()] {
			t.Fatalf("source %v twice", ip)
		}
		seen[ip.String()] = true
	}
	if addrs[0].String() != "127.0.0.1:0" || addrs[256].String() != "127.0.1.1:0" {
		t.Fatalf("sources start %v, %v", addrs[0], addrs[256])
	}
}
