package policy

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Handler serves the cluster's policy over HTTP, for an admin API:
//
//	GET  → the stored document as YAML, its revision in the ETag ("7"),
//	       its author and time in X-Policy-Changed-By and -At; 404 if none
//	GET ?history=1 → the revisions kept, as JSON, oldest first
//	PUT  → a new document (YAML or JSON); If-Match: "<revision>" replaces
//	       that revision, If-None-Match: * creates the first one
//
// A PUT answers 200 with the new ETag; 400 with the problems and their
// paths for an invalid document (nothing is written); 412 when the
// revision is stale; 428 without If-Match or If-None-Match. The Handler
// does not authenticate: mount it behind the admin token.
type Handler struct {
	// Store returns the Store, or nil while it cannot be reached (503);
	// Watcher.Store fits.
	Store func() *Store
	// Who names the author of a PUT. Nil means "admin".
	Who func(*http.Request) string
}

// problemJSON is one entry of a 400 answer.
type problemJSON struct {
	Path   string `json:"path"`
	Reason string `json:"reason"`
}

type errorBody struct {
	Error    string        `json:"error"`
	Revision uint64        `json:"revision,omitempty"`
	Problems []problemJSON `json:"problems,omitempty"`
}

type historyEntry struct {
	Revision  uint64    `json:"revision"`
	ChangedBy string    `json:"changed_by"`
	ChangedAt time.Time `json:"changed_at"`
	Valid     bool      `json:"valid"`
	Error     string    `json:"error,omitempty"`
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var s *Store
	if h.Store != nil {
		s = h.Store()
	}
	if s == nil {
		writeJSON(w, http.StatusServiceUnavailable, errorBody{Error: "the policy store cannot be reached"})
		return
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		if r.URL.Query().Has("history") {
			h.history(w, r, s)
			return
		}
		h.get(w, r, s)
	case http.MethodPut:
		h.put(w, r, s)
	default:
		w.Header().Set("Allow", "GET, HEAD, PUT")
		writeJSON(w, http.StatusMethodNotAllowed, errorBody{Error: "method not allowed"})
	}
}

func (h *Handler) get(w http.ResponseWriter, r *http.Request, s *Store) {
	v, err := s.Get(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	b, err := Marshal(v.Document)
	if err != nil {
		writeError(w, err)
		return
	}
	setVersionHeaders(w, v)
	w.Header().Set("Content-Type", "application/yaml")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		w.Write(b)
	}
}

func (h *Handler) history(w http.ResponseWriter, r *http.Request, s *Store) {
	vs, err := s.History(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	out := make([]historyEntry, len(vs))
	for i, v := range vs {
		out[i] = historyEntry{Revision: v.Revision, ChangedBy: v.Who, ChangedAt: v.At, Valid: v.Err == nil}
		if v.Err != nil {
			out[i].Error = v.Err.Error()
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *Handler) put(w http.ResponseWriter, r *http.Request, s *Store) {
	rev, err := precondition(r)
	if err != nil {
		writeJSON(w, http.StatusPreconditionRequired, errorBody{Error: err.Error()})
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxDocumentSize+1))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, errorBody{Error: "read body: " + err.Error()})
		return
	}
	doc, err := Parse(body)
	if err != nil {
		writeError(w, err)
		return
	}
	who := "admin"
	if h.Who != nil {
		who = h.Who(r)
	}
	v, err := s.Put(r.Context(), doc, rev, who)
	if err != nil {
		writeError(w, err)
		return
	}
	setVersionHeaders(w, v)
	writeJSON(w, http.StatusOK, map[string]any{"revision": v.Revision})
}

// precondition reads If-Match ("7" or 7) or If-None-Match: * (0).
func precondition(r *http.Request) (uint64, error) {
	if m := strings.TrimSpace(r.Header.Get("If-Match")); m != "" {
		rev, err := strconv.ParseUint(strings.Trim(strings.TrimPrefix(m, "W/"), `"`), 10, 64)
		if err != nil || rev == 0 {
			return 0, fmt.Errorf("If-Match %q is not a revision such as \"7\"", m)
		}
		return rev, nil
	}
	if strings.TrimSpace(r.Header.Get("If-None-Match")) == "*" {
		return 0, nil
	}
	return 0, errors.New(`a PUT needs If-Match: "<revision>" (from GET's ETag), or If-None-Match: * to create the first document`)
}

func setVersionHeaders(w http.ResponseWriter, v *Version) {
	w.Header().Set("ETag", etag(v.Revision))
	w.Header().Set("X-Policy-Changed-By", v.Who)
	if !v.At.IsZero() {
		w.Header().Set("X-Policy-Changed-At", v.At.UTC().Format(time.RFC3339))
	}
}

// etag returns the entity tag of a revision: the revision in quotes.
func etag(revision uint64) string { return `"` + strconv.FormatUint(revision, 10) + `"` }

// httpStatus returns the HTTP status that answers err from this package:
// 400 for an invalid document, 412 for a stale revision, 404 when no
// document is stored, 503 otherwise (the store cannot be reached).
func httpStatus(err error) int {
	switch {
	case errors.Is(err, ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, ErrStale):
		return http.StatusPreconditionFailed
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	}
	return http.StatusServiceUnavailable
}

func writeError(w http.ResponseWriter, err error) {
	body := errorBody{Error: err.Error()}
	var ve *ValidationError
	if errors.As(err, &ve) {
		for _, p := range ve.Problems {
			body.Problems = append(body.Problems, problemJSON{Path: p.Field, Reason: p.Problem()})
		}
	}
	var se *StaleError
	if errors.As(err, &se) {
		body.Revision = se.Have
		if se.Have != 0 {
			w.Header().Set("ETag", etag(se.Have))
		}
	}
	writeJSON(w, httpStatus(err), body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
