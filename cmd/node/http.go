package main

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"html"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

//go:embed web
var webFS embed.FS

// webRoot is webFS without its "web" directory.
var webRoot, _ = fs.Sub(webFS, "web")

// opsMarker is where the chat page gets its links to the operations
// endpoints, when they are reachable from the browser asking.
const opsMarker = "<!--ops-links-->"

// publicRoutes returns the handler of the public listener: the chat page,
// its assets, /ws, /healthz and /readyz, and nothing else.
func (n *node) publicRoutes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", n.serveChatPage)
	mux.Handle("GET /chat.js", asset("chat.js"))
	mux.Handle("GET /style.css", asset("style.css"))
	mux.HandleFunc("GET /healthz", n.serveHealth)
	mux.HandleFunc("GET /readyz", n.serveReady)
	if n.demoSecret != nil {
		mux.HandleFunc("GET /demo-token", n.serveDemoToken)
	}
	h := n.cfg.HTTP.bounded(mux)
	return securityHeaders(routeWebSocket("/ws", http.HandlerFunc(n.serveWS), h))
}

// opsRoutes returns the handler of the operations listener: metrics,
// statistics, the dashboard and the admin API, besides the health probes.
func (n *node) opsRoutes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /{$}", http.RedirectHandler("/dashboard", http.StatusFound))
	mux.Handle("GET /dashboard", asset("dashboard.html"))
	mux.Handle("GET /dashboard.js", asset("dashboard.js"))
	mux.Handle("GET /style.css", asset("style.css"))
	mux.HandleFunc("GET /healthz", n.serveHealth)
	mux.HandleFunc("GET /readyz", n.serveReady)
	mux.HandleFunc("GET /stats", n.serveStats)

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), newMetrics(n))
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))

	mux.HandleFunc("GET /admin/bans", n.admin(n.listBans))
	mux.HandleFunc("GET /admin/policy", n.admin(n.servePolicy))
	mux.HandleFunc("PUT /admin/policy", n.admin(n.servePolicy))
	mux.HandleFunc("GET /admin/policy/history", n.admin(n.servePolicy))
	mux.HandleFunc("POST /admin/bans", n.admin(n.addBan))
	mux.HandleFunc("DELETE /admin/bans/{client...}", n.admin(n.removeBan))
	h := n.cfg.HTTP.bounded(mux)
	return securityHeaders(routeWebSocket("/dashboard/ws", http.HandlerFunc(n.serveDashboardWS), h))
}

// asset serves one embedded file.
func asset(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeFileFS(w, r, webRoot, name)
	})
}

// chatPages are the chat page without and with the links to the
// operations endpoints.
type chatPages struct {
	plain, linked []byte
	// opsLoopback reports whether the operations listener is on a
	// loopback address, the only case in which the page links to it.
	opsLoopback bool
}

// newChatPages renders the chat page for an operations listener at
// opsAddr, nil when it is off.
func newChatPages(opsAddr net.Addr) (*chatPages, error) {
	page, err := fs.ReadFile(webRoot, "index.html")
	if err != nil {
		return nil, err
	}
	p := &chatPages{plain: bytes.Replace(page, []byte(opsMarker), nil, 1)}
	p.linked = p.plain
	if opsAddr == nil {
		return p, nil
	}
	ap, err := netip.ParseAddrPort(opsAddr.String())
	if err != nil || !ap.Addr().IsLoopback() {
		return p, nil
	}
	p.opsLoopback = true
	base := html.EscapeString("http://" + ap.String())
	links := fmt.Sprintf(`<nav id="ops-links"><a href="%s/dashboard">Dashboard</a> · <a href="%s/stats">Stats</a> · <a href="%s/metrics">Metrics</a></nav>`, base, base, base)
	p.linked = bytes.Replace(page, []byte(opsMarker), []byte(links), 1)
	return p, nil
}

// forRequest returns the page for r: with the operations links only when
// the operations listener is on loopback and r comes straight from a
// loopback address, that is from a browser on the node's own machine. A
// request that names a forwarded client came through a proxy and gets no
// links even from loopback.
func (p *chatPages) forRequest(r *http.Request) []byte {
	if !p.opsLoopback || r.Header.Get("X-Forwarded-For") != "" || r.Header.Get("Forwarded") != "" || r.Header.Get("X-Real-IP") != "" {
		return p.plain
	}
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil || !ap.Addr().Unmap().IsLoopback() {
		return p.plain
	}
	return p.linked
}

func (n *node) serveChatPage(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(n.pages.forRequest(r))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

// serveWS hands WebSocket requests to the handler once the node is ready.
func (n *node) serveWS(w http.ResponseWriter, r *http.Request) {
	s := n.stack.Load()
	if s == nil {
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "node not ready: waiting for NATS and JetStream")
		return
	}
	s.handler.ServeHTTP(w, n.resolveIdentity(r))
}

func (n *node) serveHealth(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "node": n.id})
}

// ready reports whether NATS is connected and the KV buckets are open.
func (n *node) ready() (bool, string) {
	if n.nc == nil || !n.nc.IsConnected() {
		return false, "NATS not connected"
	}
	if n.stack.Load() == nil {
		return false, "KV buckets not ready"
	}
	return true, ""
}

func (n *node) serveReady(w http.ResponseWriter, r *http.Request) {
	if ok, why := n.ready(); !ok {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"ready": false, "reason": why, "node": n.id})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ready": true, "node": n.id})
}

// serveStats answers /stats for this node, or /stats?scope=cluster for
// every node that answers within a second.
func (n *node) serveStats(w http.ResponseWriter, r *http.Request) {
	switch scope := r.URL.Query().Get("scope"); scope {
	case "", "node":
		writeJSON(w, http.StatusOK, n.localStats())
	case "cluster":
		cs, err := n.clusterStats(r.Context(), time.Second, nil)
		if err != nil {
			writeError(w, http.StatusServiceUnavailable, "cluster statistics: "+err.Error())
			return
		}
		writeJSON(w, http.StatusOK, cs)
	default:
		writeError(w, http.StatusBadRequest, "scope "+scope+": want node or cluster")
	}
}
