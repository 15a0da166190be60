package main

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/ratethrottle/ratethrottle/pkg/wshandler"
)

// admin wraps an admin API handler with the bearer token check.
func (n *node) admin(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		token := n.cfg.AdminToken
		if token == "" {
			writeError(w, http.StatusForbidden, "admin API disabled: set admin_token or admin_token_file to enable it")
			return
		}
		if !bearerMatches(r.Header.Get("Authorization"), token) {
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

// bearerMatches reports whether the Authorization header value carries
// token with the Bearer scheme, whose name is case-insensitive (RFC 9110
// §11.1). It compares SHA-256 digests in constant time, so the time taken
// tells nothing of the token, its length included.
func bearerMatches(header, token string) bool {
	scheme, got, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	a, b := sha256.Sum256([]byte(strings.TrimLeft(got, " "))), sha256.Sum256([]byte(token))
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
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

// decodeJSONBody decodes the request body, one JSON object of at most 64
// KiB with no unknown fields and nothing after it, into v. It writes the
// error answer and returns false when the body is not that: 415 for a
// Content-Type other than application/json, else 400.
func decodeJSONBody(w http.ResponseWriter, r *http.Request, v any) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		w.Header().Set("Accept", "application/json")
		writeError(w, http.StatusUnsupportedMediaType, "Content-Type: want application/json")
		return false
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "body: "+err.Error())
		return false
	}
	if err := dec.Decode(&struct{}{}); !errors.Is(err, io.EOF) {
		writeError(w, http.StatusBadRequest, "body: want one JSON object and nothing after it")
		return false
	}
	return true
}

func (n *node) addBan(w http.ResponseWriter, r *http.Request) {
	var req banRequest
	if !decodeJSONBody(w, r, &req) {
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
	client := n.banTarget(req.Client)
	s := n.stack.Load()
	if err := s.bans.Ban(r.Context(), client, d, req.Reason); err != nil {
		writeError(w, http.StatusBadGateway, "ban: "+err.Error())
		return
	}
	// Report the ban as stored, not as asked: a duration beyond
	// events.MaxBanDuration is stored as until lifted.
	now := time.Now()
	until, banned := s.bans.BannedUntil(client, now)
	if !banned {
		until = now // a ban so short that it has already ended
	}
	reply := banReply{Banned: client, Requested: req.Client}
	if !until.IsZero() {
		reply.Until = until.UTC().Format(time.RFC3339Nano)
	}
	n.log.Info("ban set", "client", client, "requested", req.Client, "duration", d, "until", reply.Until, "reason", req.Reason)
	writeJSON(w, http.StatusCreated, reply)
}

// banReply is the answer to POST /admin/bans: the ban as stored.
type banReply struct {
	// Banned is the client ID banned: the request's client, or for an IP
	// address the client ID the node gives it (banTarget).
	Banned string `json:"banned"`
	// Requested is the client as the request named it.
	Requested string `json:"requested"`
	// Until is when the ban ends (RFC 3339, UTC); empty means until
	// lifted.
	Until string `json:"until"`
}

// banTarget returns the client ID a ban or unban of client must name: an
// IP address becomes the client ID the WebSocket handler gives a client at
// that address (wshandler.IPKey: an IPv6 address its ipv6_prefix network,
// an IPv4-mapped address the IPv4 address), so that a ban on an address
// bans the client that address belongs to. Anything else is used as is.
func (n *node) banTarget(client string) string {
	return wshandler.BanKey(client, n.cfg.IPv6PrefixLen)
}

func (n *node) removeBan(w http.ResponseWriter, r *http.Request) {
	client := r.PathValue("client")
	if client == "" {
		writeError(w, http.StatusBadRequest, "client: must not be empty")
		return
	}
	client = n.banTarget(client)
	s := n.stack.Load()
	if err := s.bans.Unban(r.Context(), client); err != nil {
		writeError(w, http.StatusBadGateway, "unban: "+err.Error())
		return
	}
	n.log.Info("ban lifted", "client", client)
	writeJSON(w, http.StatusOK, map[string]any{"unbanned": client})
}
