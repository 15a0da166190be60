package main

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ratethrottle/ratethrottle/pkg/events"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

// statsSubject returns the subject on which every node answers requests
// for its statistics.
func statsSubject(prefix string) string { return prefix + ".node.stats" }

// NodeStats is the JSON statistics of one node.
type NodeStats struct {
	// Node is the node's ID; "*" in ClusterStats.Total.
	Node string `json:"node"`
	// Time is when the statistics were taken, in UTC.
	Time time.Time `json:"time"`
	// UptimeSeconds is the time since the node started, in seconds; zero
	// in ClusterStats.Total.
	UptimeSeconds float64 `json:"uptime_seconds"`
	// Ready reports whether the node's limiter stack is up; while it is
	// not, the counters are zero and Limits come from the configuration.
	// In ClusterStats.Total it is true when every node answering is ready.
	Ready bool `json:"ready"`
	// ActiveConnections is the number of connections registered with the
	// limiter.
	ActiveConnections int `json:"active_connections"`
	// UniqueClients is the number of clients with a registered
	// connection.
	UniqueClients int `json:"unique_clients"`
	// TotalMessages and TotalBytes are the messages and payload bytes
	// allowed since the limiter started.
	TotalMessages int64 `json:"total_messages"`
	TotalBytes    int64 `json:"total_bytes"`
	// Denied counts the limiter's denials by reason, omitting zeros.
	Denied map[string]int64 `json:"denied"`
	// Violations counts violations by type, the room layers' included.
	Violations map[string]int64 `json:"violations"`
	// Rooms is the number of rooms with members on the node.
	Rooms int `json:"rooms"`
	// RejectedConns counts connections refused at admission.
	RejectedConns int64 `json:"rejected_connections"`
	// Limits are the limits in force; in ClusterStats.Total, those of the
	// last node listed.
	Limits LimitsJSON `json:"limits"`
	// LiveNodes is the number of live nodes the store sees, this one
	// included; the largest in ClusterStats.Total.
	LiveNodes int `json:"live_nodes"`
	// StoreDown reports whether the store is in its fail mode.
	StoreDown bool `json:"store_down"`
	// SyncLagMS is the lag of the last remote update applied, from the
	// other node's write to its application here, in milliseconds; the
	// largest in ClusterStats.Total.
	SyncLagMS float64 `json:"sync_lag_ms"`
	// KVWrites counts entries written to KV; KVWriteErrors counts failed
	// KV writes.
	KVWrites      int64 `json:"kv_writes"`
	KVWriteErrors int64 `json:"kv_write_errors"`
	// EventsPublished counts violation events handed to NATS;
	// EventsDropped counts those dropped because the publish queue was
	// full or the publisher closed.
	EventsPublished uint64 `json:"events_published"`
	EventsDropped   uint64 `json:"events_dropped"`
	// Bans is the number of bans in force; the largest in
	// ClusterStats.Total.
	Bans int `json:"bans"`
	// History holds the node's per-second samples, oldest first, when the
	// request asked for them (the dashboard does); otherwise it is absent.
	History []Sample `json:"history,omitempty"`
}

// LimitsJSON is limiter.Limits with the setting names as JSON keys. A zero
// limit means unlimited; a zero burst equals its rate.
type LimitsJSON struct {
	// ConnectionsPerMinute caps new connections a minute per client;
	// ConnectionBurst is the connection bucket's capacity.
	ConnectionsPerMinute int64 `json:"connections_per_minute"`
	ConnectionBurst      int64 `json:"connection_burst"`
	// MessagesPerMinute caps messages a minute per connection or per
	// client (see MessageScope); MessageBurst is the message bucket's
	// capacity.
	MessagesPerMinute int64 `json:"messages_per_minute"`
	MessageBurst      int64 `json:"message_burst"`
	// BytesPerMinute caps payload bytes a minute with the same scope as
	// messages; ByteBurst is the byte bucket's capacity, in bytes.
	BytesPerMinute int64 `json:"bytes_per_minute"`
	ByteBurst      int64 `json:"byte_burst"`
	// MaxConcurrentConnections caps a client's open connections,
	// cluster-wide.
	MaxConcurrentConnections int64 `json:"max_concurrent_connections"`
	// MaxMessageSize caps one message's size, in bytes.
	MaxMessageSize int64 `json:"max_message_size"`
	// MessageScope is "connection" or "client": whether the message and
	// byte buckets are per connection or per client.
	MessageScope string `json:"message_scope"`
}

// ClusterStats is the JSON answer of /stats?scope=cluster.
type ClusterStats struct {
	// Time is when the request was sent, in UTC.
	Time time.Time `json:"time"`
	// Nodes are the answers of every node that replied in time, sorted by
	// node ID.
	Nodes []NodeStats `json:"nodes"`
	// Missing are the IDs of the nodes that answered this node's requests
	// within the last two minutes but not this one, sorted; a node that
	// stopped gracefully says so and is not listed.
	Missing []string `json:"missing"`
	// Expected is the number of nodes expected to answer: the most of the
	// live nodes the store counts and the nodes that answered or are
	// missing. Expected > len(Nodes) with Missing empty means that a node
	// this node never heard from is counted live but did not answer.
	Expected int `json:"expected"`
	// Total sums the nodes' counters; unique_clients is a sum of per-node
	// counts, so a client on two nodes counts twice.
	Total NodeStats `json:"total"`
}

