package main

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/ratethrottle/ratethrottle/pkg/embedded"
	"github.com/ratethrottle/ratethrottle/pkg/kvstore"
)

// clock is one node's wall clock: the real time plus an offset the
// harness sets (clock skew) or advances (idle time).
type clock struct{ off atomic.Int64 }

func (c *clock) Now() time.Time { return time.Now().Add(time.Duration(c.off.Load())) }

// nats is the embedded NATS of one matrix cell: one server or a cluster.
type natsSet struct {
	srv      *embedded.Server
	cl       *embedded.Cluster
	urls     []string
	replicas int
}

func startNATS(servers int) (*natsSet, error) {
	if servers == 3 {
		c, err := embedded.StartCluster(3, embedded.Config{})
		if err != nil {
			return nil, err
		}
		return &natsSet{cl: c, urls: c.ClientURLs(), replicas: 3}, nil
	}
	s, err := embedded.Start(embedded.Config{})
	if err != nil {
		return nil, err
	}
	return &natsSet{srv: s, urls: []string{s.ClientURL()}, replicas: 1}, nil
}

func (n *natsSet) shutdown() {
	if n.cl != nil {
		n.cl.Shutdown()
	}
	if n.srv != nil {
		n.srv.Shutdown()
	}
}

// stopLeader stops the server leading the bucket's stream and returns it
// (nil with one server).
func (n *natsSet) stopLeader(bucket string) (*embedded.Server, error) {
	if n.cl == nil {
		return nil, nil
	}
	nc, err := nats.Connect(strings.Join(n.urls, ","))
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		return nil, err
	}
	st, err := kv.Status(ctx)
	if err != nil {
		return nil, err
	}
	leader := st.(*jetstream.KeyValueBucketStatus).StreamInfo().Cluster.Leader
	for _, srv := range n.cl.Servers() {
		if srv.Config().Name == leader {
			srv.Stop()
			return srv, nil
		}
	}
	return nil, fmt.Errorf("stream leader %q not among the servers", leader)
}

// nodeSet is N stores over one NATS set, node i connected to server
// i mod servers, each with its own clock.
type nodeSet struct {
	stores []*kvstore.Store
	clocks []*clock
	conns  []*nats.Conn
	bucket string
}

var bucketSeq atomic.Int64

func startNodes(n *natsSet, nodes int, mode kvstore.Mode, sync time.Duration) (*nodeSet, error) {
	ns := &nodeSet{bucket: fmt.Sprintf("accuracy_%s_%d", mode, bucketSeq.Add(1))}
	for i := range nodes {
		// Node i prefers server i mod servers, and fails over to the others.
		urls := append(append([]string(nil), n.urls[i%len(n.urls):]...), n.urls[:i%len(n.urls)]...)
		nc, err := nats.Connect(strings.Join(urls, ","), nats.DontRandomize(), nats.MaxReconnects(-1),
			nats.ReconnectWait(50*time.Millisecond))
		if err != nil {
			ns.close()
			return nil, err
		}
		ns.conns = append(ns.conns, nc)
		c := new(clock)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		s, err := kvstore.New(ctx, kvstore.Config{Conn: nc, NodeID: fmt.Sprintf("node-%d", i), Bucket: ns.bucket,
			DefaultMode: mode, SyncInterval: sync, Replicas: n.replicas, Storage: jetstream.MemoryStorage,
			Timeout: time.Second, Now: c.Now, SweepInterval: 100 * time.Millisecond})
		cancel()
		if err != nil {
			ns.close()
			return nil, err
		}
		ns.stores = append(ns.stores, s)
		ns.clocks = append(ns.clocks, c)
	}
	ns.waitLive(20 * time.Second)
	return ns, nil
}

func (ns *nodeSet) close() {
	for _, s := range ns.stores {
		s.Close()
	}
	for _, nc := range ns.conns {
		nc.Close()
	}
}

// advance moves every node's clock by d.
func (ns *nodeSet) advance(d time.Duration) {
	for _, c := range ns.clocks {
		c.off.Add(int64(d))
	}
}

// skew sets node i's clock to +d or -d of the common offset, alternately,
// and returns a function that undoes it.
func (ns *nodeSet) skew(d time.Duration) func() {
	for i, c := range ns.clocks {
		if i%2 == 0 {
			c.off.Add(int64(d))
		} else {
			c.off.Add(-int64(d))
		}
	}
	return func() { ns.skew(-d) }
}

// totals sums the nodes' stats.
func (ns *nodeSet) totals() (writes, counterWrites, watch, down, restarts int64) {
	for _, s := range ns.stores {
		st := s.Stats()
		writes += st.KVWrites
		counterWrites += st.CounterWrites
		watch += st.WatchMessages
		down += st.FailModeEntries
		restarts += st.WatchRestarts
	}
	return
}

// waitLive waits, up to timeout, until every node counts every node
// live (after a clock jump a node's heartbeats look old until its next).
func (ns *nodeSet) waitLive(timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for _, s := range ns.stores {
		for s.LiveNodes() < len(ns.stores) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// buckets returns the most Global buckets any node holds.
func (ns *nodeSet) buckets() int {
	n := 0
	for _, s := range ns.stores {
		n = max(n, s.Stats().Buckets)
	}
	return n
}
