package identity

import (
	"net"
	"net/http"
	"net/netip"
)

// Identity is who a client is.
type Identity struct {
	// User is the signed-in user ("sub" of a JWT); empty for an anonymous
	// client.
	User string
	// Address is the client's address key: an IPv4 address, or an IPv6
	// client's /64 network ("2001:db8:1:2::/64") by default.
	Address string
	// Tier names the client's limit set; empty means the policy's default.
	Tier string
	// Attributes are further claims the resolver was asked to keep.
	Attributes map[string]string
}

// Anonymous reports whether the client is not signed in.
func (id Identity) Anonymous() bool { return id.User == "" }

// Resolver resolves the identity of the client making request r, or
// returns an error that refuses it (a *TokenError for a bad token).
type Resolver interface {
	Resolve(r *http.Request) (Identity, error)
}

// ResolverFunc adapts a function to a Resolver.
type ResolverFunc func(r *http.Request) (Identity, error)

// Resolve calls f(r).
func (f ResolverFunc) Resolve(r *http.Request) (Identity, error) { return f(r) }

// DefaultIPv6PrefixLen is the prefix length by which RemoteAddress groups
// IPv6 clients: one subscriber commonly holds a whole /64.
const DefaultIPv6PrefixLen = 64

// RemoteAddress returns the address key of r's peer: its IPv4 address, or
// its IPv6 address's /64 network. It reads r.RemoteAddr only; a program
// behind a proxy supplies its own address function. It returns
// r.RemoteAddr unchanged if it is not an IP address and port.
func RemoteAddress(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return r.RemoteAddr
	}
	a = a.Unmap().WithZone("")
	if a.Is4() {
		return a.String()
	}
	p, _ := a.Prefix(DefaultIPv6PrefixLen)
	return p.String()
}
