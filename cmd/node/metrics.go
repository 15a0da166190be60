package main

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

// metric is one Prometheus metric the node exports and how to read it
// from the stack at scrape time.
type metric struct {
	desc *prometheus.Desc
	typ  prometheus.ValueType
	read func(s *stack) float64
}

// metrics is a prometheus.Collector that reads the counters the packages
// expose when scraped, so nothing is counted twice.
type metrics struct {
	n         *node
	decisions *prometheus.Desc
	ready     *prometheus.Desc
	violation *prometheus.Desc
	list      []metric
}

func newMetrics(n *node) *metrics {
	m := &metrics{
		n: n,
		decisions: prometheus.NewDesc("ratethrottle_decisions_total",
			"Limiter decisions on this node by reason; reason=\"ok\" counts allowed messages.", []string{"reason"}, nil),
		violation: prometheus.NewDesc("ratethrottle_violations_total",
			"Violations on this node by type, room layers included.", []string{"type"}, nil),
		ready: prometheus.NewDesc("ratethrottle_ready", "1 once NATS and the KV buckets are ready.", nil, nil),
	}
	add := func(name, help string, typ prometheus.ValueType, read func(s *stack) float64) {
		m.list = append(m.list, metric{prometheus.NewDesc(name, help, nil, nil), typ, read})
	}
	counter, gauge := prometheus.CounterValue, prometheus.GaugeValue
	add("ratethrottle_messages_total", "Messages allowed on this node.", counter, func(s *stack) float64 { return float64(s.lim.Statistics().TotalMessages) })
	add("ratethrottle_message_bytes_total", "Payload bytes of the messages allowed on this node.", counter, func(s *stack) float64 { return float64(s.lim.Statistics().TotalBytes) })
	add("ratethrottle_connections", "Open WebSocket connections on this node.", gauge, func(s *stack) float64 { return float64(s.handler.Stats().Connections) })
	add("ratethrottle_clients", "Clients with an open connection on this node.", gauge, func(s *stack) float64 { return float64(s.lim.Statistics().UniqueClients) })
	add("ratethrottle_rooms", "Rooms with members on this node.", gauge, func(s *stack) float64 { return float64(s.handler.Stats().Rooms) })
	add("ratethrottle_connections_rejected_total", "Connections refused at admission.", counter, func(s *stack) float64 { return float64(s.handler.Stats().Rejected) })
	add("ratethrottle_frames_denied_total", "Frames answered with an error frame.", counter, func(s *stack) float64 { return float64(s.handler.Stats().Denials) })
	add("ratethrottle_send_queue_overflows_total", "Connections aborted because their send queue was full.", counter, func(s *stack) float64 { return float64(s.handler.Stats().Overflows) })
	add("ratethrottle_remote_frames_dropped_total", "Room frames from other nodes (or any publisher on a room subject) dropped because they are not valid UTF-8.", counter, func(s *stack) float64 { return float64(s.handler.Stats().RemoteDropped) })
	add("ratethrottle_room_publish_errors_total", "Room messages that could not be published to the other nodes.", counter, func(s *stack) float64 { return float64(s.handler.Stats().PublishErrors) })
	add("ratethrottle_sync_lag_seconds", "Lag of the last remote consumption update applied, from the other node's write.", gauge, func(s *stack) float64 { return s.store.Stats().SyncLag.Seconds() })
	add("ratethrottle_kv_writes_total", "KV entries written (counters, compare-and-swap updates, connection counts, heartbeats).", counter, func(s *stack) float64 { return float64(s.store.Stats().KVWrites) })
	add("ratethrottle_kv_write_errors_total", "KV writes that failed.", counter, func(s *stack) float64 { return float64(s.store.Stats().WriteErrors) })
	add("ratethrottle_kv_flushes_total", "Global-mode batches flushed.", counter, func(s *stack) float64 { return float64(s.store.Stats().Flushes) })
	add("ratethrottle_kv_conflicts_total", "Strict-mode compare-and-swap conflicts.", counter, func(s *stack) float64 { return float64(s.store.Stats().Conflicts) })
	add("ratethrottle_kv_remote_updates_total", "Other nodes' consumption updates applied.", counter, func(s *stack) float64 { return float64(s.store.Stats().RemoteUpdates) })
	add("ratethrottle_fail_mode_entries_total", "Times the store entered its fail mode.", counter, func(s *stack) float64 { return float64(s.store.Stats().FailModeEntries) })
	add("ratethrottle_store_down", "1 while the store is in its fail mode.", gauge, func(s *stack) float64 { return b2f(s.store.Stats().Down) })
	add("ratethrottle_live_nodes", "Live nodes this node sees, itself included.", gauge, func(s *stack) float64 { return float64(s.store.Stats().LiveNodes) })
	add("ratethrottle_events_published_total", "Violation events handed to NATS.", counter, func(s *stack) float64 { return float64(s.pub.Stats().Published) })
	add("ratethrottle_events_dropped_total", "Violation events dropped because the queue was full.", counter, func(s *stack) float64 { return float64(s.pub.Stats().Dropped) })
	add("ratethrottle_events_failed_total", "Violation events NATS refused.", counter, func(s *stack) float64 { return float64(s.pub.Stats().Failed) })
	add("ratethrottle_events_queued", "Violation events waiting to be published.", gauge, func(s *stack) float64 { return float64(s.pub.Stats().Queued) })
	add("ratethrottle_bans", "Bans in force.", gauge, func(s *stack) float64 { return float64(len(s.bans.List())) })
	add("ratethrottle_autobans_total", "Bans written by the auto-ban policy.", counter, func(s *stack) float64 {
		if s.autoban == nil {
			return 0
		}
		return float64(s.autoban.Stats().Banned)
	})
	return m
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.decisions
	ch <- m.ready
	ch <- m.violation
	for _, x := range m.list {
		ch <- x.desc
	}
}

// Collect implements prometheus.Collector. Before the node is ready only
// ratethrottle_ready is reported.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	s := m.n.stack.Load()
	ch <- prometheus.MustNewConstMetric(m.ready, prometheus.GaugeValue, b2f(s != nil))
	if s == nil {
		return
	}
	st := s.lim.Statistics()
	for _, r := range limiter.Reasons() {
		v := float64(st.Denied[r])
		if r == limiter.ReasonOK {
			v = float64(st.TotalMessages)
		}
		ch <- prometheus.MustNewConstMetric(m.decisions, prometheus.CounterValue, v, string(r))
	}
	for i, t := range s.counter.types {
		ch <- prometheus.MustNewConstMetric(m.violation, prometheus.CounterValue, float64(s.counter.counts[i].Load()), string(t))
	}
	for _, x := range m.list {
		ch <- prometheus.MustNewConstMetric(x.desc, x.typ, x.read(s))
	}
}
