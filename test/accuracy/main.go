// Command accuracy measures how closely the cluster store holds a limit
// across nodes. It runs N limiter nodes in one process, each with its own
// NATS connection to an embedded server (or spread over an embedded
// three-server cluster), offers load on fresh keys, and compares what the
// nodes admitted with one exact token bucket per key fed the same arrivals
// (the ideal).
//
//	go run ./test/accuracy                     # the whole matrix, one table
//	go run ./test/accuracy -matrix ci          # the reduced matrix the CI test runs
//	go run ./test/accuracy -nodes 10 -servers 3 -rows cold,even -modes global
//
// Rows: cold (10x load spread over every node, 200 ms, on a key no node
// has used), cold-one (the same load through one node), even and hot
// (steady 10x load, spread evenly or 90% on one node), skew (cold and
// steady with node clocks ±1 s apart), idle (steady, then 65 s of idle
// time on every clock so that a real sweep drops the buckets, then steady
// again), leader (steady while the bucket's stream leader is stopped; 3
// servers only), sparse (many keys at a tenth of their limit, each
// through one node).
package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

type options struct {
	nodes      []int
	servers    []int
	modes      []string
	rows       []string
	sync       time.Duration
	overload   float64
	duration   time.Duration
	cold       time.Duration
	limit      int64
	burst      int64
	sparseKeys int
	hotKey     time.Duration
}

func main() {
	var (
		o                           options
		nodes, servers, modes, rows string
		matrix                      string
	)
	flag.StringVar(&matrix, "matrix", "full", "full, ci, or none (use the flags below alone)")
	flag.StringVar(&nodes, "nodes", "", "limiter nodes, comma-separated (default per matrix)")
	flag.StringVar(&servers, "servers", "", "embedded NATS servers: 1, 3 (a cluster, R3 bucket), comma-separated")
	flag.StringVar(&modes, "modes", "", "modes: global, strict, local, comma-separated")
	flag.StringVar(&rows, "rows", "", "rows: cold, cold-one, even, hot, skew, idle, leader, sparse")
	flag.DurationVar(&o.sync, "sync", 50*time.Millisecond, "Global SyncInterval")
	flag.Float64Var(&o.overload, "overload", 10, "offered load as a multiple of the limit")
	flag.DurationVar(&o.duration, "duration", 0, "steady-state run per row (default per matrix)")
	flag.DurationVar(&o.cold, "cold", 200*time.Millisecond, "cold-burst run")
	flag.Int64Var(&o.limit, "limit", 200, "limit in tokens per second")
	flag.Int64Var(&o.burst, "burst", 0, "burst (0 means equal to the limit)")
	flag.IntVar(&o.sparseKeys, "sparse-keys", 0, "keys of the sparse row (default per matrix)")
	flag.DurationVar(&o.hotKey, "hotkey", 0, "Strict hot-key throughput run (0 to skip)")
	flag.Parse()
	d, keys := o.duration, o.sparseKeys
	o = withMatrix(o, matrix)
	if d > 0 {
		o.duration = d
	}
	if keys > 0 {
		o.sparseKeys = keys
	}
	var err error
	for _, f := range []struct {
		s   string
		dst *[]int
	}{{nodes, &o.nodes}, {servers, &o.servers}} {
		if f.s != "" {
			if *f.dst, err = ints(f.s); err != nil {
				fail(err)
			}
		}
	}
	if modes != "" {
		o.modes = strings.Split(modes, ",")
	}
	if rows != "" {
		o.rows = strings.Split(rows, ",")
	}
	res, hot, err := runMatrix(o, os.Stderr)
	if err != nil {
		fail(err)
	}
	printTable(os.Stdout, o, res)
	for _, h := range hot {
		fmt.Println(h)
	}
}

// withMatrix fills the matrix's defaults into o.
func withMatrix(o options, matrix string) options {
	switch matrix {
	case "full":
		o.nodes, o.servers = []int{3, 10, 30}, []int{1, 3}
		o.modes = []string{"global", "strict"}
		o.rows = []string{"cold", "cold-one", "even", "hot", "skew", "idle", "leader", "sparse"}
		o.duration, o.sparseKeys = 3*time.Second, 10000
	case "ci":
		o.nodes, o.servers = []int{3, 10}, []int{1}
		o.modes = []string{"global"}
		o.rows = []string{"cold", "cold-one", "even", "hot", "skew", "idle", "sparse"}
		o.duration, o.sparseKeys = 2*time.Second, 2000
	default:
		o.nodes, o.servers, o.modes = []int{3}, []int{1}, []string{"global"}
		o.rows = []string{"cold", "even", "hot"}
		o.duration, o.sparseKeys = 5*time.Second, 10000
	}
	return o
}

func ints(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("bad number %q", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "accuracy:", err)
	os.Exit(1)
}
