package main

import (
	"strings"
	"testing"
)

func TestParseMetrics(t *testing.T) {
	t.Parallel()
	text := `# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines 42
go_memstats_heap_inuse_bytes 1.2345e+07
go_memstats_heap_inuse_bytes_total 1
process_resident_memory_bytes 3.3e+07 1700000000000
ratethrottle_connections{node="a"} 7
ratethrottle_connections 9
go_gc_duration_seconds{quantile="0.5"} 0.001
`
	got, err := parseMetrics(strings.NewReader(text), sampledMetrics)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{
		"go_goroutines":                 42,
		"go_memstats_heap_inuse_bytes":  12345000,
		"process_resident_memory_bytes": 33000000,
		"ratethrottle_connections":      9,
	}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	if _, err := parseMetrics(strings.NewReader("go_goroutines x\n"), sampledMetrics); err == nil {
		t.Error("a value that is not a number was accepted")
	}
}

func TestMemPerConn(t *testing.T) {
	t.Parallel()
	var tr TargetResult
	if _, _, ok := tr.MemPerConn(); ok {
		t.Fatal("no readings, yet ok")
	}
	tr = TargetResult{
		Established: 1000,
		Before:      sample(map[string]float64{"go_memstats_heap_inuse_bytes": 1e6, "go_memstats_stack_inuse_bytes": 5e5, "process_resident_memory_bytes": 2e7}),
		Connected:   sample(map[string]float64{"go_memstats_heap_inuse_bytes": 9e6, "go_memstats_stack_inuse_bytes": 8.5e6, "process_resident_memory_bytes": 4e7}),
	}
	hs, rss, ok := tr.MemPerConn()
	if !ok || hs != 16000 || rss != 20000 {
		t.Fatalf("MemPerConn = %v, %v, %v; want 16000, 20000, true", hs, rss, ok)
	}
}
