// Command accuracy measures how closely the cluster store holds a limit
// across nodes. It runs N limiter nodes in one process, each with its own
// NATS connection to an embedded server (or spread over an embedded
// three-server cluster), offers load at a multiple of the limit on one
// hot key, and compares what the nodes admitted with one exact token bucket
// fed the same arrivals.
//
//	go run ./test/accuracy -nodes 3 -sync 50ms -overload 10 -duration 5s
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/ratethrottle/ratethrottle/pkg/kvstore"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

type options struct {
	nodes    int
	servers  int
	modes    string
	skews    string
	sync     time.Duration
	overload float64
	duration time.Duration
	cold     time.Duration
	limit    int64
	burst    int64
	hotKey   time.Duration
}

func main() {
	var o options
	flag.IntVar(&o.nodes, "nodes", 3, "limiter nodes")
	flag.IntVar(&o.servers, "servers", 1, "embedded NATS servers: 1, or 3 for a cluster with R3 buckets")
	flag.StringVar(&o.modes, "modes", "strict,global", "modes to measure, comma-separated: strict, global, local")
	flag.StringVar(&o.skews, "skews", "even,hot", "load shapes, comma-separated: even, hot (90% on one node)")
	flag.DurationVar(&o.sync, "sync", 50*time.Millisecond, "Global SyncInterval")
	flag.Float64Var(&o.overload, "overload", 10, "offered load as a multiple of the limit")
	flag.DurationVar(&o.duration, "duration", 5*time.Second, "steady-state run per row")
	flag.DurationVar(&o.cold, "cold", 200*time.Millisecond, "cold-burst run per mode (0 to skip)")
	flag.Int64Var(&o.limit, "limit", 200, "limit in tokens per second")
	flag.Int64Var(&o.burst, "burst", 0, "burst (0 means equal to the limit)")
	flag.DurationVar(&o.hotKey, "hotkey", 2*time.Second, "Strict hot-key throughput run (0 to skip)")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "accuracy:", err)
		os.Exit(1)
	}
}

type row struct {
	mode, shape      string
	offered, allowed int64
	ideal            int64
	writes           float64
}

func run(o options) error {
	if o.nodes < 1 || (o.servers != 1 && o.servers != 3) || o.overload <= 0 || o.limit <= 0 || o.duration <= 0 {
		return fmt.Errorf("need -nodes >= 1, -servers 1 or 3, positive -overload, -limit and -duration")
	}
	var urls []string
	replicas := 1
	if o.servers == 3 {
		c, err := kvstore.StartCluster(3, kvstore.ServerConfig{})
		if err != nil {
			return err
		}
		defer c.Shutdown()
		urls = c.ClientURLs()
		replicas = 3
	} else {
		s, err := kvstore.StartServer(kvstore.ServerConfig{})
		if err != nil {
			return err
		}
		defer s.Shutdown()
		urls = []string{s.ClientURL()}
	}
	spec := limiter.Spec{Limit: o.limit, Per: time.Second, Burst: o.burst}
	var rows []row
	var hot string
	for _, m := range strings.Split(o.modes, ",") {
		mode, ok := map[string]kvstore.Mode{"global": kvstore.Global, "strict": kvstore.Strict, "local": kvstore.Local}[m]
		if !ok {
			return fmt.Errorf("unknown mode %q", m)
		}
		nodes, closeAll, err := startNodes(o, urls, mode, replicas)
		if err != nil {
			return err
		}
		if o.cold > 0 {
			rows = append(rows, measure(nodes, m, "cold burst, even", spec, o, o.cold, evenWeights(o.nodes)))
		}
		for _, sk := range strings.Split(o.skews, ",") {
			w := evenWeights(o.nodes)
			if sk == "hot" {
				w = hotWeights(o.nodes)
			} else if sk != "even" {
				closeAll()
				return fmt.Errorf("unknown skew %q", sk)
			}
			rows = append(rows, measure(nodes, m, sk, spec, o, o.duration, w))
		}
		if mode == kvstore.Strict && o.hotKey > 0 {
			hot = hotKeyThroughput(nodes, o.hotKey)
		}
		closeAll()
	}
	fmt.Printf("nodes=%d servers=%d sync=%v overload=%gx limit=%d/s burst=%d steady=%v cold=%v\n\n",
		o.nodes, o.servers, o.sync, o.overload, o.limit, spec.Capacity(), o.duration, o.cold)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 1, ' ', tabwriter.Debug)
	fmt.Fprintln(tw, "mode\tload\tnodes\tsync\toffered\tadmitted\tideal\tadmitted/ideal\tKV writes/s")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%v\t%d\t%d\t%d\t%.3f\t%.0f\n", r.mode, r.shape, o.nodes, o.sync,
			r.offered, r.allowed, r.ideal, float64(r.allowed)/float64(max(r.ideal, 1)), r.writes)
	}
	tw.Flush()
	if hot != "" {
		fmt.Println()
		fmt.Println(hot)
	}
	return nil
}

