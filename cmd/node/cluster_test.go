package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// admitted dials /ws on addr and joins a room: true if the node admits the
// connection, false if it refuses it with 1008 connection_rate_exceeded.
// An admitted connection is closed again.
func admitted(t *testing.T, addr string) bool {
	t.Helper()
	c, err := dialWS(t, addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.ws.Close()
	switch got := c.joinOutcome("probe"); got {
	case "joined":
		return true
	case "connection_rate_exceeded":
		return false
	default:
		t.Fatalf("join on %s: %s", addr, got)
		return false
	}
}

// TestBinaryCluster runs three node processes on one machine whose embedded
// NATS servers route to each other: one client's connection rate is limited
// across all three, and room messages reach members on every node.
func TestBinaryCluster(t *testing.T) {
	t.Parallel()
	ports := []int{freePort(t), freePort(t), freePort(t)}
	var routes []string
	for _, p := range ports {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
	}
	const perMinute = 6
	procs := make([]*proc, 3)
	for i := range procs {
		procs[i] = startProc(t, t.TempDir(), []string{"RATETHROTTLE_LIMITS_CONNECTIONS_PER_MINUTE=" + fmt.Sprint(perMinute)},
			"--node-id", fmt.Sprintf("node%d", i+1),
			"--listen", "127.0.0.1:0",
			"--ops-listen", "127.0.0.1:0",
			"--nats-listen", "127.0.0.1:0",
			"--cluster-listen", fmt.Sprintf("127.0.0.1:%d", ports[i]),
			"--routes", strings.Join(routes, ","),
			"--consistency-connections", "strict",
			"--limits-max-concurrent-connections", "0",
		)
	}
	t.Cleanup(func() {
		// Stop the nodes together, as a cluster is stopped: a node that
		// outlives the others' quorum waits for KV timeouts.
		var wg sync.WaitGroup
		for _, p := range procs {
			wg.Go(func() { _ = p.stop(t) })
		}
		wg.Wait()
	})
	for _, p := range procs {
		waitReady(t, p.addr, 60*time.Second)
	}

	// Room messages relay between members on different nodes.
	members := make([]*wsClient, 3)
	for i, p := range procs {
		c, err := dialWS(t, p.addr)
		if err != nil {
			t.Fatal(err)
		}
		c.join("town")
		members[i] = c
	}
	for from, c := range members {
		text := fmt.Sprintf("hello from node%d", from+1)
		if err := c.send(map[string]any{"type": "message", "room": "town", "data": map[string]any{"name": "m", "text": text}}); err != nil {
			t.Fatal(err)
		}
		for to, m := range members {
			f := m.expect(10*time.Second, func(f map[string]any) bool { return f["type"] == "message" })
			if d, _ := f["data"].(map[string]any); d["text"] != text {
				t.Errorf("member on node%d got %v, want %q", to+1, f, text)
			}
		}
	}

	// The three members took 3 of the client's 6 connections a minute;
	// round-robin dials admit exactly 3 more, whichever node they reach.
	admits := 3
	for i := range 9 {
		if admitted(t, procs[i%3].addr) {
			admits++
		}
	}
	if admits != perMinute {
		t.Errorf("%d connections admitted across three nodes, want %d", admits, perMinute)
	}

	// Cluster-wide statistics come from every node.
	var cs ClusterStats
	waitFor(t, 15*time.Second, "cluster stats from 3 nodes", func() bool {
		_, body := httpGet(t, "http://"+procs[0].ops+"/stats?scope=cluster")
		cs = ClusterStats{}
		return json.Unmarshal([]byte(body), &cs) == nil && len(cs.Nodes) == 3
	})
	if cs.Total.Violations["connection_rate"] == 0 {
		t.Errorf("cluster stats count no connection_rate violations: %+v", cs.Total)
	}
}
