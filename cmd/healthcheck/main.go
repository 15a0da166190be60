// Command healthcheck is the container image's health probe: it GETs a
// URL and exits 0 on a 200 answer, 1 otherwise. The image's base has no
// shell and no curl, so the HEALTHCHECK runs this static binary.
//
//	healthcheck [URL]
//
// Without URL it probes /healthz on the port of RATETHROTTLE_LISTEN (the
// node's own setting, ":8080" when unset) on 127.0.0.1.
package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

func main() {
	os.Exit(probe(os.Args[1:], os.Getenv, os.Stderr))
}

// defaultURL is /healthz on loopback at the node's listen port.
func defaultURL(getenv func(string) string) (string, error) {
	listen := getenv("RATETHROTTLE_LISTEN")
	if listen == "" {
		listen = ":8080"
	}
	_, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("RATETHROTTLE_LISTEN %q: %v", listen, err)
	}
	return "http://" + net.JoinHostPort("127.0.0.1", port) + "/healthz", nil
}

func probe(args []string, getenv func(string) string, stderr io.Writer) int {
	var url string
	switch len(args) {
	case 0:
		u, err := defaultURL(getenv)
		if err != nil {
			fmt.Fprintln(stderr, "healthcheck:", err)
			return 1
		}
		url = u
	case 1:
		url = args[0]
	default:
		fmt.Fprintln(stderr, "usage: healthcheck [URL]")
		return 2
	}
	client := &http.Client{Timeout: 3 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		fmt.Fprintln(stderr, "healthcheck:", err)
		return 1
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "healthcheck: %s: %s\n", url, resp.Status)
		return 1
	}
	return 0
}
