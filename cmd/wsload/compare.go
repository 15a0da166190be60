package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Contender is one server of a comparison: a name and its target.
type Contender struct {
	Name   string
	Target Target
}

// ParseContenders parses -compare's list: name=url pairs, comma-separated,
// where url may be followed by "|" and the server's metrics URL when they
// are not served beside the WebSocket (a node's operations listener). The
// first is the subject whose ratios to the others are reported.
func ParseContenders(list string, allowRemote bool, metricsPath string) ([]Contender, error) {
	var out []Contender
	for _, item := range strings.Split(list, ",") {
		name, raw, ok := strings.Cut(strings.TrimSpace(item), "=")
		if !ok || name == "" {
			return nil, fmt.Errorf("compare: %q is not name=url", item)
		}
		raw, metrics, hasMetrics := strings.Cut(raw, "|")
		t, err := ParseTarget(raw, allowRemote, metricsPath)
		if err == nil && hasMetrics {
			t.Metrics, err = ParseMetricsURL(metrics, allowRemote)
		}
		if err != nil {
			return nil, fmt.Errorf("compare %s: %w", name, err)
		}
		out = append(out, Contender{Name: name, Target: t})
	}
	if len(out) < 2 {
		return nil, errors.New("compare: needs at least two name=url servers")
	}
	return out, nil
}

// Measure is what one run against one server gave.
type Measure struct {
	// PerSec is the deliveries per second while sending.
	PerSec float64
	// CPUPerMsg is the server's CPU time per message sent, from its
	// process_cpu_seconds_total between the connected and the final
	// readings (the send phase and the drain); 0 when unreadable.
	CPUPerMsg time.Duration
	// P50 and P99 are the delivery latency quantiles.
	P50, P99 time.Duration
	// RSSPerConn is the server's resident memory gained per connection
	// once connected; 0 when unreadable.
	RSSPerConn float64
	// Delivered is the fraction of expected deliveries made.
	Delivered float64
	// Problems names what went wrong: dial errors, closes, error frames.
	Problems string
}

func measure(res *Result) Measure {
	m := Measure{PerSec: res.DeliveredPerSec(), P50: res.Latency.Quantile(0.5), P99: res.Latency.Quantile(0.99)}
	if res.Expected > 0 {
		m.Delivered = float64(res.Delivered) / float64(res.Expected)
	}
	t := res.Targets[0]
	if !t.Connected.At.IsZero() && !t.After.At.IsZero() && res.Sent > 0 {
		cpu := t.After.Get("process_cpu_seconds_total") - t.Connected.Get("process_cpu_seconds_total")
		m.CPUPerMsg = time.Duration(cpu / float64(res.Sent) * float64(time.Second))
	}
	if _, rss, ok := t.MemPerConn(); ok {
		m.RSSPerConn = rss
	}
	var p []string
	if len(res.DialErrors) > 0 {
		p = append(p, "dial errors "+formatCounts(res.DialErrors))
	}
	if len(res.Closes) > 0 {
		p = append(p, "closes "+formatCounts(res.Closes))
	}
	if len(res.ErrorFrames) > 0 {
		p = append(p, "error frames "+formatCounts(res.ErrorFrames))
	}
	m.Problems = strings.Join(p, "; ")
	return m
}

// Comparison is the outcome of Compare: Rounds[i][j] is round i's measure
// of contender j.
type Comparison struct {
	Contenders []Contender
	Rounds     [][]Measure
}

// Compare runs cfg against each contender in turn, rounds times; round i
// starts with contender i mod len, so that no server always runs first
// or last. cfg.Targets is ignored.
func Compare(ctx context.Context, cfg Config, cs []Contender, rounds int, log io.Writer) (*Comparison, error) {
	cmp := &Comparison{Contenders: cs}
	for i := 0; i < rounds && ctx.Err() == nil; i++ {
		row := make([]Measure, len(cs))
		for k := range cs {
			j := (i + k) % len(cs)
			c := cfg
			c.Targets = []Target{cs[j].Target}
			c.NoJoin = cfg.NoJoin && cs[j].Name == "echo"
			fmt.Fprintf(log, "round %d/%d: %s\n", i+1, rounds, cs[j].Name)
			res, err := Run(ctx, c)
			if err != nil {
				return nil, err
			}
			row[j] = measure(res)
		}
		cmp.Rounds = append(cmp.Rounds, row)
	}
	return cmp, nil
}

// spread returns the median, minimum and maximum of v.
func spread(v []float64) (med, lo, hi float64) {
	if len(v) == 0 {
		return 0, 0, 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	med = s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	return med, s[0], s[n-1]
}

// WriteComparison writes every round's measures, then for each other
// contender the median of the per-round ratios subject/other and their
// range.
func WriteComparison(w io.Writer, cmp *Comparison) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "round\tserver\tdeliveries/s\tCPU/msg\tp50\tp99\tRSS/conn\tdelivered\tproblems")
	for i, row := range cmp.Rounds {
		for j, m := range row {
			fmt.Fprintf(tw, "%d\t%s\t%.0f\t%.2f µs\t%s\t%s\t%s\t%.4f\t%s\n", i+1, cmp.Contenders[j].Name, m.PerSec,
				float64(m.CPUPerMsg)/1e3, ms(m.P50), ms(m.P99), kib(m.RSSPerConn), m.Delivered, m.Problems)
		}
	}
	_ = tw.Flush()
	subject := cmp.Contenders[0].Name
	fmt.Fprintf(w, "\n%s / peer, median of per-round ratios (min–max) over %d rounds:\n", subject, len(cmp.Rounds))
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "peer\tdeliveries/s\tCPU/msg\tp50\tp99\tRSS/conn")
	for j := 1; j < len(cmp.Contenders); j++ {
		ratio := func(f func(Measure) float64) string {
			var v []float64
			for _, row := range cmp.Rounds {
				if b := f(row[j]); b > 0 {
					v = append(v, f(row[0])/b)
				}
			}
			if len(v) == 0 {
				return "-"
			}
			med, lo, hi := spread(v)
			return fmt.Sprintf("%.3f (%.3f–%.3f)", med, lo, hi)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", cmp.Contenders[j].Name,
			ratio(func(m Measure) float64 { return m.PerSec }),
			ratio(func(m Measure) float64 { return float64(m.CPUPerMsg) }),
			ratio(func(m Measure) float64 { return float64(m.P50) }),
			ratio(func(m Measure) float64 { return float64(m.P99) }),
			ratio(func(m Measure) float64 { return m.RSSPerConn }))
	}
	_ = tw.Flush()
}
