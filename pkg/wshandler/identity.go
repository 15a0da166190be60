package wshandler

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"unicode/utf8"
)

// KeyFunc names the client of a request: the key its connection and message
// limits are counted under. An error rejects the request with HTTP 400, or
// with HTTP 401 when it wraps ErrUnauthenticated.
type KeyFunc func(r *http.Request) (string, error)

// MaxClientIDLength caps a client ID, in bytes. The Handler refuses a
// request whose KeyFunc returns a longer ID (or one that is not UTF-8)
// with HTTP 400: this is the one place every client ID is checked,
// whatever KeyFunc made it.
const MaxClientIDLength = 256

// DefaultIPv6PrefixLen is the length of the IPv6 prefix that identifies a
// client by default: one subscriber commonly holds a /64 or more.
const DefaultIPv6PrefixLen = 64

// checkClientID reports why id cannot be a client ID, or nil.
func checkClientID(id string) error {
	if len(id) > MaxClientIDLength {
		return fmt.Errorf("%w: client ID is longer than %d bytes", ErrNoIdentity, MaxClientIDLength)
	}
	if !utf8.ValidString(id) {
		return fmt.Errorf("%w: client ID is not UTF-8", ErrNoIdentity)
	}
	return nil
}

// PeerIP returns a KeyFunc that names the client by its IP address, with
// IPv6 clients identified by their /64 (DefaultIPv6PrefixLen); see
// PeerIPPrefix.
func PeerIP(trusted ...netip.Prefix) KeyFunc {
	return PeerIPPrefix(DefaultIPv6PrefixLen, trusted...)
}

// PeerIPPrefix returns a KeyFunc that names the client by its IP address
// (ClientIP), in the form IPKey gives it: an IPv4 address as itself, an
// IPv6 address as its network of ipv6Bits bits ("2001:db8:1:2::/64"), or
// as itself when ipv6Bits is 128. Limits and bans, which are keyed by the
// client ID, then apply to the whole network.
func PeerIPPrefix(ipv6Bits int, trusted ...netip.Prefix) KeyFunc {
	trusted = append([]netip.Prefix(nil), trusted...)
	return func(r *http.Request) (string, error) {
		a, err := ClientIP(r, trusted)
		if err != nil {
			return "", err
		}
		return IPKey(a, ipv6Bits), nil
	}
}

// IPKey returns the client ID of address a: an IPv4 address, or an
// IPv4-mapped IPv6 address, as the IPv4 address ("203.0.113.7"); an IPv6
// address as the network of its first ipv6Bits bits in CIDR notation
// ("2001:db8:1:2::/64"), or as the address itself ("2001:db8::7") when
// ipv6Bits is 128 or more (or not positive). A zone is dropped. Use it to
// turn an address into the key a ban must name.
func IPKey(a netip.Addr, ipv6Bits int) string {
	a = a.Unmap().WithZone("")
	if a.Is4() || ipv6Bits <= 0 || ipv6Bits >= 128 {
		return a.String()
	}
	p, err := a.Prefix(ipv6Bits)
	if err != nil {
		return a.String()
	}
	return p.String()
}

// BanKey returns the client ID a ban of client must name: an IP address
// becomes IPKey of it (an IPv6 address its ipv6Bits network), so that a
// ban given by address bans the client that address belongs to; any other
// ID is returned as it is.
func BanKey(client string, ipv6Bits int) string {
	if a, err := netip.ParseAddr(client); err == nil {
		return IPKey(a, ipv6Bits)
	}
	return client
}

// ClientIP returns the client address of r. The peer's address
// (r.RemoteAddr) is used unless the peer is in one of the trusted proxy
// networks; then the X-Forwarded-For chain is walked from the right,
// skipping trusted proxies, and the first address that is not one is the
// client. Without X-Forwarded-For, X-Real-IP from a trusted peer is used.
// Headers from an untrusted peer are ignored, so a client cannot choose its
// own key by sending them.
//
// IPv4-mapped IPv6 addresses are reported as IPv4. An address with an IPv6
// zone ("2001:db8::7%eth0") in a header is refused with ErrNoIdentity: the
// zone is arbitrary text, which would make one client many. The peer's own
// zone is dropped.
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
				if a.Zone() != "" {
					return netip.Addr{}, fmt.Errorf("%w: X-Forwarded-For address with a zone", ErrNoIdentity)
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
			if a.Zone() != "" {
				return netip.Addr{}, fmt.Errorf("%w: X-Real-IP address with a zone", ErrNoIdentity)
			}
			return a.Unmap(), nil
		}
	}
	return peer, nil
}

func remoteAddr(s string) (netip.Addr, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap().WithZone(""), nil
	}
	host, _, err := net.SplitHostPort(s)
	if err != nil {
		host = s
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%w: remote address %q", ErrNoIdentity, s)
	}
	return a.Unmap().WithZone(""), nil
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
// absent or empty. The Handler refuses a value longer than
// MaxClientIDLength. The client
// chooses its own query parameters: use this only for values that the
// application has authenticated, or to separate clients behind one address.
func QueryParam(name string, fallback KeyFunc) KeyFunc {
	if fallback == nil {
		fallback = PeerIP()
	}
	return func(r *http.Request) (string, error) {
		return keyOr(r.URL.Query().Get(name), r, fallback)
	}
}

// Header returns a KeyFunc that names the client by the request header name,
// and falls back to fallback (PeerIP() when nil) when it is absent or empty.
// The Handler refuses a value longer than MaxClientIDLength. Trust it only
// when a proxy or
// gateway in front of the server sets it.
func Header(name string, fallback KeyFunc) KeyFunc {
	if fallback == nil {
		fallback = PeerIP()
	}
	return func(r *http.Request) (string, error) {
		return keyOr(r.Header.Get(name), r, fallback)
	}
}

func keyOr(v string, r *http.Request, fallback KeyFunc) (string, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return fallback(r)
	}
	return v, nil
}