// localStats returns this node's statistics.
func (n *node) localStats() NodeStats {
	now := time.Now()
	st := NodeStats{Node: n.id, Time: now.UTC(), UptimeSeconds: now.Sub(n.start).Seconds(), Denied: map[string]int64{}}
	s := n.stack.Load()
	if s == nil {
		st.Limits = limitsJSON(n.cfg.Limits())
		return st
	}
	ls := s.lim.Statistics()
	hs := s.handler.Stats()
	ks := s.store.Stats()
	ps := s.pub.Stats()
	st.Ready = true
	st.Violations = s.counter.snapshot()
	st.ActiveConnections = ls.ActiveConnections
	st.UniqueClients = ls.UniqueClients
	st.TotalMessages = ls.TotalMessages
	st.TotalBytes = ls.TotalBytes
	for r, v := range ls.Denied {
		if v > 0 {
			st.Denied[string(r)] = v
		}
	}
	st.Rooms = hs.Rooms
	st.RejectedConns = hs.Rejected
	st.Limits = limitsJSON(ls.Limits)
	st.LiveNodes = ks.LiveNodes
	st.StoreDown = ks.Down
	st.SyncLagMS = float64(ks.SyncLag) / float64(time.Millisecond)
	st.KVWrites = ks.KVWrites
	st.KVWriteErrors = ks.WriteErrors
	st.EventsPublished = ps.Published
	st.EventsDropped = ps.Dropped
	st.Bans = len(s.bans.List())
	return st
}

func limitsJSON(l limiter.Limits) LimitsJSON {
	return LimitsJSON{
		ConnectionsPerMinute: l.ConnectionsPerMinute, ConnectionBurst: l.ConnectionBurst,
		MessagesPerMinute: l.MessagesPerMinute, MessageBurst: l.MessageBurst,
		BytesPerMinute: l.BytesPerMinute, ByteBurst: l.ByteBurst,
		MaxConcurrentConnections: l.MaxConcurrentConnections, MaxMessageSize: l.MaxMessageSize,
		MessageScope: l.MessageScope.String(),
	}
}

// serveStatsRequests answers cluster statistics requests with this node's
// statistics.
func (n *node) serveStatsRequests(s *stack) (*nats.Subscription, error) {
	sub, err := n.nc.Subscribe(statsSubject(n.cfg.EventPrefix), func(m *nats.Msg) {
		st := n.localStats()
		var req statsRequest
		if len(m.Data) > 0 && json.Unmarshal(m.Data, &req) == nil && req.History {
			st.History = n.samples.since(req.Since[n.id])
		}
		b, err := json.Marshal(st)
		if err == nil {
			_ = m.Respond(b)
		}
	})
	if err != nil {
		return nil, err
	}
	return sub, n.nc.Flush()
}

// serveLeaveNotices forgets the nodes that say they are leaving.
func (n *node) serveLeaveNotices() (*nats.Subscription, error) {
	return n.nc.Subscribe(leaveSubject(n.cfg.EventPrefix), func(m *nats.Msg) {
		n.peers.left(string(m.Data))
	})
}

// sayLeaving stops answering statistics requests and tells the other
// nodes that this node is leaving, so that their cluster statistics do not
// list it as missing.
func (n *node) sayLeaving(s *stack) {
	if s.statsSub != nil {
		_ = s.statsSub.Unsubscribe()
	}
	if err := n.nc.Publish(leaveSubject(n.cfg.EventPrefix), []byte(n.id)); err != nil {
		n.log.Debug("leave notice", "err", err)
	}
}

// Waiting for the nodes' answers to a cluster statistics request.
const (
	// clusterStatsGrace bounds the wait for more answers once the first
	// has come: a node that is counted as live but does not answer (killed,
	// and not yet dropped by the store's heartbeats) costs a request at
	// most this.
	clusterStatsGrace = 250 * time.Millisecond
	// peerWaitTTL is how long after its last answer a node is still waited
	// for by name.
	peerWaitTTL = 10 * time.Second
	// peerMissingTTL is how long after its last answer a node that does
	// not answer is listed in ClusterStats.Missing, unless it said it was
	// leaving.
	peerMissingTTL = 2 * time.Minute
)

// peerBook remembers when each node last answered a statistics request of
// this node, so that a cluster statistics answer can name the nodes that
// were expected and did not answer: the store counts live nodes but does
// not name them.
type peerBook struct {
	mu   sync.Mutex
	seen map[string]time.Time
}

func newPeerBook() *peerBook { return &peerBook{seen: map[string]time.Time{}} }

// answered records an answer of node at t.
func (p *peerBook) answered(node string, t time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if t.After(p.seen[node]) {
		p.seen[node] = t
	}
}

