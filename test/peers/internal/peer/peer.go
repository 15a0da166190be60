// Package peer holds what the benchmark peer programs share: serving on a
// loopback address only.
package peer

import (
	"fmt"
	"net"
	"net/http"
)

// Serve serves h on addr, which must be a loopback address, until the
// listener fails.
func Serve(addr string, h http.Handler) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("listen: %q is not a loopback address", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	fmt.Println("listening on", ln.Addr())
	return http.Serve(ln, h)
}
