package main

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"time"
)

// historyLen is the number of per-second samples a node keeps, and the
// dashboard's chart window: ten minutes.
const historyLen = 600

// frameHistory is the number of seconds of samples each dashboard frame
// repeats, so that a viewer that skipped a few frames loses nothing.
const frameHistory = 10

// Sample is one second of a node's activity, for the dashboard's charts.
// Counts are what happened during the second that ends at T.
type Sample struct {
	// T is the second the sample closes, in Unix seconds.
	T int64 `json:"t"`
	// Allowed and Denied count the messages the limiter allowed and the
	// decisions it denied, every reason included.
	Allowed int64 `json:"allowed"`
	Denied  int64 `json:"denied"`
	// Violations counts violations by type, omitting zeros.
	Violations map[string]int64 `json:"violations,omitempty"`
	// Connections is the number of open WebSocket connections at T.
	Connections int `json:"connections"`
	// SyncLagMS is the store's sync lag at T, in milliseconds.
	SyncLagMS float64 `json:"sync_lag_ms"`
	// KVWrites counts the KV entries the node wrote.
	KVWrites int64 `json:"kv_writes"`
}

// sampleRing keeps a node's last historyLen samples. The node adds one a
// second from its own counters, with no I/O, whether or not a dashboard is
// open.
type sampleRing struct {
	mu   sync.Mutex
	buf  [historyLen]Sample
	n    int // samples held
	next int // where the next one goes

	// The cumulative counters of the last sample, and the stack they came
	// from: a new stack starts its counters at zero.
	from       *stack
	allowed    int64
	denied     int64
	kvWrites   int64
	violations map[string]int64
}

// record adds the sample of the second ending at now, from s (nil while the
// node is not ready: an empty sample).
func (r *sampleRing) record(now time.Time, s *stack) {
	smp := Sample{T: now.Round(time.Second).Unix()}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n > 0 && r.buf[(r.next+historyLen-1)%historyLen].T >= smp.T {
		return // a late tick: that second has its sample
	}
	if s != nil {
		ls, hs, ks := s.lim.Statistics(), s.handler.Stats(), s.store.Stats()
		var denied int64
		for _, v := range ls.Denied {
			denied += v
		}
		vs := s.counter.snapshot()
		if s != r.from {
			r.from, r.allowed, r.denied, r.kvWrites, r.violations = s, 0, 0, 0, nil
		}
		smp.Allowed = delta(ls.TotalMessages, r.allowed)
		smp.Denied = delta(denied, r.denied)
		smp.KVWrites = delta(ks.KVWrites, r.kvWrites)
		for typ, v := range vs {
			if d := delta(v, r.violations[typ]); d > 0 {
				if smp.Violations == nil {
					smp.Violations = map[string]int64{}
				}
				smp.Violations[typ] = d
			}
		}
		smp.Connections = hs.Connections
		smp.SyncLagMS = float64(ks.SyncLag) / float64(time.Millisecond)
		r.allowed, r.denied, r.kvWrites, r.violations = ls.TotalMessages, denied, ks.KVWrites, vs
	}
	r.buf[r.next] = smp
	r.next = (r.next + 1) % historyLen
	r.n = min(r.n+1, historyLen)
}

// delta returns the growth of a counter from prev to cur; a counter that
// went down was restarted, and all of cur is new.
func delta(cur, prev int64) int64 {
	if cur < prev {
		return cur
	}
	return cur - prev
}

// since returns the samples later than t, oldest first.
func (r *sampleRing) since(t int64) []Sample {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Sample, 0, r.n)
	for i := range r.n {
		s := r.buf[(r.next-r.n+i+historyLen)%historyLen]
		if s.T > t {
			out = append(out, s)
		}
	}
	return out
}

// runSampler records a sample at every whole second until ctx ends.
func (n *node) runSampler(ctx context.Context) {
	wait := time.Until(time.Now().Truncate(time.Second).Add(time.Second))
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-timer.C:
			n.samples.record(now, n.stack.Load())
			timer.Reset(time.Until(now.Truncate(time.Second).Add(time.Second)))
		}
	}
}

// statsRequest is the optional body of a statistics request. A request
// without one (as the operator's tool sends) gets no history.
type statsRequest struct {
	// History asks for the node's samples later than Since[node] (all it
	// holds when its ID is not in Since).
	History bool             `json:"history,omitempty"`
	Since   map[string]int64 `json:"since,omitempty"`
}

// chartHistory is the dashboard hub's copy of every node's samples for the
// last historyLen seconds, merged from the nodes' answers. A node that
// stopped answering keeps its samples until they age out.
type chartHistory struct {
	mu    sync.Mutex
	nodes map[string][]Sample
}

// request returns the body of the next statistics request: history since
// the last sample held of each node.
func (h *chartHistory) request() []byte {
	h.mu.Lock()
	req := statsRequest{History: true, Since: make(map[string]int64, len(h.nodes))}
	for id, ss := range h.nodes {
		if len(ss) > 0 {
			req.Since[id] = ss[len(ss)-1].T
		}
	}
	h.mu.Unlock()
	b, _ := json.Marshal(req)
	return b
}

// merge adds node's samples, which are oldest first, and drops samples
// older than the window before now.
func (h *chartHistory) merge(node string, samples []Sample, now time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.nodes == nil {
		h.nodes = map[string][]Sample{}
	}
	ss := h.nodes[node]
	for _, s := range samples {
		if len(ss) == 0 || s.T > ss[len(ss)-1].T {
			ss = append(ss, s)
		}
	}
	h.nodes[node] = ss
	oldest := now.Unix() - historyLen
	for id, ss := range h.nodes {
		i := 0
		for i < len(ss) && ss[i].T <= oldest {
			i++
		}
		if i == len(ss) {
			delete(h.nodes, id)
		} else if i > 0 {
			h.nodes[id] = slices.Clone(ss[i:])
		}
	}
}

// since returns every node's samples later than t, oldest first.
func (h *chartHistory) since(t int64) map[string][]Sample {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[string][]Sample, len(h.nodes))
	for id, ss := range h.nodes {
		i, _ := slices.BinarySearchFunc(ss, t+1, func(s Sample, t int64) int { return int(s.T - t) })
		if i < len(ss) {
			out[id] = slices.Clone(ss[i:])
		}
	}
	return out
}
