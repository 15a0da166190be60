package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The metrics a Sample keeps. They are the Go collector's and the
// process collector's, plus the node's connection gauge.
var sampledMetrics = []string{
	"go_memstats_heap_inuse_bytes",
	"go_memstats_stack_inuse_bytes",
	"process_cpu_seconds_total",
	"process_resident_memory_bytes",
	"go_goroutines",
	"ratethrottle_connections",
}

// Sample is the values of sampledMetrics read from one node at one time;
// a metric the node does not export is absent.
type Sample struct {
	// At is when the metrics were read; zero when the node was not read
	// (no metrics URL, or the scrape failed).
	At time.Time
	// Values maps metric names to their values.
	Values map[string]float64
}

// Get returns a metric's value, or zero when absent.
func (s Sample) Get(name string) float64 { return s.Values[name] }

// parseMetrics reads the Prometheus text format and returns the value of
// every series in want that has no labels. Comments, labelled series and
// other metrics are skipped.
func parseMetrics(r io.Reader, want []string) (map[string]float64, error) {
	wanted := make(map[string]bool, len(want))
	for _, w := range want {
		wanted[w] = true
	}
	out := make(map[string]float64)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest, ok := strings.Cut(line, " ")
		if !ok || !wanted[name] {
			continue
		}
		// A timestamp may follow the value.
		val, _, _ := strings.Cut(strings.TrimSpace(rest), " ")
		v, err := strconv.ParseFloat(val, 64)
		if err != nil {
			return nil, fmt.Errorf("metric %s: %w", name, err)
		}
		out[name] = v
	}
	return out, sc.Err()
}

// scrape reads url's metrics, within a 5-second bound.
func scrape(ctx context.Context, client *http.Client, url string) (Sample, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return Sample{}, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return Sample{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Sample{}, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	v, err := parseMetrics(io.LimitReader(resp.Body, 16<<20), sampledMetrics)
	if err != nil {
		return Sample{}, fmt.Errorf("GET %s: %w", url, err)
	}
	return Sample{At: time.Now(), Values: v}, nil
}
