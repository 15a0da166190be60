package policy

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func do(t *testing.T, method, url, body string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	require.NoError(t, err)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, string(b)
}

func TestHandler(t *testing.T) {
	srv := startServer(t)
	s := newStore(t, dial(t, srv.ClientURL()), StoreConfig{})
	var store *Store // nil until "reachable"
	h := &Handler{Store: func() *Store { return store },
		Who: func(r *http.Request) string { return r.Header.Get("X-Operator") }}
	hs := httptest.NewServer(h)
	defer hs.Close()
	url := hs.URL + "/admin/policy"

	resp, _ := do(t, "GET", url, "", nil)
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	store = s

	resp, _ = do(t, "GET", url, "", nil)
	require.Equal(t, http.StatusNotFound, resp.StatusCode)

	doc := "default_class: message\nclasses:\n  message: {rate: 60}\n  typing: {rate: 20}\n"
	resp, body := do(t, "PUT", url, doc, nil)
	require.Equal(t, http.StatusPreconditionRequired, resp.StatusCode, body)

	resp, body = do(t, "PUT", url, doc, map[string]string{"If-None-Match": "*", "X-Operator": "ada"})
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	etag1 := resp.Header.Get("ETag")
	require.NotEmpty(t, etag1)

	resp, body = do(t, "GET", url, "", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, etag1, resp.Header.Get("ETag"))
	require.Equal(t, "ada", resp.Header.Get("X-Policy-Changed-By"))
	got, err := Parse([]byte(body))
	require.NoError(t, err)
	require.Equal(t, int64(20), got.Classes["typing"].Connection.Rate)

	// An invalid document: 400 naming the path, nothing written.
	bad := "classes: {typing: {rate: 10}}\ntiers: {pro: {classes: {typing: {rate: -5}}}}"
	resp, body = do(t, "PUT", url, bad, map[string]string{"If-Match": etag1})
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	var eb errorBody
	require.NoError(t, json.Unmarshal([]byte(body), &eb))
	require.Equal(t, "tiers.pro.classes.typing.rate", eb.Problems[0].Path)
	resp, _ = do(t, "GET", url, "", nil)
	require.Equal(t, etag1, resp.Header.Get("ETag"))

	// Two operators edit revision 1: the second gets 412 and the current ETag.
	resp, body = do(t, "PUT", url, strings.Replace(doc, "20", "30", 1), map[string]string{"If-Match": etag1, "X-Operator": "bo"})
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	etag2 := resp.Header.Get("ETag")
	resp, body = do(t, "PUT", url, strings.Replace(doc, "20", "40", 1), map[string]string{"If-Match": etag1, "X-Operator": "cy"})
	require.Equal(t, http.StatusPreconditionFailed, resp.StatusCode, body)
	require.Equal(t, etag2, resp.Header.Get("ETag"))
	resp, _ = do(t, "PUT", url, doc, map[string]string{"If-None-Match": "*"})
	require.Equal(t, http.StatusPreconditionFailed, resp.StatusCode)
	resp, _ = do(t, "PUT", url, doc, map[string]string{"If-Match": "seven"})
	require.Equal(t, http.StatusPreconditionRequired, resp.StatusCode)

	resp, body = do(t, "GET", url+"?history=1", "", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var hist []historyEntry
	require.NoError(t, json.Unmarshal([]byte(body), &hist))
	require.Len(t, hist, 2)
	require.Equal(t, []string{"ada", "bo"}, []string{hist[0].ChangedBy, hist[1].ChangedBy})
	require.True(t, hist[1].Valid)

	resp, _ = do(t, "DELETE", url, "", nil)
	require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
	resp, body = do(t, "HEAD", url, "", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Empty(t, body)
	require.Equal(t, etag2, resp.Header.Get("ETag"))
}

func TestHTTPStatus(t *testing.T) {
	require.Equal(t, 400, httpStatus(&ValidationError{}))
	require.Equal(t, 412, httpStatus(&StaleError{}))
	require.Equal(t, 404, httpStatus(ErrNotFound))
	require.Equal(t, 503, httpStatus(io.EOF))
	require.Equal(t, `"7"`, etag(7))
}
