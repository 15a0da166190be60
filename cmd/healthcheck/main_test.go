package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

func TestProbe(t *testing.T) {
	var healthy atomic.Bool
	healthy.Store(true)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" || !healthy.Load() {
			http.Error(w, "no", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	none := func(string) string { return "" }
	if code := probe([]string{srv.URL + "/healthz"}, none, io.Discard); code != 0 {
		t.Errorf("healthy: exit %d", code)
	}
	healthy.Store(false)
	if code := probe([]string{srv.URL + "/healthz"}, none, io.Discard); code != 1 {
		t.Errorf("unhealthy: exit %d", code)
	}
	// The default URL follows the node's listen setting.
	port := srv.URL[strings.LastIndex(srv.URL, ":")+1:]
	healthy.Store(true)
	env := func(k string) string {
		if k == "RATETHROTTLE_LISTEN" {
			return ":" + port
		}
		return ""
	}
	if code := probe(nil, env, io.Discard); code != 0 {
		t.Errorf("default URL on RATETHROTTLE_LISTEN: exit %d", code)
	}
	if u, _ := defaultURL(none); u != "http://127.0.0.1:8080/healthz" {
		t.Errorf("default URL %q", u)
	}
	srv.Close()
	if code := probe([]string{srv.URL + "/healthz"}, none, io.Discard); code != 1 {
		t.Errorf("closed server: exit %d", code)
	}
	if code := probe([]string{"a", "b"}, none, io.Discard); code != 2 {
		t.Errorf("two arguments: exit %d", code)
	}
}
