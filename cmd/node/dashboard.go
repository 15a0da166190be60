package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
)

// dashboardInterval is how often the dashboard's viewers get a frame.
const dashboardInterval = time.Second

// dashboardFrame is what the dashboard WebSocket sends every interval.
// The first frame a viewer gets also carries "history": every node's
// samples of the last ten minutes, in the form of Samples.
type dashboardFrame struct {
	Node       NodeStats     `json:"node"`
	Cluster    *ClusterStats `json:"cluster,omitempty"`
	Violations any           `json:"violations"`
	Seen       uint64        `json:"violations_seen"`
	// Samples are each node's samples of the last frameHistory seconds,
	// oldest first, by node ID.
	Samples map[string][]Sample `json:"samples"`
}

// dashboardHub builds one dashboard frame per interval, with one cluster
// statistics query, and hands it to every open dashboard, however many
// there are; with none open it queries nothing.
type dashboardHub struct {
	interval time.Duration
	build    func(ctx context.Context) []byte
	wake     chan struct{}

	mu      sync.Mutex
	viewers map[chan []byte]struct{}
	last    []byte
	lastAt  time.Time
}

func newDashboardHub(interval time.Duration, build func(ctx context.Context) []byte) *dashboardHub {
	return &dashboardHub{interval: interval, build: build, wake: make(chan struct{}, 1), viewers: map[chan []byte]struct{}{}}
}

// subscribe registers a viewer. Its channel holds the newest frame not yet
// taken; a fresh frame, if there is one, is in it at once. Call the
// returned function to unsubscribe.
func (h *dashboardHub) subscribe() (<-chan []byte, func()) {
	ch := make(chan []byte, 1)
	h.mu.Lock()
	h.viewers[ch] = struct{}{}
	if h.last != nil && time.Since(h.lastAt) < h.interval {
		ch <- h.last
	} else {
		select {
		case h.wake <- struct{}{}:
		default:
		}
	}
	h.mu.Unlock()
	return ch, func() {
		h.mu.Lock()
		delete(h.viewers, ch)
		h.mu.Unlock()
	}
}

// run builds and hands out frames until ctx ends. It builds at most one
// frame per interval: on the tick while someone watches, and at once for a
// first viewer when the last frame is older than an interval.
func (h *dashboardHub) run(ctx context.Context) {
	tick := time.NewTicker(h.interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-h.wake:
		}
		h.mu.Lock()
		idle := len(h.viewers) == 0 || time.Since(h.lastAt) < h.interval
		h.mu.Unlock()
		if idle {
			continue
		}
		frame := h.build(ctx)
		if frame == nil {
			continue
		}
		h.mu.Lock()
		h.last, h.lastAt = frame, time.Now()
		for ch := range h.viewers {
			select {
			case <-ch: // a slow viewer skips the frame it has not taken
			default:
			}
			ch <- frame
		}
		h.mu.Unlock()
		tick.Reset(h.interval)
	}
}

// dashboardFrame builds a frame: this node's statistics, the cluster's
// (asked for with a timeout of half an interval) and the recent
// violations.
func (n *node) dashboardFrame(ctx context.Context) []byte {
	f := dashboardFrame{Node: n.localStats()}
	now := time.Now()
	if n.stack.Load() != nil {
		ctx, cancel := context.WithTimeout(ctx, dashboardInterval/2)
		cs, err := n.clusterStats(ctx, dashboardInterval/2, n.charts.request())
		cancel()
		if err == nil {
			for i := range cs.Nodes {
				n.charts.merge(cs.Nodes[i].Node, cs.Nodes[i].History, now)
				cs.Nodes[i].History = nil
			}
			f.Cluster = &cs
		} else if !errors.Is(err, nats.ErrConnectionClosed) {
			n.log.Debug("dashboard cluster stats", "err", err)
		}
	}
	// This node's own samples need no query, and chart even before the
	// node is ready.
	n.charts.merge(n.id, n.samples.since(0), now)
	f.Samples = n.charts.since(now.Unix() - frameHistory)
	f.Violations, f.Seen = n.recent.snapshot()
	b, err := json.Marshal(f)
	if err != nil {
		n.log.Warn("dashboard frame", "err", err)
		return nil
	}
	return b
}

// withHistory returns frame, a JSON object, with "history" added: every
// node's samples the hub holds. The hub's frame is shared by all viewers
// and is not changed.
func (n *node) withHistory(frame []byte) []byte {
	h, err := json.Marshal(n.charts.since(0))
	if err != nil || len(frame) < 2 || frame[0] != '{' {
		return frame
	}
	out := make([]byte, 0, len(h)+len(frame)+12)
	out = append(out, `{"history":`...)
	out = append(out, h...)
	out = append(out, ',')
	return append(out, frame[1:]...)
}

var dashboardUpgrader = websocket.Upgrader{ReadBufferSize: 1024, WriteBufferSize: 4096}

// serveDashboardWS sends the hub's frames until the client goes away or
// the node shuts down.
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
	frames, unsubscribe := n.dashHub.subscribe()
	defer unsubscribe()
	first := true
	for {
		select {
		case <-gone:
			return
		case <-n.stopping:
			_ = ws.WriteControl(websocket.CloseMessage,
				websocket.FormatCloseMessage(websocket.CloseGoingAway, "server shutting down"), time.Now().Add(time.Second))
			return
		case f := <-frames:
			if first {
				// The history is taken after the frame was built, so it
				// holds every sample the frame's query brought in.
				f, first = n.withHistory(f), false
			}
			_ = ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if err := ws.WriteMessage(websocket.TextMessage, f); err != nil {
				return
			}
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
