package main

import (
	"context"
	"crypto/subtle"
	"embed"
	"encoding/json"
	"errors"
	"io/fs"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

//go:embed web
var webFS embed.FS

// routes returns the node's HTTP handler.
func (n *node) routes() http.Handler {
	mux := http.NewServeMux()
	web, _ := fs.Sub(webFS, "web")
	static := http.FileServerFS(web)
	mux.Handle("GET /", static)
	mux.HandleFunc("GET /dashboard", func(w http.ResponseWriter, r *http.Request) {
		r2 := r.Clone(r.Context())
		r2.URL.Path = "/dashboard.html"
		static.ServeHTTP(w, r2)
	})
	mux.HandleFunc("GET /ws", n.serveWS)
	mux.HandleFunc("GET /dashboard/ws", n.serveDashboardWS)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "node": n.id})
	})
	mux.HandleFunc("GET /readyz", n.serveReady)
	mux.HandleFunc("GET /stats", n.serveStats)

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), newMetrics(n))
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))

	mux.HandleFunc("GET /admin/bans", n.admin(n.listBans))
	mux.HandleFunc("POST /admin/bans", n.admin(n.addBan))
	mux.HandleFunc("DELETE /admin/bans/{client...}", n.admin(n.removeBan))
	return mux
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
	s.handler.ServeHTTP(w, r)
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
		cs, err := n.clusterStats(r.Context(), time.Second)
		if err != nil {
			writeError(w, http.StatusServiceUnavailable, "cluster statistics: "+err.Error())
			return
		}
		writeJSON(w, http.StatusOK, cs)
	default:
		writeError(w, http.StatusBadRequest, "scope "+scope+": want node or cluster")
	}
}

// admin wraps an admin API handler with the bearer token check.
func (n *node) admin(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		token := n.cfg.AdminToken
		if token == "" {
			writeError(w, http.StatusForbidden, "admin API disabled: set admin_token to enable it")
			return
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(token)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="ratethrottle"`)
			writeError(w, http.StatusUnauthorized, "missing or wrong bearer token")
			return
		}
		if n.stack.Load() == nil {
			writeError(w, http.StatusServiceUnavailable, "node not ready")
			return
		}
		h(w, r)
	}
}

func (n *node) listBans(w http.ResponseWriter, r *http.Request) {
	s := n.stack.Load()
	bans := s.bans.List()
	writeJSON(w, http.StatusOK, map[string]any{"bans": bans, "count": len(bans)})
}

// banRequest is the body of POST /admin/bans.
type banRequest struct {
	Client   string `json:"client"`
	Duration string `json:"duration"`
	Reason   string `json:"reason"`
}

func (n *node) addBan(w http.ResponseWriter, r *http.Request) {
	var req banRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "body: "+err.Error())
		return
	}
	if req.Client == "" {
		writeError(w, http.StatusBadRequest, "client: must not be empty")
		return
	}
	var d time.Duration
	if req.Duration != "" {
		var err error
		if d, err = time.ParseDuration(req.Duration); err != nil || d < 0 {
			writeError(w, http.StatusBadRequest, "duration "+req.Duration+": want a positive duration such as 10m, or empty for until lifted")
			return
		}
	}
	if req.Reason == "" {
		req.Reason = "banned by an administrator"
	}
	s := n.stack.Load()
	if err := s.bans.Ban(r.Context(), req.Client, d, req.Reason); err != nil {
		writeError(w, http.StatusBadGateway, "ban: "+err.Error())
		return
	}
	n.log.Info("ban set", "client", req.Client, "duration", d, "reason", req.Reason)
	writeJSON(w, http.StatusCreated, map[string]any{"banned": req.Client, "duration": d.String()})
}

func (n *node) removeBan(w http.ResponseWriter, r *http.Request) {
	client := r.PathValue("client")
	if client == "" {
		writeError(w, http.StatusBadRequest, "client: must not be empty")
		return
	}
	s := n.stack.Load()
	if err := s.bans.Unban(r.Context(), client); err != nil {
		writeError(w, http.StatusBadGateway, "unban: "+err.Error())
		return
	}
	n.log.Info("ban lifted", "client", client)
	writeJSON(w, http.StatusOK, map[string]any{"unbanned": client})
}

// dashboardFrame is what the dashboard WebSocket sends every second.
type dashboardFrame struct {
	Node       NodeStats     `json:"node"`
	Cluster    *ClusterStats `json:"cluster,omitempty"`
	Violations any           `json:"violations"`
	Seen       uint64        `json:"violations_seen"`
}

var dashboardUpgrader = websocket.Upgrader{ReadBufferSize: 1024, WriteBufferSize: 4096}

// serveDashboardWS sends the statistics and recent violations every second
// until the client goes away or the request's server shuts down.
func (n *node) serveDashboardWS(w http.ResponseWriter, r *http.Request) {
	if !n.dashboards.add() {
		writeError(w, http.StatusServiceUnavailable, "shutting down")
		return
	}
	defer n.dashboards.done()
	ws, err := dashboardUpgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer ws.Close()
	ws.SetReadLimit(512)
	gone := make(chan struct{})
	go func() {
		defer close(gone)
		for {
			if _, _, err := ws.ReadMessage(); err != nil {
				return
			}
		}
	}()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		f := dashboardFrame{Node: n.localStats()}
		if n.stack.Load() != nil {
			ctx, cancel := context.WithTimeout(r.Context(), 500*time.Millisecond)
			cs, err := n.clusterStats(ctx, 500*time.Millisecond)
			cancel()
			if err == nil {
				f.Cluster = &cs
			} else if !errors.Is(err, nats.ErrConnectionClosed) {
				n.log.Debug("dashboard cluster stats", "err", err)
			}
		}
		f.Violations, f.Seen = n.recent.snapshot()
		_ = ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if err := ws.WriteJSON(f); err != nil {
			return
		}
		select {
		case <-gone:
			return
		case <-n.stopping:
			_ = ws.WriteControl(websocket.CloseMessage,
				websocket.FormatCloseMessage(websocket.CloseGoingAway, "server shutting down"), time.Now().Add(time.Second))
			return
		case <-tick.C:
		}
	}
}

// tracker counts running goroutines that must end before shutdown goes on,
// and refuses new ones once closed.
type tracker struct {
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

func (t *tracker) add() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.wg.Add(1)
	return true
}

func (t *tracker) done() { t.wg.Done() }

// closeAndWait refuses new goroutines and waits for the running ones.
func (t *tracker) closeAndWait() {
	t.mu.Lock()
	t.closed = true
	t.mu.Unlock()
	t.wg.Wait()
}
