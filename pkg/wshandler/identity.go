package wshandler

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// KeyFunc names the client of a request: the key its connection and message
// limits are counted under. An error rejects the request with HTTP 400.
type KeyFunc func(r *http.Request) (string, error)

// maxKeyLength bounds the keys that QueryParam and Header accept.
const maxKeyLength = 256

// PeerIP returns a KeyFunc that names the client by its IP address. The
// peer's address (r.RemoteAddr) is used unless the peer is in one of the
// trusted proxy networks; then the X-Forwarded-For chain is walked from the
// right, skipping trusted proxies, and the first address that is not one is
// the client. Without X-Forwarded-For, X-Real-IP from a trusted peer is used.
// Headers from an untrusted peer are ignored, so a client cannot choose its
// own key by sending them.
//
// IPv4-mapped IPv6 addresses are reported as IPv4.
func PeerIP(trusted ...netip.Prefix) KeyFunc {
	trusted = append([]netip.Prefix(nil), trusted...)
	return func(r *http.Request) (string, error) {
		a, err := ClientIP(r, trusted)
		if err != nil {
			return "", err
		}
		return a.String(), nil
	}
}

// ClientIP returns the client address of r as PeerIP describes it.
func ClientIP(r *http.Request, trusted []netip.Prefix) (netip.Addr, error) {
	peer, err := remoteAddr(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}, err
	}
	if !isTrusted(peer, trusted) {
		return peer, nil
	}
	if hops := r.Header.Values("X-Forwarded-For"); len(hops) > 0 {
		client := peer
		for i := len(hops) - 1; i >= 0; i-- {
			parts := strings.Split(hops[i], ",")
			for j := len(parts) - 1; j >= 0; j-- {
				a, err := netip.ParseAddr(strings.TrimSpace(parts[j]))
				if err != nil {
					// A hop we cannot read: trust nothing further left.
					return client, nil
				}
				client = a.Unmap()
				if !isTrusted(client, trusted) {
					return client, nil
				}
			}
		}
		return client, nil
	}
	if v := strings.TrimSpace(r.Header.Get("X-Real-IP")); v != "" {
		if a, err := netip.ParseAddr(v); err == nil {
			return a.Unmap(), nil
		}
	}
	return peer, nil
}

func remoteAddr(s string) (netip.Addr, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), nil
	}
	host, _, err := net.SplitHostPort(s)
	if err != nil {
		host = s
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%w: remote address %q", ErrNoIdentity, s)
	}
	return a.Unmap(), nil
}

func isTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// QueryParam returns a KeyFunc that names the client by the query parameter
// name, and falls back to fallback (PeerIP() when nil) when the parameter is
// absent or empty. A value longer than 256 bytes is rejected. The client
// chooses its own query parameters: use this only for values that the
// application has authenticated, or to separate clients behind one address.
func QueryParam(name string, fallback KeyFunc) KeyFunc {
	if fallback == nil {
		fallback = PeerIP()
	}
	return func(r *http.Request) (string, error) {
		return keyOr(r.URL.Query().Get(name), "query parameter "+name, r, fallback)
	}
}

// Header returns a KeyFunc that names the client by the request header name,
// and falls back to fallback (PeerIP() when nil) when it is absent or empty.
// A value longer than 256 bytes is rejected. Trust it only when a proxy or
// gateway in front of the server sets it.
func Header(name string, fallback KeyFunc) KeyFunc {
	if fallback == nil {
		fallback = PeerIP()
	}
	return func(r *http.Request) (string, error) {
		return keyOr(r.Header.Get(name), "header "+name, r, fallback)
	}
}

func keyOr(v, what string, r *http.Request, fallback KeyFunc) (string, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return fallback(r)
	}
	if len(v) > maxKeyLength {
		return "", fmt.Errorf("%w: %s is longer than %d bytes", ErrNoIdentity, what, maxKeyLength)
	}
	return v, nil
}
