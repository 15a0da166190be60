package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/ratethrottle/ratethrottle/pkg/embedded"
	"github.com/ratethrottle/ratethrottle/pkg/kvstore"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

// result is one row of the table.
type result struct {
	servers, nodes   int
	mode, row        string
	offered, allowed int64
	ideal            int64
	worst            float64 // sparse: the highest admitted/ideal of one key
	measured         int64   // sparse: decisions of the measured half (writes per decision)
	cost             cost
	goal             string
	met              bool
}

func (r result) ratio() float64 { return float64(r.allowed) / float64(max(r.ideal, 1)) }

func (r result) writesPerDecision() float64 {
	if r.measured > 0 {
		return float64(r.cost.counterWrites) / float64(r.measured)
	}
	return float64(r.cost.counterWrites) / float64(max(r.offered, 1))
}

// runMatrix runs every cell (servers × nodes × mode) and its rows.
func runMatrix(o options, log io.Writer) ([]result, []string, error) {
	var hot []string
	res, err := runCells(o, log, &hot)
	return res, hot, err
}

func runCells(o options, log io.Writer, hot *[]string) ([]result, error) {
	spec := limiter.Spec{Limit: o.limit, Per: time.Second, Burst: o.burst}
	rate := o.overload * float64(o.limit)
	var out []result
	for _, servers := range o.servers {
		for _, nodes := range o.nodes {
			n, err := startNATS(servers)
			if err != nil {
				return out, err
			}
			for _, m := range o.modes {
				mode, ok := map[string]kvstore.Mode{"global": kvstore.Global, "strict": kvstore.Strict, "local": kvstore.Local}[m]
				if !ok {
					n.shutdown()
					return out, fmt.Errorf("unknown mode %q", m)
				}
				ns, err := startNodes(n, nodes, mode, o.sync)
				if err != nil {
					n.shutdown()
					return out, err
				}
				cell := func(row string, r result) {
					r.servers, r.nodes, r.mode, r.row = servers, nodes, m, row
					r.goal, r.met = goal(r)
					fmt.Fprintf(log, "%d servers, %d nodes, %s, %s: %.3f\n", servers, nodes, m, row, r.ratio())
					out = append(out, r)
				}
				rows := o.rows
				if i := slices.Index(rows, "leader"); i >= 0 {
					// The leader's loss breaks the cell: run it last.
					rows = append(slices.Delete(slices.Clone(rows), i, i+1), "leader")
				}
				for _, row := range rows {
					if mode != kvstore.Global && !slices.Contains([]string{"cold", "cold-one", "even", "hot"}, row) {
						continue
					}
					switch row {
					case "cold":
						cell(row, steady(ns, spec, rate, o.cold, evenWeights(nodes)))
					case "cold-one":
						cell(row, steady(ns, spec, rate, o.cold, oneWeights(nodes)))
					case "even":
						cell(row, steady(ns, spec, rate, o.duration, evenWeights(nodes)))
					case "hot":
						cell(row, steady(ns, spec, rate, o.duration, hotWeights(nodes)))
					case "skew":
						undo := ns.skew(time.Second)
						ns.waitLive(10 * time.Second)
						cell("cold, clocks ±1s", steady(ns, spec, rate, o.cold, evenWeights(nodes)))
						cell("even, clocks ±1s", steady(ns, spec, rate, o.duration, evenWeights(nodes)))
						undo()
					case "idle":
						cell("idle 65s, resume", idleResume(ns, spec, rate, o.duration/2))
					case "leader":
						if servers == 3 {
							cell("leader lost", leaderLoss(n, ns, spec, rate, o.duration))
						}
					case "sparse":
						cell(fmt.Sprintf("sparse %d keys", o.sparseKeys), sparseRow(ns, o.sparseKeys, o.duration))
					default:
						ns.close()
						n.shutdown()
						return out, fmt.Errorf("unknown row %q", row)
					}
				}
				if mode == kvstore.Strict && o.hotKey > 0 {
					*hot = append(*hot, fmt.Sprintf("%d servers, %d nodes: %s", servers, nodes, hotKeyThroughput(ns.stores, o.hotKey)))
				}
				ns.close()
			}
			n.shutdown()
		}
	}
	return out, nil
}

func steady(ns *nodeSet, spec limiter.Spec, rate float64, d time.Duration, w []float64) result {
	m := startMeter(ns)
	var t tally
	offer(ns, freshKey(), spec, rate, d, w, &t)
	return result{offered: int64(len(t.arrivals)), allowed: t.allowed, ideal: ideal(spec, t.arrivals), cost: m.stop()}
}

