// Command echo is the bare gorilla/websocket echo server that the
// project's benchmarks compare the handler with: no limits, no rooms, each
// message written back as it came, on the connection's own goroutine.
//
//	go run ./test/peers/echo -listen 127.0.0.1:18091
//
// It serves the WebSocket on /ws and Prometheus' Go and process metrics on
// /metrics, so that cmd/wsload reads its memory and CPU as it reads a
// node's. It listens on loopback addresses only.
package main

import (
	"flag"
	"log"
	"net/http"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/ratethrottle/ratethrottle/test/peers/internal/peer"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:18091", "loopback address to listen on")
	flag.Parse()
	up := websocket.Upgrader{}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.Handler())
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		for {
			mt, p, err := ws.ReadMessage()
			if err != nil {
				return
			}
			if err := ws.WriteMessage(mt, p); err != nil {
				return
			}
		}
	})
	log.Fatal(peer.Serve(*listen, mux))
}
