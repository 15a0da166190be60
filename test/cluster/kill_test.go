package cluster

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ratethrottle/ratethrottle/pkg/subject"
)

// Dead-node reclaim in the node binary, which runs kvstore's defaults.
const (
	heartbeatInterval = time.Second // kvstore.Config.HeartbeatInterval default
	deadAfter         = 3           // kvstore.Config.DeadAfter default
	// reclaimBound is how soon after a SIGKILL the killed node's
	// concurrent-connection slots count no more on a live node: DeadAfter
	// heartbeat intervals for its last heartbeat to go stale, plus one
	// interval for the live node's heartbeat tick that purges the entries.
	reclaimBound = deadAfter*heartbeatInterval + heartbeatInterval
	// reclaimSlack is the scheduling tolerance on this shared 2-core
	// machine under -race (a WebSocket dial per probe, process start-up
	// noise).
	reclaimSlack = 500 * time.Millisecond
)

// admits dials addr as client and reports whether the node admitted the
// connection; an admitted connection is closed again at once.
func admits(t *testing.T, addr, client string) bool {
	t.Helper()
	c, err := dialClient(t, addr, client, nil)
	if err != nil {
		if !strings.Contains(err.Error(), "HTTP 429") {
			t.Fatalf("dial %s as %s: %v", addr, client, err)
		}
		return false
	}
	c.close()
	return true
}

// TestSIGKILLReturnsConnectionSlots kills a node process holding a
// client's two concurrent-connection slots (the cap) with SIGKILL: it
// cannot say goodbye, so only the heartbeats tell. Another node must admit
// the client again within reclaimBound, purge the dead node's entries from
// KV, and give back both slots, and its file descriptors return to their
// baseline once the clients leave.
func TestSIGKILLReturnsConnectionSlots(t *testing.T) {
	checkGoroutines(t)
	ns := startNATS(t)
	urls := []string{ns.ClientURL()}
	limits := []string{"--limits-max-concurrent-connections", "2", "--limits-connections-per-minute", "0", "--consistency", "global"}
	victim := startNode(t, "victim", urls, limits...)
	survivor := startNode(t, "survivor", urls, limits...)
	waitFor(t, 10*time.Second, "both nodes to see two live nodes", func() bool {
		return victim.metrics()["ratethrottle_live_nodes"] == 2 && survivor.metrics()["ratethrottle_live_nodes"] == 2
	})
	survivor.checkFDs()

	const client = "198.51.100.7"
	for range 2 {
		if _, err := dialClient(t, victim.Addr(), client, nil); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 5*time.Second, "the survivor to refuse a third connection", func() bool {
		return !admits(t, survivor.Addr(), client)
	})

	victim.kill()
	killed := time.Now()
	waitFor(t, reclaimBound+5*time.Second, "the survivor to admit the client again", func() bool {
		return admits(t, survivor.Addr(), client)
	})
	took := time.Since(killed)
	t.Logf("slots back %v after SIGKILL (bound %v + %v slack)", took.Round(time.Millisecond), reclaimBound, reclaimSlack)
	if took > reclaimBound+reclaimSlack {
		t.Errorf("slots returned %v after SIGKILL, bound %v + %v", took, reclaimBound, reclaimSlack)
	}
	if took < deadAfter*heartbeatInterval-heartbeatInterval {
		t.Errorf("slots returned after %v, before the victim could be dead (%d heartbeats)", took, deadAfter)
	}

	// The survivor purges the victim's count and heartbeat from KV.
	nc := dialNATS(t, urls...)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxFor(t, 30*time.Second)
	kv, err := js.KeyValue(ctx, "ratethrottle")
	if err != nil {
		t.Fatal(err)
	}
	victimTok := subject.Token("victim")
	waitFor(t, 2*heartbeatInterval+time.Second, "the victim's entries to be purged", func() bool {
		return countKeys(ctx, t, kv, "c.*."+victimTok)+countKeys(ctx, t, kv, "n."+victimTok) == 0
	})

	// Both slots are back: two connections, and no third.
	for range 2 {
		if _, err := dialClient(t, survivor.Addr(), client, nil); err != nil {
			t.Fatalf("slot not returned: %v", err)
		}
	}
	if admits(t, survivor.Addr(), client) {
		t.Error("the survivor admitted a third connection")
	}
}

// countKeys counts the keys of kv matching filter.
func countKeys(ctx context.Context, t *testing.T, kv jetstream.KeyValue, filter string) int {
	t.Helper()
	l, err := kv.ListKeysFiltered(ctx, filter)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for range l.Keys() {
		n++
	}
	return n
}
