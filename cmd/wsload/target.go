package main

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
)

// Target is one node the tool loads: its WebSocket URL and the URL of its
// Prometheus metrics.
type Target struct {
	// WS is the node's WebSocket URL: scheme ws or wss (http and https
	// are turned into them), path "/ws" when none was given, and a
	// "localhost" host pinned to 127.0.0.1.
	WS *url.URL
	// Metrics is the http or https URL of the node's Prometheus metrics,
	// on the same host and port as WS; empty when no metrics path was
	// given.
	Metrics string
	// Loopback reports whether the host is a loopback address, so that
	// source addresses may be spread over 127.0.0.0/8.
	Loopback bool
	// IPv6 reports whether the host is an IPv6 address.
	IPv6 bool
}

// ParseTarget checks a node URL (ws://, wss://, http:// or https://) and
// returns its Target. A host that is not loopback (127.0.0.0/8, ::1 or
// localhost) is refused unless allowRemote is set: the tool makes a lot of
// traffic and must not aim it at a machine by mistake. metricsPath is
// joined to the node's address for the metrics URL; empty means none.
func ParseTarget(raw string, allowRemote bool, metricsPath string) (Target, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return Target{}, fmt.Errorf("url %q: %w", raw, err)
	}
	switch u.Scheme {
	case "ws", "wss":
	case "http":
		u.Scheme = "ws"
	case "https":
		u.Scheme = "wss"
	default:
		return Target{}, fmt.Errorf("url %q: scheme must be ws, wss, http or https", raw)
	}
	host := u.Hostname()
	if host == "" {
		return Target{}, fmt.Errorf("url %q: no host", raw)
	}
	t := Target{WS: u}
	if strings.EqualFold(host, "localhost") {
		t.Loopback = true
		// Pin the address so that every dial, and the source addresses
		// chosen for it, use IPv4 loopback.
		u.Host = net.JoinHostPort("127.0.0.1", portOf(u))
	} else if ip, err := netip.ParseAddr(host); err == nil {
		t.Loopback = ip.IsLoopback()
		t.IPv6 = ip.Is6() && !ip.Is4In6()
	}
	if !t.Loopback && !allowRemote {
		return Target{}, fmt.Errorf("url %q: host %s is not a loopback address (127.0.0.0/8, ::1); pass -allow-remote to load another machine", raw, host)
	}
	if u.Path == "" {
		u.Path = "/ws"
	}
	if metricsPath != "" {
		scheme := "http"
		if u.Scheme == "wss" {
			scheme = "https"
		}
		t.Metrics = (&url.URL{Scheme: scheme, Host: u.Host, Path: metricsPath}).String()
	}
	return t, nil
}

func portOf(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if u.Scheme == "wss" {
		return "443"
	}
	return "80"
}

// sourceAddrs returns n local addresses to dial from when loading a
// loopback IPv4 target: 127.0.0.1, 127.0.0.2, … Each has its own range of
// ephemeral ports, and the node sees each as a distinct client. Linux
// answers on the whole of 127.0.0.0/8 without configuration.
func sourceAddrs(n int) []net.Addr {
	if n <= 0 {
		return nil
	}
	addrs := make([]net.Addr, n)
	for i := range addrs {
		v := i + 1
		addrs[i] = &net.TCPAddr{IP: net.IPv4(127, byte(v>>16), byte(v>>8), byte(v))}
	}
	return addrs
}

// ParseMetricsURL checks a metrics URL given apart from its node's
// WebSocket URL: http or https, on a loopback host unless allowRemote.
func ParseMetricsURL(raw string, allowRemote bool) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("metrics url %q: want http://host:port/path", raw)
	}
	host := u.Hostname()
	ip, perr := netip.ParseAddr(host)
	if !allowRemote && host != "localhost" && (perr != nil || !ip.IsLoopback()) {
		return "", fmt.Errorf("metrics url %q: host %s is not a loopback address", raw, host)
	}
	return u.String(), nil
}
