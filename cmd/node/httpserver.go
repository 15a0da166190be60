package main

import (
	"net/http"
	"time"
)

// contentSecurityPolicy allows the pages only their own scripts, styles and
// WebSocket endpoint, and no framing: nothing inline, nothing from another
// origin.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// securityHeaders sets the headers every response of both listeners
// carries: the content security policy, no MIME sniffing, no framing and
// no referrer sent to other origins.
func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", contentSecurityPolicy)
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "no-referrer")
		h.ServeHTTP(w, r)
	})
}

// newServer returns an HTTP server for h with the configured header
// timeout, idle timeout and header limit. Its ReadTimeout and WriteTimeout
// stay zero, which would cut WebSocket connections; bounded applies them
// to every other route as per-request deadlines.
func (c HTTPConfig) newServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: c.ReadHeaderTimeout,
		IdleTimeout:       c.IdleTimeout,
		MaxHeaderBytes:    c.MaxHeaderBytes,
	}
}

// bounded sets the read and write deadlines of ReadTimeout and WriteTimeout
// on each request's connection before h serves it, so that a client that
// sends its body slowly, or reads the answer slowly, is cut off. A deadline
// the connection cannot take is ignored.
func (c HTTPConfig) bounded(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		now := time.Now()
		if c.ReadTimeout > 0 {
			_ = rc.SetReadDeadline(now.Add(c.ReadTimeout))
		}
		if c.WriteTimeout > 0 {
			_ = rc.SetWriteDeadline(now.Add(c.WriteTimeout))
		}
		h.ServeHTTP(w, r)
	})
}

// routeWebSocket serves WebSocket handshakes on the path ws with wsh and
// every other request with h. It clears the connection's deadlines first: a keep-alive connection
// may carry the deadlines bounded set for an earlier request, and a
// WebSocket handler sets its own.
func routeWebSocket(ws string, wsh, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A handshake is a GET without a body; anything else goes to h,
		// under its deadlines, and finds no route there.
		if r.URL.Path != ws || r.Method != http.MethodGet || r.ContentLength != 0 {
			h.ServeHTTP(w, r)
			return
		}
		rc := http.NewResponseController(w)
		_ = rc.SetReadDeadline(time.Time{})
		_ = rc.SetWriteDeadline(time.Time{})
		wsh.ServeHTTP(w, r)
	})
}