// idleResume offers even load for d, lets 65 s of idle time pass on every
// clock, waits for the sweep to drop every bucket, and offers d again.
func idleResume(ns *nodeSet, spec limiter.Spec, rate float64, d time.Duration) result {
	m := startMeter(ns)
	key := freshKey()
	var t tally
	offer(ns, key, spec, rate, d, evenWeights(len(ns.stores)), &t)
	ns.advance(65 * time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for ns.buckets() > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	swept := ns.buckets() == 0
	// Real idle time passes with heartbeats; the jump of every clock
	// makes each node look silent to the others until its next one.
	ns.waitLive(10 * time.Second)
	offer(ns, key, spec, rate, d, evenWeights(len(ns.stores)), &t)
	r := result{offered: int64(len(t.arrivals)), allowed: t.allowed, ideal: ideal(spec, t.arrivals), cost: m.stop()}
	if !swept {
		r.goal = "not swept"
	}
	return r
}

// leaderLoss offers even load for d and stops the stream leader a third
// of the way in; the server is restarted after the row.
func leaderLoss(n *natsSet, ns *nodeSet, spec limiter.Spec, rate float64, d time.Duration) result {
	m := startMeter(ns)
	stopped := make(chan *embedded.Server, 1)
	go func() {
		time.Sleep(d / 3)
		srv, _ := n.stopLeader(ns.bucket)
		stopped <- srv
	}()
	var t tally
	offer(ns, freshKey(), spec, rate, d, evenWeights(len(ns.stores)), &t)
	r := result{offered: int64(len(t.arrivals)), allowed: t.allowed, ideal: ideal(spec, t.arrivals), cost: m.stop()}
	if srv := <-stopped; srv != nil {
		_ = srv.Restart()
		_ = n.cl.WaitReady(30 * time.Second)
	}
	return r
}

// sparseRow: keys at a tenth of their limit (10/s, burst 10), one
// decision per key per second, each key through one node: d of warm-up
// (every key's first counter), then d measured, on the same keys.
func sparseRow(ns *nodeSet, keys int, d time.Duration) result {
	spec := limiter.Spec{Limit: 10, Per: time.Second}
	base := keySeq.Add(int64(keys))
	warm := sparse(ns, base, keys, spec, 1, d)
	m := startMeter(ns)
	run := sparse(ns, base, keys, spec, 1, d)
	c := m.stop()
	var r result
	for k := range keys {
		a := append(warm.arrivals[k], run.arrivals[k]...)
		id := ideal(spec, a)
		r.ideal += id
		r.allowed += warm.admitted[k] + run.admitted[k]
		if id > 0 {
			r.worst = max(r.worst, float64(warm.admitted[k]+run.admitted[k])/float64(id))
		}
		r.offered += int64(len(run.arrivals[k]))
	}
	// Writes per decision of the measured half; the ratios over both.
	r.cost, r.measured = c, r.offered
	for k := range keys {
		r.offered += int64(len(warm.arrivals[k]))
	}
	return r
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

// goal states a row's goal and whether it was met.
func goal(r result) (string, bool) {
	if r.goal != "" {
		return r.goal, false
	}
	x := r.ratio()
	if r.mode == "strict" {
		return "≤ 1.000", r.allowed <= r.ideal
	}
	if r.mode == "local" {
		return "-", true
	}
	switch {
	case r.row == "cold", r.row == "cold, clocks ±1s":
		return "≤ 1.10, ≥ 0.95", x <= 1.10 && x >= 0.95
	case r.row == "cold-one":
		return "≥ 0.95", x >= 0.95
	case r.row == "even", r.row == "even, clocks ±1s":
		return "≤ 1.02", x <= 1.02
	case r.row == "hot":
		return "≥ 0.95, ≤ 1.02", x >= 0.95 && x <= 1.02
	case r.row == "idle 65s, resume", r.row == "leader lost":
		return "≤ 1.10", x <= 1.10
	case strings.HasPrefix(r.row, "sparse"):
		return "≤ 1.02, key ≤ 1.10, ≤ 0.1 writes/decision", x <= 1.02 && r.worst <= 1.10 && r.writesPerDecision() <= 0.1
	}
	return "-", true
}

func printTable(w io.Writer, o options, res []result) {
	fmt.Fprintf(w, "sync=%v overload=%gx limit=%d/s burst=%d steady=%v cold=%v sparse keys=%d (10/s, burst 10, 1/s each)\n\n",
		o.sync, o.overload, o.limit, limiter.Spec{Limit: o.limit, Burst: o.burst}.Capacity(), o.duration, o.cold, o.sparseKeys)
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', tabwriter.Debug)
	fmt.Fprintln(tw, "servers\tnodes\tmode\tload\toffered\tadmitted\tideal\tadmitted/ideal\tworst key\tKV writes/s\tcounter writes/decision\twatch msgs/s/node\tCPU %\tfail-mode entries\twatch restarts\tgoal\tmet")
	for _, r := range res {
		worst := "-"
		if r.worst > 0 {
			worst = fmt.Sprintf("%.3f", r.worst)
		}
		met := "yes"
		if !r.met {
			met = "NO"
		}
		fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%d\t%d\t%d\t%.3f\t%s\t%.0f\t%.3f\t%.0f\t%.0f\t%d\t%d\t%s\t%s\n", r.servers, r.nodes, r.mode, r.row,
			r.offered, r.allowed, r.ideal, r.ratio(), worst, r.cost.writesPerSec, r.writesPerDecision(), r.cost.watchPerNode,
			r.cost.cpuPct, r.cost.downs, r.cost.restarts, r.goal, met)
	}
	tw.Flush()
}