// left forgets node, which said it was leaving.
func (p *peerBook) left(node string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.seen, node)
}

// since returns the nodes that answered after t, sorted, and forgets those
// that have not answered since now-peerMissingTTL.
func (p *peerBook) since(t, now time.Time) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for id, at := range p.seen {
		switch {
		case at.After(t):
			out = append(out, id)
		case now.Sub(at) > peerMissingTTL:
			delete(p.seen, id)
		}
	}
	slices.Sort(out)
	return out
}

// leaveSubject returns the subject on which a node stopping gracefully
// says so, so that the others stop expecting its answers.
func leaveSubject(prefix string) string { return prefix + ".node.leave" }

// clusterStats asks every node for its statistics. It waits until every
// node this node expects has answered (those that answered within
// peerWaitTTL, and at least as many as the store counts as live), but for
// at most clusterStatsGrace after the first answer, and never past timeout
// or ctx. Nodes that answered within peerMissingTTL and did not answer
// this time are listed in Missing. The request's body is req, nil or a
// statsRequest in JSON.
func (n *node) clusterStats(ctx context.Context, timeout time.Duration, req []byte) (ClusterStats, error) {
	start := time.Now()
	want := 1
	if s := n.stack.Load(); s != nil {
		want = max(s.store.LiveNodes(), 1)
	}
	waitFor := n.peers.since(start.Add(-peerWaitTTL), start)
	inbox := n.nc.NewRespInbox()
	replies := make(chan *nats.Msg, 64)
	sub, err := n.nc.ChanSubscribe(inbox, replies)
	if err != nil {
		return ClusterStats{}, err
	}
	defer sub.Unsubscribe()
	if err := n.nc.PublishRequest(statsSubject(n.cfg.EventPrefix), inbox, req); err != nil {
		return ClusterStats{}, err
	}
	out := ClusterStats{Time: start.UTC(), Total: NodeStats{Node: "*", Denied: map[string]int64{}, Violations: map[string]int64{}}, Missing: []string{}}
	seen := map[string]bool{}
	complete := func() bool {
		if len(seen) < want {
			return false
		}
		for _, id := range waitFor {
			if !seen[id] {
				return false
			}
		}
		return true
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	var grace <-chan time.Time
wait:
	for !complete() {
		select {
		case m := <-replies:
			var st NodeStats
			if json.Unmarshal(m.Data, &st) != nil || st.Node == "" || seen[st.Node] {
				continue
			}
			seen[st.Node] = true
			n.peers.answered(st.Node, time.Now())
			out.Nodes = append(out.Nodes, st)
			if grace == nil {
				g := time.NewTimer(clusterStatsGrace)
				defer g.Stop()
				grace = g.C
			}
		case <-grace:
			break wait
		case <-timer.C:
			break wait
		case <-ctx.Done():
			break wait
		}
	}
	for _, id := range n.peers.since(start.Add(-peerMissingTTL), start) {
		if !seen[id] {
			out.Missing = append(out.Missing, id)
		}
	}
	out.Expected = max(want, len(out.Nodes)+len(out.Missing))
	slices.SortFunc(out.Nodes, func(a, b NodeStats) int { return strings.Compare(a.Node, b.Node) })
	t := &out.Total
	t.Time = out.Time
	t.Ready = len(out.Nodes) > 0
	for _, st := range out.Nodes {
		t.Ready = t.Ready && st.Ready
		t.ActiveConnections += st.ActiveConnections
		t.UniqueClients += st.UniqueClients
		t.TotalMessages += st.TotalMessages
		t.TotalBytes += st.TotalBytes
		for r, v := range st.Denied {
			t.Denied[r] += v
		}
		for r, v := range st.Violations {
			t.Violations[r] += v
		}
		t.Rooms += st.Rooms
		t.RejectedConns += st.RejectedConns
		t.KVWrites += st.KVWrites
		t.KVWriteErrors += st.KVWriteErrors
		t.EventsPublished += st.EventsPublished
		t.EventsDropped += st.EventsDropped
		t.SyncLagMS = max(t.SyncLagMS, st.SyncLagMS)
		t.LiveNodes = max(t.LiveNodes, st.LiveNodes)
		t.Bans = max(t.Bans, st.Bans)
		t.Limits = st.Limits
	}
	return out, nil
}

// recentViolations keeps the last events seen on the cluster's event
// subjects, newest last.
type recentViolations struct {
	mu     sync.Mutex
	events []events.Event
	size   int
	total  uint64
}

func newRecentViolations(size int) *recentViolations {
	return &recentViolations{size: size}
}

func (r *recentViolations) add(e events.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.total++
	if len(r.events) == r.size {
		copy(r.events, r.events[1:])
		r.events = r.events[:r.size-1]
	}
	r.events = append(r.events, e)
}

// snapshot returns the events kept, newest first, and the number seen.
func (r *recentViolations) snapshot() ([]events.Event, uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]events.Event, len(r.events))
	for i, e := range r.events {
		out[len(out)-1-i] = e
	}
	return out, r.total
}
