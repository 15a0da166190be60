// Command hub is the minimal gorilla/websocket chat hub that the project's
// benchmarks compare a node with: the room protocol of docs/PROTOCOL.md
// (join, leave, message) decoded with encoding/json, rooms in one map
// under a mutex, a message copied to every member's channel and written by
// that member's writer goroutine, as in gorilla's chat example. It has no
// limits of any kind, no cluster, no events.
//
//	go run ./test/peers/hub -listen 127.0.0.1:18092
//
// It serves the WebSocket on /ws and Prometheus' Go and process metrics on
// /metrics. It listens on loopback addresses only.
package main

import (
	"encoding/json"
	"flag"
	"log"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/ratethrottle/ratethrottle/test/peers/internal/peer"
)

type frame struct {
	Type string          `json:"type"`
	Room string          `json:"room"`
	ID   string          `json:"id,omitempty"`
	Data json.RawMessage `json:"data,omitempty"`
}

type out struct {
	Type string          `json:"type"`
	Room string          `json:"room"`
	From string          `json:"from,omitempty"`
	ID   string          `json:"id,omitempty"`
	Data json.RawMessage `json:"data,omitempty"`
}

type client struct {
	id   string
	send chan []byte
}

type hub struct {
	mu    sync.Mutex
	rooms map[string]map[*client]struct{}
}

func (h *hub) join(room string, c *client) {
	h.mu.Lock()
	defer h.mu.Unlock()
	m := h.rooms[room]
	if m == nil {
		m = make(map[*client]struct{})
		h.rooms[room] = m
	}
	m[c] = struct{}{}
}

func (h *hub) leave(room string, c *client) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.rooms[room], c)
	if len(h.rooms[room]) == 0 {
		delete(h.rooms, room)
	}
}

// broadcast queues msg for every member of room; a member whose queue is
// full is skipped, as in gorilla's chat example (which drops it).
func (h *hub) broadcast(room string, msg []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for c := range h.rooms[room] {
		select {
		case c.send <- msg:
		default:
		}
	}
}

func main() {
	listen := flag.String("listen", "127.0.0.1:18092", "loopback address to listen on")
	flag.Parse()
	h := &hub{rooms: make(map[string]map[*client]struct{})}
	up := websocket.Upgrader{}
	var seq atomic.Uint64
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.Handler())
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		c := &client{id: "hub-" + strconv.FormatUint(seq.Add(1), 36), send: make(chan []byte, 256)}
		go func() { // the writer
			for msg := range c.send {
				if err := ws.WriteMessage(websocket.TextMessage, msg); err != nil {
					break
				}
			}
			ws.Close()
		}()
		rooms := make(map[string]bool)
		defer func() {
			for room := range rooms {
				h.leave(room, c)
			}
			close(c.send)
		}()
		for {
			_, p, err := ws.ReadMessage()
			if err != nil {
				return
			}
			var f frame
			if json.Unmarshal(p, &f) != nil || f.Room == "" {
				continue
			}
			switch f.Type {
			case "join":
				if !rooms[f.Room] {
					rooms[f.Room] = true
					h.join(f.Room, c)
				}
				reply, _ := json.Marshal(out{Type: "joined", Room: f.Room, ID: f.ID})
				c.send <- reply
			case "leave":
				if rooms[f.Room] {
					delete(rooms, f.Room)
					h.leave(f.Room, c)
				}
			case "message":
				if rooms[f.Room] {
					msg, _ := json.Marshal(out{Type: "message", Room: f.Room, From: c.id, Data: f.Data})
					h.broadcast(f.Room, msg)
				}
			}
		}
	})
	log.Fatal(peer.Serve(*listen, mux))
}
