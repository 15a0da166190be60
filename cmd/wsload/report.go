package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// formatRow formats one periodic reading on one line.
func formatRow(row Row) string {
	var b strings.Builder
	fmt.Fprintf(&b, "t=%v", row.Elapsed)
	for i, s := range row.Samples {
		if s.At.IsZero() {
			fmt.Fprintf(&b, " | node%d unreadable", i)
			continue
		}
		fmt.Fprintf(&b, " | node%d heap=%s stack=%s rss=%s goroutines=%.0f conns=%.0f", i,
			mib(s.Get("go_memstats_heap_inuse_bytes")), mib(s.Get("go_memstats_stack_inuse_bytes")),
			mib(s.Get("process_resident_memory_bytes")), s.Get("go_goroutines"), s.Get("ratethrottle_connections"))
	}
	return b.String()
}

func mib(v float64) string { return fmt.Sprintf("%.1fMiB", v/(1<<20)) }

func kib(v float64) string { return fmt.Sprintf("%.1f KiB", v/1024) }

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }

// WriteReport writes res as a human-readable report.
func WriteReport(w io.Writer, res *Result) {
	cfg := res.Config
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, f string, a ...any) { fmt.Fprintf(tw, "%s\t"+f+"\n", append([]any{k}, a...)...) }
	row("targets", "%d", len(cfg.Targets))
	row("connections", "%d established of %d (%d joined) in %v", res.Established, res.Attempted, res.Joined, res.ConnectTime.Round(time.Millisecond))
	if cfg.Rooms == 0 {
		row("rooms", "none: connections held idle")
	} else {
		row("rooms", "%d, %d sender(s) each, %.0f msg/s offered, %d-byte frames", cfg.Rooms, cfg.SendersPerRoom, cfg.Rate, cfg.Size)
	}
	row("send phase", "%v", res.SendTime.Round(time.Millisecond))
	row("sent", "%d (%.0f/s)", res.Sent, res.SentPerSec())
	ratio := 0.0
	if res.Expected > 0 {
		ratio = float64(res.Delivered) / float64(res.Expected)
	}
	row("delivered", "%d (%.0f/s during sending); %.4f of expected %d", res.Delivered, res.DeliveredPerSec(), ratio, res.Expected)
	h := res.Latency
	row("latency", "p50 %s  p99 %s  p999 %s  max %s  (%d samples)", ms(h.Quantile(0.5)), ms(h.Quantile(0.99)), ms(h.Quantile(0.999)), ms(h.Max()), h.Count())
	row("dial errors", "%s", formatCounts(res.DialErrors))
	row("closed by server", "%s", formatCounts(res.Closes))
	row("error frames", "%s", formatCounts(res.ErrorFrames))
	row("write errors", "%d", res.WriteErrors)
	for i, t := range res.Targets {
		name := fmt.Sprintf("node%d", i)
		if t.ScrapeErr != nil {
			row(name, "%s: metrics: %v", t.URL, t.ScrapeErr)
		}
		hs, rss, ok := t.MemPerConn()
		if !ok {
			row(name, "%s: %d connections; no memory reading", t.URL, t.Established)
			continue
		}
		row(name, "%s: %d connections; per connection heap+stack %s, RSS %s", t.URL, t.Established, kib(hs), kib(rss))
		for _, s := range []struct {
			k string
			v Sample
		}{{"before", t.Before}, {"connected", t.Connected}, {"after", t.After}} {
			if !s.v.At.IsZero() {
				row("", "%-9s %s", s.k, strings.TrimPrefix(formatRow(Row{Samples: []Sample{s.v}}), "t=0s | node0 "))
			}
		}
	}
	_ = tw.Flush()
	if len(res.Rows) > 0 {
		fmt.Fprintln(w, "\nsamples:")
		for _, r := range res.Rows {
			fmt.Fprintln(w, formatRow(r))
		}
	}
}

func formatCounts[K int | string](m map[K]int64) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%v: %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}