func evenWeights(n int) []float64 {
	w := make([]float64, n)
	for i := range w {
		w[i] = 1 / float64(n)
	}
	return w
}

func hotWeights(n int) []float64 {
	if n == 1 {
		return []float64{1}
	}
	w := make([]float64, n)
	w[0] = 0.9
	for i := 1; i < n; i++ {
		w[i] = 0.1 / float64(n-1)
	}
	return w
}

func startNodes(o options, urls []string, mode kvstore.Mode, replicas int) ([]*kvstore.Store, func(), error) {
	var nodes []*kvstore.Store
	var conns []*nats.Conn
	closeAll := func() {
		for _, s := range nodes {
			s.Close()
		}
		for _, nc := range conns {
			nc.Close()
		}
	}
	bucket := "accuracy_" + mode.String()
	for i := range o.nodes {
		nc, err := nats.Connect(urls[i%len(urls)])
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		conns = append(conns, nc)
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		s, err := kvstore.New(ctx, kvstore.Config{Conn: nc, NodeID: fmt.Sprintf("node-%d", i), Bucket: bucket,
			DefaultMode: mode, SyncInterval: o.sync, Replicas: replicas, Storage: jetstream.MemoryStorage})
		cancel()
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		nodes = append(nodes, s)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, s := range nodes {
		for s.LiveNodes() < o.nodes && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
	}
	return nodes, closeAll, nil
}

var keySeq atomic.Int64

// measure offers weights[i] of overload×limit per second on node i, on a
// fresh key, for d; then replays every arrival through one exact bucket.
func measure(nodes []*kvstore.Store, mode, shape string, spec limiter.Spec, o options, d time.Duration, weights []float64) row {
	key := limiter.Key{Kind: limiter.KindMessages, ID: fmt.Sprintf("client-%d", keySeq.Add(1))}
	writes0 := totalWrites(nodes)
	total := o.overload * float64(spec.Limit) / spec.Per.Seconds()
	arrivals := make([][]int64, len(nodes))
	var allowed atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(d)
	for i, s := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			interval := time.Duration(float64(time.Second) / (total * weights[i]))
			next := start
			ctx := context.Background()
			maxArrivals := int(total*weights[i]*d.Seconds()) + 1
			for len(arrivals[i]) < maxArrivals {
				now := time.Now()
				if !now.Before(end) {
					break
				}
				if now.Before(next) {
					time.Sleep(min(next.Sub(now), end.Sub(now)))
					continue
				}
				for !next.After(now) && len(arrivals[i]) < maxArrivals {
					t := time.Now()
					arrivals[i] = append(arrivals[i], t.UnixNano())
					if r, err := s.Take(ctx, key, spec, t, 1); err == nil && r.OK {
						allowed.Add(1)
					}
					next = next.Add(interval)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	var all []int64
	for _, a := range arrivals {
		all = append(all, a...)
	}
	slices.Sort(all)
	var b limiter.Bucket
	var ideal int64
	for _, t := range all {
		if b.TakeAt(spec, time.Unix(0, t), 1).OK {
			ideal++
		}
	}
	return row{mode: mode, shape: shape, offered: int64(len(all)), allowed: allowed.Load(), ideal: ideal,
		writes: float64(totalWrites(nodes)-writes0) / elapsed.Seconds()}
}

func totalWrites(nodes []*kvstore.Store) int64 {
	var n int64
	for _, s := range nodes {
		n += s.Stats().KVWrites
	}
	return n
}

// hotKeyThroughput runs Strict decisions on one key from every node, two
// goroutines each, with a limit that never denies, and reports decisions
// per second and conflicts.
func hotKeyThroughput(nodes []*kvstore.Store, d time.Duration) string {
	key := limiter.Key{Kind: limiter.KindMessages, ID: fmt.Sprintf("hot-%d", keySeq.Add(1))}
	spec := limiter.Spec{Limit: 1 << 40, Per: time.Second}
	var ok, failed atomic.Int64
	conflicts0 := int64(0)
	for _, s := range nodes {
		conflicts0 += s.Stats().Conflicts
	}
	var wg sync.WaitGroup
	start := time.Now()
	for _, s := range nodes {
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for n := 0; n < 1_000_000 && time.Since(start) < d; n++ {
					if r, err := s.Take(context.Background(), key, spec, time.Now(), 1); err == nil && r.OK {
						ok.Add(1)
					} else {
						failed.Add(1)
					}
				}
			}()
		}
	}
	wg.Wait()
	el := time.Since(start).Seconds()
	var conflicts int64
	for _, s := range nodes {
		conflicts += s.Stats().Conflicts
	}
	return fmt.Sprintf("strict hot key: %.0f decisions/s from %d nodes x 2 goroutines (%d errors, %d CAS conflicts)",
		float64(ok.Load())/el, len(nodes), failed.Load(), conflicts-conflicts0)
}
